"""The k-NN graph of a set of faces: each face's nearest faces above a threshold, as edges.

Every face's ``k`` nearest faces (``VectorSearch.knn``, the index's own machinery, in
batches); an edge joins two faces when their similarity is above ``threshold``. Edges are
int32 pairs, each once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

# Faces searched for neighbours at a time (memory: QUERY_CHUNK x k scores and rows).
QUERY_CHUNK = 16_384

Progress = Callable[[int, int], None]


class NeighbourSearch(Protocol):
    """What the graph needs from a vector index: ``knn(queries (m, d) float32, k)`` ->
    (scores (m, k), rows (m, k)), rows -1 where there is no neighbour."""

    def knn(self, queries: NDArray[np.float32], k: int
            ) -> tuple[NDArray[np.float32], NDArray[np.int64]]: ...


@dataclass(frozen=True)
class Graph:
    """Undirected edges ``left[e] < right[e]`` (face rows), each once, with their similarity."""

    faces: int
    left: NDArray[np.int32]
    right: NDArray[np.int32]
    score: NDArray[np.float32]

    def above(self, threshold: float) -> Graph:
        keep = self.score > threshold
        return Graph(self.faces, self.left[keep], self.right[keep], self.score[keep])


class _FaissSearch:
    """``knn`` over a FAISS index (exact inner product): the stand-in for indexes whose
    VectorSearch has no ``knn`` of its own."""

    def __init__(self, index: object) -> None:
        self.index = index

    def knn(self, queries: NDArray[np.float32], k: int
            ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        scores, rows = self.index.search(queries, k)  # type: ignore[attr-defined]
        return scores, rows.astype(np.int64, copy=False)


def neighbour_search(vector_search: object) -> NeighbourSearch:
    """``vector_search`` itself when it offers ``knn``, else its FAISS index searched
    directly."""
    if hasattr(vector_search, "knn"):
        return vector_search  # type: ignore[return-value]
    return _FaissSearch(vector_search.index)  # type: ignore[attr-defined]


def knn_graph(vectors: NDArray[np.floating], k: int, threshold: float,
              search: NeighbourSearch, *, progress: Progress | None = None,
              chunk: int = QUERY_CHUNK) -> Graph:
    """The edges between each face (row of ``vectors``, read a chunk at a time, so a memory
    map is never loaded whole) and its ``k`` nearest faces scoring above ``threshold``."""
    count = len(vectors)
    lefts, rights, scores = [], [], []
    for start in range(0, count, chunk):
        queries = np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32)
        found_scores, found_rows = search.knn(queries, min(k + 1, count))
        origin = np.arange(start, start + len(queries), dtype=np.int64)[:, None]
        keep = (found_rows >= 0) & (found_rows != origin) & (found_scores > threshold)
        left = np.broadcast_to(origin, found_rows.shape)[keep]
        right = found_rows[keep]
        lefts.append(np.minimum(left, right).astype(np.int32))
        rights.append(np.maximum(left, right).astype(np.int32))
        scores.append(found_scores[keep].astype(np.float32))
        if progress:
            progress(min(start + chunk, count), count)
    if not lefts:
        empty = np.empty(0, np.int32)
        return Graph(count, empty, empty, np.empty(0, np.float32))
    left, right = np.concatenate(lefts), np.concatenate(rights)
    score = np.concatenate(scores)
    # An edge found from both ends is kept once.
    key = left.astype(np.int64) * count + right
    _, first = np.unique(key, return_index=True)
    return Graph(count, left[first], right[first], score[first])
