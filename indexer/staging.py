"""The staging folder of a build (``.INDEX.building``, beside the index it will replace): the
finished work of a scan, kept so that an interrupted build resumes, and everything the public
step ``build_from_embeddings`` needs to publish the index from it.

- ``build.json``: the settings the work was done with (models, detection, dataset, source,
  layout); a build with other settings starts the folder over.
- ``manifest-base.json``: the new index's manifest, less what publishing fills in.
- ``shards/NNNNNN/``: embedding shards (``faceaudit.indexer.shards``).
- ``selection.parquet`` and ``scan.json``: written when a scan is complete: every image of the
  new index by key, with the shard it is taken from (null: from the index being replaced); the
  source's coverage and what the scan did.

On shared storage, every host of a distributed build sees the same folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.merge import SELECTION_SCHEMA
from faceaudit.indexer.shards import check_shards
from faceaudit.indexer.store import MANIFEST

log = logging.getLogger(__name__)

BUILD_FILE = "build.json"
MANIFEST_BASE = "manifest-base.json"
SHARDS_DIR = "shards"
SELECTION_FILE = "selection.parquet"
SCAN_FILE = "scan.json"


class ScanNotFinished(FaceAuditError):
    code = "scan_not_finished"


@dataclass
class ScanRecord:
    """What a finished scan did (``scan.json``)."""

    coverage: dict[str, Any] = field(default_factory=dict)
    processed: int = 0
    reused_images: int = 0
    duplicates: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    # The manifest digest of the index the selection takes images from (None: it takes none).
    previous_manifest: str | None = None


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.building"


def write_json(path: Path, value: Any) -> None:
    """``value`` as JSON at ``path``, replaced atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(temporary, path)


def prepare_staging(staging: Path, settings: dict[str, Any], manifest_base: dict[str, Any],
                    fresh: bool) -> list[Path]:
    """The finished shards of an interrupted build made with the same ``settings`` (its
    selection, if any, is dropped: a new scan decides again); otherwise a clean folder."""
    build_file = staging / BUILD_FILE
    if staging.exists() and not fresh and build_file.is_file():
        try:
            previous = json.loads(build_file.read_text())
        except ValueError:
            previous = None
        if previous == settings:
            for name in (SELECTION_FILE, SCAN_FILE):
                (staging / name).unlink(missing_ok=True)
            write_json(staging / MANIFEST_BASE, manifest_base)
            return check_shards(staging / SHARDS_DIR)
        log.warning("discarding an interrupted build made with other settings: %s", staging)
    shutil.rmtree(staging, ignore_errors=True)
    (staging / SHARDS_DIR).mkdir(parents=True)
    write_json(build_file, settings)
    write_json(staging / MANIFEST_BASE, manifest_base)
    return []


def manifest_digest(index: Path) -> str | None:
    """SHA-256 of an index's manifest: which publication of the index a scan reused from."""
    try:
        return hashlib.sha256((index / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def finish_scan(staging: Path, selection: pa.Table, record: ScanRecord) -> None:
    """Record a complete scan: the selection first, the record (which marks it done) last."""
    temporary = staging / f".{SELECTION_FILE}.tmp"
    pq.write_table(selection.cast(SELECTION_SCHEMA), temporary, compression="zstd")
    os.replace(temporary, staging / SELECTION_FILE)
    write_json(staging / SCAN_FILE, asdict(record))


def finished_scan_base(staging: Path) -> dict[str, Any]:
    """The manifest base of a staging folder whose scan is complete (ScanNotFinished, saying
    what to run, otherwise)."""
    if not (staging / SCAN_FILE).is_file() or not (staging / SELECTION_FILE).is_file():
        raise ScanNotFinished(
            f"{staging} holds no finished scan (no {SCAN_FILE}): run `faceaudit index` to "
            "scan the source, which resumes from the shards already there.")
    base: dict[str, Any] = json.loads((staging / MANIFEST_BASE).read_text(encoding="utf-8"))
    return base


def read_scan(staging: Path) -> tuple[pa.Table, ScanRecord, dict[str, Any]]:
    """(selection, scan record, manifest base) of a staging folder whose scan is complete."""
    base = finished_scan_base(staging)
    record = ScanRecord(**json.loads((staging / SCAN_FILE).read_text(encoding="utf-8")))
    return pq.read_table(staging / SELECTION_FILE, schema=SELECTION_SCHEMA), record, base
