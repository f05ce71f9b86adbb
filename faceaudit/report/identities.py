"""Where the report's identities come from: the identities file `faceaudit cluster` saved
beside the index when it belongs to that very index, else a clustering made now; and the
clustering's measured error, quoted by every report."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from faceaudit.indexer.cluster import (
    IDENTITIES_METADATA,
    Clustering,
    Progress,
    cluster_index,
    identities_path,
)
from faceaudit.indexer.search import FaceIndex
from faceaudit.report.index_files import IndexFiles

log = logging.getLogger(__name__)

# The clustering's error as measured on a labelled dataset (`faceaudit eval` on lfw-dev), for
# the default threshold: e.g. {"dataset": ..., "identities_error": (found - true) / true,
# "bcubed_precision": ..., "bcubed_recall": ..., "bcubed_f1": ..., "pairwise_precision": ...,
# "pairwise_recall": ..., "source": "faceaudit eval ... (faceaudit x.y)"}. None: not measured.
CLUSTERING_ERROR: dict[str, Any] | None = None


def saved_clustering(index: IndexFiles) -> Clustering | None:
    """The identities `faceaudit cluster` wrote beside ``index`` (INDEX.identities.parquet),
    if they are of this index: the same build and the same face ids, row for row."""
    path = identities_path(index.folder)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path, columns=["face_id", "identity"])
        about = json.loads((table.schema.metadata or {})[IDENTITIES_METADATA])
    except (OSError, ValueError, KeyError) as error:
        log.warning("not using %s: %s", path, error)
        return None
    face_ids = table.column("face_id").to_numpy()
    if (about.get("index_created") != index.manifest.get("created")
            or not np.array_equal(face_ids, np.asarray(index.faces.face_id))):
        log.info("%s is of another build of %s: clustering again", path, index.folder)
        return None
    labels = table.column("identity").to_numpy().astype(np.int64)
    sizes = np.bincount(labels) if len(labels) else np.empty(0, np.int64)
    return Clustering(labels=labels, identities=int(np.count_nonzero(sizes)), sizes=sizes,
                      threshold=float(about["threshold"]), method=str(about["method"]),
                      k=int(about["k"]), min_link=float(about["min_link"]),
                      edges=int(about.get("edges", 0)), seconds=0.0)


def identities_of(index: IndexFiles, progress: Progress | None = None
                  ) -> tuple[Clustering, str]:
    """The saved identities of ``index`` when they are its own, else ``cluster_index``'s
    (``progress(done, total)`` as it goes); and which (for the report)."""
    saved = saved_clustering(index)
    if saved is not None:
        return saved, f"saved by `faceaudit cluster` in {identities_path(index.folder).name}"
    return (cluster_index(FaceIndex(index.folder), progress=progress),
            "clustered for this report")


def identities_error() -> dict[str, Any]:
    """The clustering's measured error, quoted with where it was measured."""
    if CLUSTERING_ERROR is None:
        return {"measured": False, "source": "not measured yet: `faceaudit eval` on a "
                "labelled dataset measures it; record it in "
                "faceaudit.report.identities.CLUSTERING_ERROR"}
    return {"measured": True, **CLUSTERING_ERROR}
