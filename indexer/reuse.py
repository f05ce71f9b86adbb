"""What a build may reuse instead of decoding and embedding again: the images of the index it
replaces, known by key and SHA-256 of their bytes.

Held as one sorted array of 16-byte digests of (key, SHA-256), not a dict of Python strings:
about 16 bytes per image instead of ~150, and a single buffer that Ray shares between the
workers of a host.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.store import (
    FACES_DIR,
    IMAGES_FILE,
    SMALL_FACES_DIR,
    BoxTable,
    FaceTable,
    read_manifest,
)
from faceaudit.models.engine import FaceEngine

log = logging.getLogger(__name__)

PREVIOUS = "previous"  # where a reused image is taken from: the index being replaced
_BATCH = 65_536


def image_digest(key: str, sha256: str) -> bytes:
    return hashlib.blake2b(f"{key}\0{sha256}".encode(), digest_size=16).digest()


class KnownImages:
    """Images an earlier build holds, by (key, SHA-256); those marked for retry excluded."""

    def __init__(self, digests: NDArray[np.bytes_], total: int) -> None:
        self.digests = digests  # sorted, dtype S16
        self.total = total  # every image of the index, retried ones included

    @classmethod
    def from_table(cls, images: pa.Table) -> KnownImages:
        """From the ``key``, ``sha256`` and ``retry`` columns of an images table."""
        usable = images.filter(pc.and_(pc.is_valid(images.column("sha256")),
                                       pc.invert(pc.fill_null(images.column("retry"), False))))
        digests = np.empty(usable.num_rows, "S16")
        done = 0
        for batch in usable.select(["key", "sha256"]).to_batches(max_chunksize=_BATCH):
            keys, shas = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            digests[done:done + len(keys)] = [image_digest(k, s)
                                              for k, s in zip(keys, shas, strict=True)]
            done += len(keys)
        digests.sort()
        return cls(digests, images.num_rows)

    def __contains__(self, key_and_sha: tuple[str, str]) -> bool:
        digest = np.array(image_digest(*key_and_sha), "S16")
        position = int(np.searchsorted(self.digests, digest))
        return position < len(self.digests) and self.digests[position] == digest

    def __len__(self) -> int:
        return len(self.digests)


def previous_index(out: Path, engine: FaceEngine, dataset: str) -> KnownImages | None:
    """The images of the index at ``out`` that a new build may reuse: None if there is none,
    or it was made with other models, detection settings or dataset name, or cannot be read."""
    if not out.exists():
        return None
    try:
        manifest = read_manifest(out)
        FaceTable.load(out / FACES_DIR, mmap=True)  # every table readable, or nothing reused
        BoxTable.load(out / SMALL_FACES_DIR, mmap=True)
        images = pq.read_table(out / IMAGES_FILE, columns=["key", "sha256", "retry"])
    except (FaceAuditError, OSError, RuntimeError, ValueError, pa.ArrowException) as error:
        log.warning("not reusing the index at %s: %s", out, error)
        return None
    built = {name: f["sha256"] for name, f in manifest["model_pack"]["files"].items()}
    if (built != engine.sha256 or manifest.get("detection") != engine.detection.as_dict()
            or manifest.get("dataset", {}).get("name") != dataset):
        log.info("the index at %s was built with other settings: rebuilding every image", out)
        return None
    return KnownImages.from_table(images)
