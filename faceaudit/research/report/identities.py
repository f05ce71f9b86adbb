"""Where the report's identities come from: the identities file `faceaudit cluster` saved
beside the index when it belongs to that very index, else a clustering made now; and the
clustering's measured error, quoted by every report."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from faceaudit.indexer.search import FaceIndex
from faceaudit.research.clustering.cluster import Clustering, cluster_index
from faceaudit.research.clustering.graph import Progress
from faceaudit.research.clustering.identities_file import IDENTITIES_METADATA, identities_path
from faceaudit.research.report.index_files import IndexFiles

log = logging.getLogger(__name__)

# The clustering's error measured on lfw-dev (4,435 faces, 3,769 of them labelled, 1,786
# people), one row per clustering threshold: `faceaudit eval ../shared/data/lfw-dev --pairs
# pairs_A-F.txt --json`, its "clustering" sweep (faceaudit 2026-11-23). A report quotes the
# row of the highest threshold not above its own (thresholds rise with the index's size: the
# count is then an overestimate, people split rather than merged). Empty: not measured.
_LFW = "faceaudit eval lfw-dev --pairs pairs_A-F.txt (4,435 faces, 1,786 people)"
CLUSTERING_ERRORS: tuple[dict[str, Any], ...] = tuple(
    {"dataset": "lfw-dev", "threshold": t, "identities_error": e, "pairwise_precision": pp,
     "pairwise_recall": pr, "bcubed_precision": bp, "bcubed_recall": br, "bcubed_f1": bf,
     "source": _LFW}
    for t, e, pp, pr, bp, br, bf in (
        (0.375, 0.0062, 0.9979, 0.9992, 0.9974, 0.9942, 0.9958),
        (0.45, 0.0230, 0.9996, 0.9960, 0.9982, 0.9834, 0.9907),
        (0.50, 0.0487, 0.9996, 0.9898, 0.9984, 0.9647, 0.9813),
        (0.55, 0.1176, 0.9996, 0.9789, 0.9984, 0.9238, 0.9597),
        (0.575, 0.1646, 0.9996, 0.9735, 0.9984, 0.8975, 0.9453),
    )
)


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


def identities_error(threshold: float) -> dict[str, Any]:
    """The clustering's measured error at ``threshold`` (the measured row of the highest
    threshold not above it), quoted with where it was measured."""
    if not CLUSTERING_ERRORS:
        return {"measured": False, "source": "not measured yet: `faceaudit eval` on a "
                "labelled dataset measures it; record it in "
                "faceaudit.research.report.identities.CLUSTERING_ERRORS"}
    rows = sorted(CLUSTERING_ERRORS, key=lambda row: row["threshold"])
    row = next((r for r in reversed(rows) if r["threshold"] <= threshold + 1e-9), rows[0])
    return {"measured": True, **row}
