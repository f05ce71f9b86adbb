"""What every peer extractor shares: the image list, the timed loop and the .npz it writes.

Imports only numpy and the standard library, so that it runs inside each peer's own environment
(faceaudit is not installed there). A peer script supplies a loader that returns an
``Extractor``; ``main`` parses the flags, times ``extract`` over every image and writes the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger("peers")

# The same files faceaudit.indexer.scan picks, so that both produce the same relative paths.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
)
PROGRESS_EVERY = 500


class UnreadableImage(Exception):
    """The peer's own decoder could not read the file."""


@dataclass(frozen=True)
class Faces:
    """The faces of one image as the peer returns them.

    ``boxes`` are x1, y1, x2, y2 in the pixels of the decoded image, whose size is
    ``width`` x ``height``; ``vectors`` are the raw embeddings (normalised later, in one place).
    """

    boxes: NDArray[np.float32]
    vectors: NDArray[np.float32]
    width: int
    height: int


@dataclass(frozen=True)
class Extractor:
    """A loaded peer: ``extract`` decodes, detects and embeds one image file."""

    peer: str
    dim: int
    metric_note: str
    versions: str
    extract: Callable[[Path], Faces]
    keep_raw_vectors: bool = False  # also store the unnormalised vectors as raw_vectors


@dataclass
class Results:
    paths: list[str]
    faces: list[Faces] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def list_images(root: Path, limit: int | None = None) -> list[str]:
    """Sorted POSIX paths, relative to ``root``, of the image files below it (hidden skipped)."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            found.append(Path(folder, name).relative_to(root).as_posix())
    found.sort()
    return found[:limit] if limit is not None else found


def empty_faces(dim: int, width: int = 0, height: int = 0) -> Faces:
    return Faces(np.zeros((0, 4), np.float32), np.zeros((0, dim), np.float32), width, height)


def stack_faces(boxes: Iterable, vectors: Iterable, dim: int, width: int, height: int) -> Faces:
    """``Faces`` from per-face sequences (possibly empty)."""
    box_rows = [np.asarray(b, np.float32).reshape(4) for b in boxes]
    vec_rows = [np.asarray(v, np.float32).reshape(dim) for v in vectors]
    if len(box_rows) != len(vec_rows):
        raise ValueError(f"{len(box_rows)} boxes but {len(vec_rows)} vectors")
    if not box_rows:
        return empty_faces(dim, width, height)
    return Faces(np.stack(box_rows), np.stack(vec_rows), width, height)


def extract_all(extractor: Extractor, root: Path, paths: list[str]) -> Results:
    """Run ``extractor`` over ``paths`` one image at a time; time decoding+detection+embedding.

    The first image is processed once before the clock starts, so that lazily created sessions
    (model load) are not counted; its result is discarded and it is processed again, timed.
    """
    results = Results(paths=paths)
    if paths:
        try:
            extractor.extract(root / paths[0])
        except UnreadableImage:
            pass
    start = time.perf_counter()
    for i, rel in enumerate(paths, 1):
        try:
            faces = extractor.extract(root / rel)
        except UnreadableImage as error:
            logger.warning("%s: %s", rel, error)
            results.failed.append(rel)
            faces = empty_faces(extractor.dim)
        results.faces.append(faces)
        if i % PROGRESS_EVERY == 0:
            elapsed = time.perf_counter() - start
            logger.info("%d/%d images, %.1f images/s", i, len(paths), i / elapsed)
    results.seconds = time.perf_counter() - start
    return results


def l2_normalise(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def write_npz(out: Path, extractor: Extractor, results: Results) -> None:
    """Write the results as one .npz (atomically: a temporary file renamed into place)."""
    counts = [len(f.boxes) for f in results.faces]
    offsets = np.zeros(len(counts) + 1, np.int64)
    offsets[1:] = np.cumsum(counts)
    dim = extractor.dim
    raw = (np.concatenate([f.vectors for f in results.faces]) if results.faces
           else np.zeros((0, dim), np.float32)).astype(np.float32)
    arrays: dict[str, object] = {
        "paths": np.array(results.paths, dtype=str),
        "offsets": offsets,
        "boxes": (np.concatenate([f.boxes for f in results.faces]) if results.faces
                  else np.zeros((0, 4), np.float32)).astype(np.float32),
        "vectors": l2_normalise(raw),
        "widths": np.array([f.width for f in results.faces], np.int32),
        "heights": np.array([f.height for f in results.faces], np.int32),
        "seconds": np.float64(results.seconds),
        "peer": np.str_(extractor.peer),
        "metric_note": np.str_(extractor.metric_note),
        "versions": np.str_(extractor.versions),
        "failed": np.array(results.failed, dtype=str),
    }
    if extractor.keep_raw_vectors:
        arrays["raw_vectors"] = raw
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, out)


def main(description: str, load: Callable[[], Extractor], argv: list[str] | None = None) -> int:
    """The command line every peer script shares: DATASET_DIR --out FILE.npz [--limit N]."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("dataset", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help=".npz file to write")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    if not args.dataset.is_dir():
        parser.error(f"{args.dataset} is not a folder")
    paths = list_images(args.dataset, args.limit)
    if not paths:
        parser.error(f"no images under {args.dataset}")
    load_start = time.perf_counter()
    extractor = load()
    logger.info("%s loaded in %.1f s (%s)", extractor.peer, time.perf_counter() - load_start,
                extractor.versions)
    results = extract_all(extractor, args.dataset, paths)
    write_npz(args.out, extractor, results)
    n_faces = sum(len(f.boxes) for f in results.faces)
    no_face = sum(1 for f in results.faces if len(f.boxes) == 0)
    logger.info(
        "%s: %d images, %d faces (d=%d), %d with no face, %d unreadable, %.1f s, "
        "%.2f images/s -> %s",
        extractor.peer, len(paths), n_faces, extractor.dim, no_face, len(results.failed),
        results.seconds, len(paths) / max(results.seconds, 1e-9), args.out,
    )
    return 0
