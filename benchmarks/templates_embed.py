"""Every face of lfw-dev embedded once, with what template fusion may weigh it by; cached.

Used by ``benchmarks/templates.py``. Each photo goes through faceaudit's engine as ``index``
and ``search`` run it (decode at the engine's ``decode_max_side``, ``detect`` with its
``min_face``, ArcFace alignment), and every face is embedded three ways in one recognizer
batch: plain (what an index stores), with its mirror image (what a selfie is searched with:
``FaceEngine.embed(..., flip=True)``), and the recognizer's raw output norm before
normalisation, which the engine does not expose (``embed_crops`` normalises inside): it is
read here from the engine's private recognizer, for measurement only.

The cache (``benchmarks/.cache/templates-<sha>.npz``, git-ignored) holds float32 vectors and
per-face metadata: photo, identity, detection score, box, raw norms.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.imaging import decode_image
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import resolve_pack
from faceaudit.research.evaluation.dataset import load_dataset

CACHE = Path(__file__).parent / ".cache"


@dataclass(frozen=True)
class Faces:
    """Row f: one face. ``photo[f]`` indexes ``paths``/``identity_of_photo``."""

    plain: NDArray[np.float32]  # (F, d) L2-normalised, as the index stores faces
    mirror: NDArray[np.float32]  # (F, d) as a selfie is embedded (mean with its mirror)
    raw_norm: NDArray[np.float32]  # (F,) recognizer output norm before normalisation
    raw_norm_mirror: NDArray[np.float32]  # (F,) same, of the mirrored crop
    det_score: NDArray[np.float32]  # (F,)
    box: NDArray[np.float32]  # (F, 4) x1 y1 x2 y2
    photo: NDArray[np.int64]  # (F,)
    labelled: NDArray[np.bool_]  # (F,) the face nearest the photo centre (LFW's label)
    paths: list[str]
    identity_of_photo: NDArray[np.int64]  # (P,)
    names: list[str]
    faces_in_photo: NDArray[np.int64]  # (P,)

    @property
    def short_side(self) -> NDArray[np.float32]:
        return np.minimum(self.box[:, 2] - self.box[:, 0], self.box[:, 3] - self.box[:, 1])


def _labelled(boxes: NDArray[np.float32], width: int, height: int) -> int:
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    offsets = centres - np.array([width / 2, height / 2], np.float32)
    return int(np.argmin((offsets**2).sum(axis=1)))


def embed_dataset(root: Path, engine: FaceEngine) -> dict[str, np.ndarray]:
    dataset = load_dataset(root.resolve())
    names = list(dataset.identities)
    columns: dict[str, list] = {k: [] for k in (
        "plain", "mirror", "raw_norm", "raw_norm_mirror", "det_score", "box", "photo",
        "labelled")}
    paths: list[str] = []
    identity: list[int] = []
    counts: list[int] = []
    recognizer = engine._recognizer  # noqa: SLF001 - the raw norm is not public
    started = time.perf_counter()
    for number, images in enumerate(dataset.identities.values()):
        for path in images:
            image = decode_image(dataset.root / path,
                                 max_side=engine.detection.decode_max_side)
            faces = engine.detect(image)
            photo = len(paths)
            paths.append(path)
            identity.append(number)
            counts.append(len(faces))
            if not faces:
                continue
            crops = engine.align(image, faces)
            raw = recognizer.get_feat(crops + [np.ascontiguousarray(c[:, ::-1]) for c in crops])
            raw = np.asarray(raw, np.float32)
            norms = np.linalg.norm(raw, axis=1)
            unit = raw / (norms[:, None] + 1e-12)
            n = len(faces)
            mean = unit[:n] + unit[n:]
            boxes = np.array([f.bbox for f in faces], np.float32)
            label = _labelled(boxes, image.width, image.height)
            columns["plain"].append(unit[:n])
            columns["mirror"].append(mean / (np.linalg.norm(mean, axis=1, keepdims=True)
                                             + 1e-12))
            columns["raw_norm"].append(norms[:n])
            columns["raw_norm_mirror"].append(norms[n:])
            columns["det_score"].append(np.array([f.score for f in faces], np.float32))
            columns["box"].append(boxes)
            columns["photo"].append(np.full(n, photo, np.int64))
            columns["labelled"].append(np.arange(n) == label)
        if number % 200 == 0:
            print(f"  {len(paths)} photos, {time.perf_counter() - started:.0f} s", flush=True)
    arrays = {k: np.concatenate(v).astype(np.float32 if k not in ("photo", "labelled")
                                          else (np.int64 if k == "photo" else bool))
              for k, v in columns.items()}
    arrays.update(paths=np.array(paths), identity_of_photo=np.array(identity, np.int64),
                  names=np.array(names), faces_in_photo=np.array(counts, np.int64))
    return arrays


def _check_against_engine(root: Path, engine: FaceEngine, faces: Faces, photos: int = 5) -> None:
    """The cached vectors are those the engine's public methods give (first few photos)."""
    for photo in range(photos):
        rows = np.flatnonzero(faces.photo == photo)
        if not len(rows):
            continue
        image = decode_image(root / faces.paths[photo], max_side=engine.detection.decode_max_side)
        detected = engine.detect(image)
        plain, mirror = engine.embed_with_mirror(image, detected)
        if not (np.allclose(plain, faces.plain[rows], atol=1e-5)
                and np.allclose(mirror, faces.mirror[rows], atol=1e-5)):
            raise RuntimeError(f"cached embeddings of {faces.paths[photo]} differ from the "
                               "engine's: delete benchmarks/.cache/templates-*.npz")


def load_faces(root: Path, *, threads: int = 1) -> Faces:
    """The cached faces of ``root`` (embedded on first use: minutes on one core)."""
    engine = FaceEngine(resolve_pack(None), device="cpu", threads=threads)
    key = engine.sha256[engine.pack.recognizer.path.name][:12]
    settings = json.dumps(engine.detection.as_dict(), sort_keys=True)
    path = CACHE / f"templates-{engine.pack.name}-{key}.npz"
    if path.is_file():
        data = dict(np.load(path, allow_pickle=False))
        if str(data.pop("settings")) != settings or str(data.pop("root")) != str(root.resolve()):
            path.unlink()
            return load_faces(root, threads=threads)
    else:
        print(f"embedding every photo of {root} once (cache: {path})", flush=True)
        data = embed_dataset(root, engine)
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        stored: dict[str, Any] = {**data, "settings": np.array(settings),
                                  "root": np.array(str(root.resolve()))}
        np.savez(partial, **stored)
        partial.rename(path)
    faces = Faces(
        plain=data["plain"], mirror=data["mirror"], raw_norm=data["raw_norm"],
        raw_norm_mirror=data["raw_norm_mirror"], det_score=data["det_score"], box=data["box"],
        photo=data["photo"], labelled=data["labelled"].astype(bool),
        paths=[str(p) for p in data["paths"]], identity_of_photo=data["identity_of_photo"],
        names=[str(n) for n in data["names"]], faces_in_photo=data["faces_in_photo"])
    _check_against_engine(root.resolve(), engine, faces)
    return faces


if __name__ == "__main__":
    import sys

    loaded = load_faces(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/lfw-dev"))
    print(len(loaded.paths), "photos,", len(loaded.plain), "faces")
