"""The evaluation set: images by identity, and the faces extracted from each image.

Extraction is pluggable: ``run_eval`` takes ``ExtractedFaces`` per image, so any detector and
embedder with L2-normalised vectors goes through the same protocol; ``extract_with_engine``
builds them with the exact pipeline that ``faceaudit index`` runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.pipeline import process_images
from faceaudit.indexer.readers.folder import scan_folder
from faceaudit.indexer.stage_times import StageTimes
from faceaudit.indexer.store import STATUS_FAILED
from faceaudit.models.engine import FaceEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """Images by identity: ``identities[name]`` are the sorted paths (relative to ``root``)."""

    root: Path
    identities: dict[str, tuple[str, ...]]

    @property
    def paths(self) -> list[str]:
        return sorted(path for paths in self.identities.values() for path in paths)


def load_dataset(root: Path) -> Dataset:
    """Every image under ``root``, its identity being its folder (relative to ``root``).
    Images directly in ``root`` have no identity and are left out."""
    if not root.is_dir():
        raise FaceAuditError(f"Dataset folder {root} does not exist or is not a folder.")
    identities: dict[str, list[str]] = {}
    loose = 0
    for path, _ in scan_folder(root):
        folder = Path(path).parent.as_posix()
        if folder == ".":
            loose += 1
            continue
        identities.setdefault(folder, []).append(path)
    if loose:
        log.warning("%d images directly in %s have no identity folder: left out", loose, root)
    if not identities:
        raise FaceAuditError(f"{root} has no identity folders with images (expected "
                             "Name/Name_0001.jpg, as LFW).")
    return Dataset(root, {name: tuple(sorted(paths)) for name, paths in sorted(identities.items())})


@dataclass(frozen=True)
class ExtractedFaces:
    """The faces found in one image by some extractor: boxes (n, 4) as x1, y1, x2, y2 in
    pixels of the upright photo, L2-normalised vectors (n, d), the photo's size, and the error
    when the image could not be processed (then n = 0)."""

    boxes: NDArray[np.float32]
    vectors: NDArray[np.float32]
    width: int
    height: int
    error: str | None = None
    query_vectors: NDArray[np.float32] | None = None  # as the image is embedded as a selfie

    @property
    def labelled(self) -> int | None:
        """Index of the face whose box centre is nearest the image centre (LFW's label)."""
        if len(self.boxes) == 0:
            return None
        centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2
        offsets = centres - np.array([self.width / 2, self.height / 2], np.float32)
        return int(np.argmin((offsets**2).sum(axis=1)))


def extract_with_engine(
    engine: FaceEngine,
    dataset: Dataset,
    *,
    workers: int = 2,
    times: StageTimes | None = None,
    progress: Callable[[int, int], None] | None = None,
    embed_selfies: bool = True,
) -> dict[str, ExtractedFaces]:
    """Every image of ``dataset`` through ``process_images``, the pipeline of ``index``; every
    image is also embedded as ``search`` embeds a selfie, since any one-face photo may serve
    as one of a template's selfies (unless ``embed_selfies`` is false: then only what
    ``index`` computes)."""
    paths = dataset.paths
    selfies = set(paths) if embed_selfies else set()
    extracted: dict[str, ExtractedFaces] = {}
    for done, item in enumerate(
        process_images(engine, dataset.root, paths, workers=workers, times=times,
                       query_paths=selfies), start=1
    ):
        record = item.record
        boxes = np.array([face.bbox for face in item.faces], np.float32).reshape(-1, 4)
        error = record.error if record.status == STATUS_FAILED else None
        extracted[record.path] = ExtractedFaces(boxes, item.vectors, record.width or 0,
                                                record.height or 0, error, item.query_vectors)
        if progress:
            progress(done, len(paths))
    return extracted


def labelled_vector(faces: ExtractedFaces) -> NDArray[np.float32] | None:
    """The labelled face's vector, as any photo is embedded; None without a face."""
    index = faces.labelled
    return None if index is None else faces.vectors[index]


def selfie_vector(faces: ExtractedFaces) -> NDArray[np.float32] | None:
    """The labelled face as a selfie is embedded (``query_vectors`` when the extractor gives
    them: faceaudit embeds selfies with their mirror image), else as any photo is."""
    index = faces.labelled
    if index is None:
        return None
    return (faces.query_vectors if faces.query_vectors is not None else faces.vectors)[index]
