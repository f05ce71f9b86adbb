"""Identity clustering (``faceaudit cluster``) of every extracted face, scored on the labelled ones.

The labelled faces, whose identity is known, are scored (pairwise and BCubed precision and
recall, and the identity count against the true one). Faces of unlabelled people in the
background take part, as in a real dataset, but are not scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.indexer.ann import VectorSearch
from faceaudit.models.calibration import Calibration
from faceaudit.research.clustering.agglomeration import (
    DEFAULT_MIN_LINK,
    agglomerate,
    number_by_size,
)
from faceaudit.research.clustering.cluster import DEFAULT_K, METHOD
from faceaudit.research.clustering.graph import knn_graph, neighbour_search
from faceaudit.research.clustering.threshold import (
    BASE_THRESHOLD,
    default_threshold,
    index_size_for,
)
from faceaudit.research.evaluation.dataset import Dataset, ExtractedFaces
from faceaudit.research.metrics.clustering import cluster_scores

# Clustering thresholds reported: from where lfw-dev's strangers start to chain people
# together to what an index of about 10^7 faces uses.
CLUSTER_SWEEP = np.round(np.arange(0.30, 0.60 + 1e-9, 0.025), 3)


@dataclass(frozen=True)
class ClusteringReport:
    """Identity clustering (``faceaudit cluster``) scored on the labelled faces.
    ``scores``: ``ClusterScores`` at ``threshold`` with its ``identities_error``;
    ``without_guard``: the same with the chaining guard off (connected components);
    ``sweep``: the scores per threshold, each with ``index_faces``, the index size whose
    default threshold it is (None below the base threshold, or uncalibrated)."""

    faces: int  # every face found, all clustered
    scored_faces: int  # the labelled ones, scored
    k: int
    min_link: float
    threshold: float
    method: str
    scores: dict[str, Any]
    without_guard: dict[str, Any]
    sweep: list[dict[str, Any]]


def _scores(true: NDArray[np.int64], predicted: NDArray[np.int64]) -> dict[str, Any]:
    scores = cluster_scores(true, predicted)
    return {**asdict(scores), "identities_error": scores.identities_error}


def cluster_quality(
    dataset: Dataset,
    extracted: Mapping[str, ExtractedFaces],
    *,
    threshold: float | None = None,
    calibration: Calibration | None = None,
    thresholds: Sequence[float] | NDArray[np.floating] = CLUSTER_SWEEP,
    k: int = DEFAULT_K,
    min_link: float = DEFAULT_MIN_LINK,
) -> ClusteringReport:
    """Cluster every extracted face and score the labelled ones. ``threshold`` defaults to
    what ``faceaudit cluster`` uses for an index of this many faces under ``calibration``
    (BASE_THRESHOLD without one)."""
    vectors: list[NDArray[np.float32]] = []
    labelled_rows: list[int] = []
    owners: list[int] = []
    for number, paths in enumerate(dataset.identities.values()):
        for path in paths:
            faces = extracted[path]
            if faces.labelled is not None:
                labelled_rows.append(len(vectors) + faces.labelled)
                owners.append(number)
            vectors.extend(faces.vectors)
    dimension = next((f.vectors.shape[1] for f in extracted.values() if len(f.vectors)), 1)
    matrix = (np.array(vectors, np.float32) if vectors
              else np.empty((0, dimension), np.float32))
    if threshold is None:
        threshold = (default_threshold(calibration, len(matrix)) if calibration
                     else BASE_THRESHOLD)
    sweep = sorted({float(t) for t in thresholds})
    search = neighbour_search(VectorSearch.in_memory(matrix))
    graph = knn_graph(matrix, k, min([threshold, *sweep]), search)
    rows, true = np.array(labelled_rows, np.int64), np.array(owners, np.int64)

    def scored(at: float, guard: float) -> dict[str, Any]:
        groups = agglomerate(graph.above(at), min_link=guard)
        return _scores(true, number_by_size(groups)[0][rows])

    return ClusteringReport(
        faces=len(matrix), scored_faces=len(rows), k=k, min_link=min_link,
        threshold=threshold, method=METHOD,
        scores=scored(threshold, min_link), without_guard=scored(threshold, 0.0),
        sweep=[{"threshold": t, "index_faces": (None if calibration is None else
                                                index_size_for(calibration, t)),
                **scored(t, min_link)} for t in sweep],
    )
