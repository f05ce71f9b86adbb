"""The identities file ``faceaudit cluster`` writes beside an index: where, what, and how."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.search import FaceIndex
from faceaudit.research.clustering.cluster import Clustering

IDENTITIES_SUFFIX = ".identities.parquet"
IDENTITIES_METADATA = b"faceaudit.clustering"


def identities_path(index_dir: Path) -> Path:
    """Where ``faceaudit cluster`` writes an index's identities by default: beside the index
    folder (``INDEX.identities.parquet``), never inside it, which publishing replaces whole."""
    resolved = index_dir.resolve()
    return resolved.with_name(resolved.name + IDENTITIES_SUFFIX)


def describe(clustering: Clustering, index: FaceIndex) -> dict[str, Any]:
    """What a clustering is and what it was made of (counts only, never who)."""
    return {
        "dataset": index.dataset, "index": str(index.folder),
        "index_created": index.manifest.get("created"), "faces": clustering.faces,
        "identities": clustering.identities, "singletons": clustering.singletons,
        "threshold": clustering.threshold, "method": clustering.method, "k": clustering.k,
        "min_link": clustering.min_link, "edges": clustering.edges,
        "seconds": round(clustering.seconds, 3),
    }


def check_outside_index(out: Path, index_dir: Path) -> Path:
    """``out`` resolved; FaceAuditError when it is inside the index folder."""
    target, folder = out.resolve(), index_dir.resolve()
    if target == folder or folder in target.parents:
        raise FaceAuditError(
            f"{out} is inside the index folder {index_dir}, which is published whole and "
            f"never modified in place: write the identities beside it, e.g. "
            f"{identities_path(index_dir)}.")
    return target


def write_identities(clustering: Clustering, index: FaceIndex, out: Path) -> None:
    """Parquet, one row per face: its stable ``face_id`` and its ``identity`` (0 the largest);
    what it was made of in the file's metadata. Written beside ``out`` and renamed into place;
    refused inside the index folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = check_outside_index(out, index.folder)
    table = pa.table({"face_id": pa.array(np.asarray(index.faces.face_id), pa.int64()),
                      "identity": pa.array(clustering.labels, pa.int64())})
    table = table.replace_schema_metadata(
        {IDENTITIES_METADATA: json.dumps(describe(clustering, index)).encode()})
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, staged, compression="zstd")
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
