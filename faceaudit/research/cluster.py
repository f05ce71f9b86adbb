"""Group an index's faces by identity: a k-NN graph above a calibrated threshold, merged by
rounds of guarded agglomeration.

1. **Graph.** Every face's ``k`` nearest faces (``VectorSearch.knn``, the index's own
   machinery, in batches); an edge joins two faces when their similarity is above
   ``threshold``. Edges are int32 pairs, each once.
2. **Merging.** Every face starts alone. Each round aggregates the edges between current
   groups (count and mean similarity per pair of groups) and merges what may be merged:
   two groups may merge only when at least ``min_link`` x (the smaller group's size) edges
   join them, the *chaining guard*. One false edge, or a thin bridge of in-between faces,
   cannot join two people who each have a few photos, as plain connected components
   (single linkage) would: a large dataset holds enough strangers above any usable threshold
   to chain most of it into one "person". Each group's best partner is the allowed one with
   the highest mean similarity; mutual best partners merge, and a group whose best partner
   is in such a pair joins it too when it passes the guard against the pair as a whole
   (stars form in one round, chains never do). Merges thus go roughly from the most similar
   down: a person's own photos, which score higher than strangers, are grouped before a
   stranger's edge is weighed (a stranger scoring above them can still join them first).

Why not a library: Leiden (leidenalg, on igraph) needs the same k-NN graph copied into
igraph, and a resolution parameter that trades splitting large identities against merging
small ones, with no similarity threshold to calibrate against the false-match rate; HDBSCAN
resists chaining through core distances over ``min_samples`` neighbours, which makes the
people seen in one or two photos, most people of a dataset, noise. This is ~150 lines of
vectorised numpy over int32 edges. On lfw-dev (`faceaudit eval`), the guard alone takes
pairwise precision from 0.988 to 0.998 at the chosen threshold, and from 0.836 to 0.948 where
strangers are 20 times denser.

The threshold grows with the index (``default_threshold``): it keeps the expected number of
strangers above it per face, N x FMR(t), at the level measured best on lfw-dev, so that the
share of faces wrongly attached to someone stays about the same at 10^7 faces as there.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.ann import VectorSearch
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.calibration import UNCALIBRATED_THRESHOLD, Calibration, load_calibration
from faceaudit.models.packs import resolve_pack

log = logging.getLogger(__name__)

# Neighbours per face in the graph.
DEFAULT_K = 16
# Two groups merge only when this many edges per face of the smaller one join them: a face
# alone joins through one edge, two groups of two need two. Above 1, no face alone could join
# anyone; at 1 lfw-dev scored best (0.5: pairwise precision 0.988 instead of 0.998).
DEFAULT_MIN_LINK = 1.0
# The threshold measured best on lfw-dev (`faceaudit eval`), and the strangers per face
# expected above it there (its ~4,400 faces x FMR): larger indexes keep that expectation.
BASE_THRESHOLD = 0.375
EXPECTED_STRANGERS_PER_FACE = 0.0111
# Faces searched for neighbours at a time (memory: QUERY_CHUNK x k scores and rows).
QUERY_CHUNK = 16_384
METHOD = "knn-graph guarded agglomeration"

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


def default_threshold(calibration: Calibration, faces: int) -> float:
    """The clustering threshold for ``faces`` faces: BASE_THRESHOLD, raised until at most
    EXPECTED_STRANGERS_PER_FACE strangers are expected above it per face. An uncalibrated
    pack: its conservative fixed threshold, or BASE_THRESHOLD if higher."""
    needed = calibration.threshold_for(max(faces, 1), EXPECTED_STRANGERS_PER_FACE)
    if needed is None:
        return max(BASE_THRESHOLD, UNCALIBRATED_THRESHOLD)
    return max(BASE_THRESHOLD, needed)


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


def _find_roots(parent: NDArray[np.int64]) -> NDArray[np.int64]:
    """Each node's root in a forest of parent pointers (pointer jumping, vectorised)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def _pair_stats(group_a: NDArray[np.int32], group_b: NDArray[np.int32],
                score: NDArray[np.float32], groups: int
                ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64],
                           NDArray[np.float64]]:
    """Per pair of groups joined by edges (low, high): the edge count and the mean score."""
    key = np.minimum(group_a, group_b).astype(np.int64) * groups + np.maximum(group_a, group_b)
    order = np.argsort(key)
    key = key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    count = np.diff(np.append(starts, len(key)))
    mean = np.add.reduceat(score[order].astype(np.float64), starts) / count
    pair = key[starts]
    return pair // groups, pair % groups, count, mean


def _best_partner(low: NDArray[np.int64], high: NDArray[np.int64], link: NDArray[np.float64],
                  groups: int) -> NDArray[np.int64]:
    """Per group, the partner of its highest-linked pair (ties: the lowest partner), -1 for
    a group in no pair."""
    node = np.concatenate([low, high])
    other = np.concatenate([high, low])
    strength = np.concatenate([link, link])
    order = np.lexsort((other, -strength, node))
    node, other = node[order], other[order]
    first = np.concatenate([[True], node[1:] != node[:-1]])
    best = np.full(groups, -1, np.int64)
    best[node[first]] = other[first]
    return best


def agglomerate(graph: Graph, *, min_link: float = DEFAULT_MIN_LINK,
                max_rounds: int = 10_000) -> NDArray[np.int64]:
    """Each face's group (one face row of it, its root) after merging ``graph`` by guarded
    rounds (see the module's docstring). ``min_link`` 0 merges every connected component."""
    count = graph.faces
    parent = np.arange(count, dtype=np.int64)
    sizes = np.ones(count, np.int64)
    group_a, group_b, score = graph.left, graph.right, graph.score
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        between = group_a != group_b
        group_a, group_b, score = group_a[between], group_b[between], score[between]
        if not len(score):
            break
        low, high, edges, mean = _pair_stats(group_a, group_b, score, count)
        allowed = edges >= min_link * np.minimum(sizes[low], sizes[high])
        low, high, edges, mean = low[allowed], high[allowed], edges[allowed], mean[allowed]
        if not len(low):
            break
        best = _best_partner(low, high, mean, count)
        # Mutual best partners merge into the lower of the two.
        candidates = np.flatnonzero(best >= 0)
        mutual = candidates[best[best[candidates]] == candidates]
        heads = mutual[mutual < best[mutual]]
        target = np.arange(count, dtype=np.int32)
        target[best[heads]] = heads.astype(np.int32)
        pair_size = sizes.copy()
        pair_size[heads] += sizes[best[heads]]
        # A group whose best partner is in such a pair joins it when its edges to that
        # partner alone pass the guard against the whole pair.
        joiners = candidates[(best[best[candidates]] != candidates)]
        partner = best[joiners]
        in_pair = best[partner] >= 0
        joiners, partner = joiners[in_pair], partner[in_pair]
        in_pair = best[best[partner]] == partner
        joiners, partner = joiners[in_pair], partner[in_pair]
        head = np.minimum(partner, best[partner])
        pair_keys = low * count + high  # ascending, as _pair_stats returns them
        keys = np.minimum(joiners, partner) * count + np.maximum(joiners, partner)
        joined = edges[np.searchsorted(pair_keys, keys)]
        passes = joined >= min_link * np.minimum(sizes[joiners], pair_size[head])
        target[joiners[passes]] = head[passes].astype(np.int32)
        moved = np.flatnonzero(target != np.arange(count))
        if not len(moved):
            break
        np.add.at(sizes, target[moved], sizes[moved])
        parent[moved] = target[moved]
        group_a, group_b = target[group_a], target[group_b]
    else:
        log.warning("clustering stopped after %d rounds", max_rounds)
    log.info("clustering: %d rounds", rounds)
    return _find_roots(parent)


def number_by_size(groups: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(labels 0..n-1 numbered by decreasing group size, ties by lowest member; sizes)."""
    roots, first, inverse, counts = np.unique(groups, return_index=True, return_inverse=True,
                                              return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(len(roots), np.int64)
    rank[order] = np.arange(len(roots))
    return rank[inverse].astype(np.int64), counts[order].astype(np.int64)


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


def index_calibration(index: FaceIndex, models: str | None = None) -> Calibration:
    """The calibration of the model pack that built ``index``: that of ``models`` (a pack
    folder; default: FACEAUDIT_MODELS, else buffalo_s), checked against the recognizer's
    SHA-256 in the manifest; an uncalibrated stand-in when that is not the pack that built
    it."""
    manifest = index.manifest
    pack = resolve_pack(models)
    files = manifest["model_pack"]["files"]
    recognizer = files.get(pack.recognizer.path.name, {}).get("sha256")
    if pack.name != manifest["model_pack"]["name"] or recognizer is None:
        return Calibration(pack=manifest["model_pack"]["name"], recognizer_sha256=None,
                           threshold=UNCALIBRATED_THRESHOLD, fmr=[], impostor_comparisons=0,
                           source="uncalibrated")
    return load_calibration(pack, recognizer)


def index_size_for(calibration: Calibration, threshold: float) -> int | None:
    """The index size whose ``default_threshold`` is ``threshold`` (about: thresholds are
    rounded to 0.001); None below BASE_THRESHOLD or for an uncalibrated pack."""
    rate = calibration.false_match_rate(threshold)
    if threshold < BASE_THRESHOLD or not rate:
        return None
    return max(1, int(EXPECTED_STRANGERS_PER_FACE / rate))


# --- the identities file ---------------------------------------------------------------------

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
