"""Across datasets: the same photo in several (same SHA-256 of its bytes), and the same person
in several (identities matched by their centroids).

Identities are matched, not re-clustered jointly: each index keeps the clustering that its own
figures use, and the report stays consistent with a report of that index alone. An identity's
centroid is the normalised mean of its faces' embeddings; identities A of one dataset and B of
another are the same person when each is the other's nearest centroid (mutual nearest
neighbours, so one crowded identity cannot absorb many) and their centroids score at least
the threshold. Identities linked that way through any chain of datasets are one person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from faceaudit.indexer.ann import ADD_CHUNK, VectorSearch
from faceaudit.indexer.store import IMAGES_FILE
from faceaudit.research.report.index_files import IndexFiles

IDENTITIES_RULE = (
    "Identities of two datasets are the same person when their centroids (the normalised mean "
    "of each identity's face embeddings) are each other's nearest and score at least the "
    "higher of the two clusterings' thresholds; identities linked so through any chain of "
    "datasets are one person. Each dataset keeps its own clustering.")


def image_digests(index: IndexFiles) -> pa.Array:
    """The SHA-256 of each photo of ``index`` (null where its bytes could not be read)."""
    column = pq.read_table(index.folder / IMAGES_FILE, columns=["sha256"]).column("sha256")
    return column.combine_chunks()


@dataclass(frozen=True)
class SharedPhotos:
    in_several: int  # distinct photos (by SHA-256) in two or more of the datasets
    pairs: dict[tuple[int, int], int]  # (dataset i, dataset j), i < j -> photos in both
    # Per dataset, each photo's number across all of them: the same bytes, the same number.
    numbers: list[NDArray[np.int64]]

    @property
    def distinct(self) -> int:
        """Distinct photos in all the datasets together."""
        return int(max((n.max(initial=-1) for n in self.numbers), default=-1)) + 1


def shared_photos(digests: list[pa.Array]) -> SharedPhotos:
    """Photos present in more than one dataset, from each dataset's photo digests."""
    distinct = [pc.unique(d).drop_null() for d in digests]
    every = pc.unique(pa.chunked_array(distinct, pa.string()).combine_chunks())
    counts = pc.value_counts(pa.chunked_array(distinct, pa.string()).combine_chunks())
    in_several = int(pc.sum(pc.greater_equal(counts.field("counts"), 2)).as_py() or 0)
    pairs = {(i, j): int(pc.sum(pc.is_in(distinct[i], value_set=distinct[j])).as_py() or 0)
             for i in range(len(digests)) for j in range(i + 1, len(digests))}
    numbers, unread = [], len(every)
    for digest in digests:
        found = np.asarray(pc.index_in(digest, value_set=every).fill_null(-1)
                           .to_numpy(zero_copy_only=False), dtype=np.int64)
        missing = found < 0  # photos without a digest are each a photo of their own
        found[missing] = unread + np.arange(int(missing.sum()))
        unread += int(missing.sum())
        numbers.append(found)
    return SharedPhotos(in_several, pairs, numbers)


def centroids(vectors: NDArray[np.floating], identity: NDArray[np.integer], count: int
              ) -> NDArray[np.float32]:
    """(count x d) normalised mean embedding of each identity; ``vectors`` (a memory map) is
    read a chunk at a time."""
    sums = np.zeros((count, vectors.shape[1]), np.float32)
    for start in range(0, len(vectors), ADD_CHUNK):
        chunk = np.asarray(vectors[start:start + ADD_CHUNK], dtype=np.float32)
        labels = np.asarray(identity[start:start + ADD_CHUNK])
        order = np.argsort(labels, kind="stable")
        ordered = labels[order]
        firsts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sums[ordered[firsts]] += np.add.reduceat(chunk[order], firsts, axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(norms > 0, norms, 1)).astype(np.float32)


def _mutual_matches(a: NDArray[np.float32], b: NDArray[np.float32], threshold: float
                    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(rows of a, rows of b) that are each other's nearest neighbour, scoring >= threshold."""
    if not len(a) or not len(b):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    score_ab, nearest_ab = VectorSearch.in_memory(b).index.search(a, 1)
    _, nearest_ba = VectorSearch.in_memory(a).index.search(b, 1)
    rows = np.arange(len(a))
    target = nearest_ab[:, 0]
    mutual = (target >= 0) & (score_ab[:, 0] >= threshold)
    mutual[mutual] &= nearest_ba[target[mutual], 0] == rows[mutual]
    return rows[mutual].astype(np.int64), target[mutual].astype(np.int64)


@dataclass(frozen=True)
class LinkedIdentities:
    """``group[d]``: per identity of dataset d, its person across all datasets (0..groups-1)."""

    group: list[NDArray[np.int64]]
    groups: int
    in_several: int  # persons with identities in two or more datasets
    pairs: dict[tuple[int, int], int]  # (i, j), i < j -> identities of i matched in j


def link_identities(sets: list[NDArray[np.float32]], threshold: float) -> LinkedIdentities:
    """Link the identity centroids of several datasets (``sets[d]``: one row per identity)."""
    offsets = np.cumsum([0] + [len(s) for s in sets])
    sources, targets = [], []
    pairs: dict[tuple[int, int], int] = {}
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            rows_i, rows_j = _mutual_matches(sets[i], sets[j], threshold)
            pairs[(i, j)] = len(rows_i)
            sources.append(rows_i + offsets[i])
            targets.append(rows_j + offsets[j])
    nodes = int(offsets[-1])
    edges_from = np.concatenate(sources) if sources else np.empty(0, np.int64)
    edges_to = np.concatenate(targets) if targets else np.empty(0, np.int64)
    graph = coo_matrix((np.ones(len(edges_from), np.int8), (edges_from, edges_to)),
                       shape=(nodes, nodes))
    groups, labels = connected_components(graph, directed=False)
    dataset_of_node = np.repeat(np.arange(len(sets)), np.diff(offsets))
    # A person is in several datasets when its nodes come from two or more of them.
    distinct = np.unique(labels.astype(np.int64) * len(sets) + dataset_of_node) // len(sets)
    in_several = int(np.count_nonzero(np.bincount(distinct, minlength=groups) >= 2))
    group = [labels[offsets[d]:offsets[d + 1]].astype(np.int64) for d in range(len(sets))]
    return LinkedIdentities(group, int(groups), in_several, pairs)
