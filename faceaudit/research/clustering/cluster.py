"""Cluster a published index, or a set of vectors, by identity: graph, then agglomeration."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from faceaudit.indexer.ann import VectorSearch
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.calibration import Calibration
from faceaudit.research.clustering.agglomeration import (
    DEFAULT_MIN_LINK,
    agglomerate,
    number_by_size,
)
from faceaudit.research.clustering.graph import (
    NeighbourSearch,
    Progress,
    knn_graph,
    neighbour_search,
)
from faceaudit.research.clustering.threshold import default_threshold, index_calibration

# Neighbours per face in the graph.
DEFAULT_K = 16
METHOD = "knn-graph guarded agglomeration"


@dataclass(frozen=True)
class Clustering:
    """``labels[i]``: the identity of face row i, numbered 0..identities-1 by decreasing
    size (ties: the lowest face row first); a face alone is an identity of its own."""

    labels: NDArray[np.int64]
    identities: int
    sizes: NDArray[np.int64]  # faces per identity, sizes[label]
    threshold: float
    method: str
    k: int
    min_link: float
    edges: int  # graph edges above the threshold
    seconds: float

    @property
    def faces(self) -> int:
        return len(self.labels)

    @property
    def singletons(self) -> int:
        return int(np.count_nonzero(self.sizes == 1))

    def largest(self, count: int = 10) -> list[int]:
        """Face counts of the ``count`` largest identities (never who they are)."""
        return [int(size) for size in self.sizes[:count]]


def cluster_vectors(vectors: NDArray[np.floating], threshold: float, k: int = DEFAULT_K, *,
                    min_link: float = DEFAULT_MIN_LINK, search: NeighbourSearch | None = None,
                    progress: Progress | None = None) -> NDArray[np.int64]:
    """Identity labels (0..n-1, by decreasing size) of L2-normalised ``vectors``.
    ``search``: the neighbour search over them (default: an exact one built here)."""
    if search is None:
        search = neighbour_search(VectorSearch.in_memory(vectors))
    graph = knn_graph(vectors, k, threshold, search, progress=progress)
    return number_by_size(agglomerate(graph, min_link=min_link))[0]


def cluster_index(index: FaceIndex, *, threshold: float | None = None, k: int = DEFAULT_K,
                  min_link: float = DEFAULT_MIN_LINK, calibration: Calibration | None = None,
                  progress: Progress | None = None) -> Clustering:
    """Group the faces of a published index by identity. ``threshold``
    defaults to ``default_threshold`` for the index's size under ``calibration`` (default:
    the calibration of the model pack that built the index)."""
    started = time.perf_counter()
    if threshold is None:
        threshold = default_threshold(calibration or index_calibration(index), index.size)
    graph = knn_graph(index.vectors, k, threshold, neighbour_search(index.vector_search),
                      progress=progress)
    labels, sizes = number_by_size(agglomerate(graph, min_link=min_link))
    return Clustering(labels=labels, identities=len(sizes), sizes=sizes, threshold=threshold,
                      method=METHOD, k=k, min_link=min_link, edges=len(graph.score),
                      seconds=time.perf_counter() - started)
