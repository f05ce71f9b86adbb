"""The searchable vector index: which FAISS structure holds the faces' embeddings, how it is
built from the index's vector store, and range and k-NN search over it.

Every index keeps its embeddings in ``vectors.npy`` (float16, row i = face i, memory-mapped):
it is the exact record the searchable structure is built from, what a rebuild reuses, what
clustering reads, and what approximate types re-rank from. ``faces.faiss`` is the searchable
structure, of one of ``INDEX_TYPES``; the manifest's ``index`` section says which (``info``),
with its parameters and the kept share measured when it was built.

A face search is a range search at a low similarity (a person's other photos score about 0.5
against a selfie), not a nearest-neighbour search: the types are judged by *kept share*, the
share of the faces exact search returns above the threshold that the type returns too.

- ``flat``: exact (``IndexFlatIP``, float32 in RAM: 2,048 bytes per face of 512 dimensions).
- ``pq-rerank``: 4-bit product-quantisation codes scanned exhaustively with FAISS fast-scan
  (``PQ64x4fs``: 32 bytes per face in RAM), the best ``rerank_depth`` faces by approximate score
  re-scored exactly from the float16 store (``faceaudit.indexer.rescoring``) and kept when
  strictly above the threshold. Every score it returns is exact; what it can miss is a face
  whose approximate score ranked below the depth. At 10^7 faces the scan is most of a search
  (17 of ~20 ms on one core here): it reads all 320 MB of codes whatever k is. IVF
  (benchmarks/search_scale.py) and HNSW (measured for issue 8) lose people: their partition
  or graph walk never reaches part of what a low threshold must find.

Exact search over the store (the ground truth, the kept share measured at build, k-NN on a
GPU) is in ``faceaudit.indexer.exact``. Where FAISS has a GPU, ``knn`` runs there, exact over
the store; training 4-bit codebooks and encoding stay on the CPU (10^7 faces in ~80 s here;
FAISS has no fast-scan index on GPU).

Threads: a single search runs on one core (FAISS parallelises over queries, and a search is
one query; re-scoring runs with one OpenMP thread, ``faiss_threads``), so the service's
concurrent searches each take a core and never oversubscribe;
``knn`` over a batch uses FAISS's OpenMP threads. PQ training runs on one thread (``omp_threads``:
small work, where OpenMP threads spinning beside other busy processes made it 15x slower on
two shared cores). No process-wide thread setting is changed.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from faceaudit.indexer import rescoring
from faceaudit.indexer.exact import (
    default_threshold,
    gpu_available,
    gpu_knn,
    measure_kept_share,
)
from faceaudit.indexer.faiss_threads import omp_threads

FAISS_FILE = "faces.faiss"
VECTOR_STORE = "vectors.npy"
INDEX_TYPES = ("auto", "flat", "pq-rerank")
# Vectors converted to float32 and added to FAISS this many at a time (bounded memory).
ADD_CHUNK = 65_536

# ``auto``: exact up to this many faces (float32 in RAM, 2 KB a face at 512 dimensions; a
# search scans it all on one core: ~20 ms here, ~80 ms at 10^6), pq-rerank above
# (benchmarks/search_scale.py).
FLAT_MAX_FACES = 250_000
PQ_CODES = "PQ{m}x4fs"
PQ_SUBVECTOR = 8  # dimensions per 4-bit sub-quantiser: 64 of them at 512 dimensions
# PQ training: a seeded sample (4-bit codebooks have 16 centroids per sub-space).
TRAIN_SAMPLE = 65_536
TRAIN_MINIMUM = 1_024
SEED = 20_260_101
# Re-rank depth: the candidates re-scored exactly per search. Impostors whose approximate
# score beats a real mate's grow with the index, so the depth does too: one per FACES_PER_DEPTH
# faces, rounded up to a power of two, at least MIN_DEPTH. Measured on real mates among honest
# distractors (benchmarks/search_scale.py): at 10^7 faces, 4,096 keep 0.9999 of the pairs
# above the search floor (0.455) and all above the operating threshold (0.512).
MIN_DEPTH = 1_024
FACES_PER_DEPTH = 2_500
MAX_DEPTH = 65_536
# A search widens its depth (x WIDEN) while the deepest quarter of its candidates still holds
# faces above the threshold, or its last candidate's approximate score is above the threshold
# less this margin (a query with more faces above the threshold than the depth).
RERANK_MARGIN = 0.1
WIDEN = 4
# knn: candidates re-scored per query.
KNN_DEPTH_FACTOR = 4
KNN_MIN_DEPTH = 64
KNN_GATHER = 65_536  # candidate rows gathered from the store at a time


def choose_index_type(faces: int) -> str:
    """The type ``auto`` means for an index of ``faces`` faces."""
    return "flat" if faces <= FLAT_MAX_FACES else "pq-rerank"


def rerank_depth(faces: int) -> int:
    """The re-rank depth of a pq-rerank index of ``faces`` faces."""
    wanted = 1 << max(0, math.ceil(math.log2(max(1, faces) / FACES_PER_DEPTH)))
    return int(min(max(faces, 1), MAX_DEPTH, max(MIN_DEPTH, wanted)))


def build_search_index(vectors: NDArray[np.floating], index_type: str = "auto", *,
                       threshold: float | None = None
                       ) -> tuple[faiss.Index, dict[str, Any]]:
    """The searchable structure of ``vectors`` (N x d, L2-normalised; a memory map is read a
    chunk at a time) and the manifest's ``index`` section describing it. ``threshold``: where
    an approximate type's kept share is measured: the pack's operating threshold for this
    size (default: the bundled pack's, ``default_threshold``)."""
    count, dimension = vectors.shape
    if index_type == "auto":
        index_type = choose_index_type(count)
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}: use one of {', '.join(INDEX_TYPES)}")
    clock = time.perf_counter()
    info: dict[str, Any] = {"type": index_type, "file": FAISS_FILE, "vectors": VECTOR_STORE}
    index: faiss.Index
    if index_type == "flat":
        index = faiss.IndexFlatIP(dimension)
        info.update({"faiss": "IndexFlatIP", "exact": True, "kept_share": 1.0})
    else:
        factory = PQ_CODES.format(m=pq_subquantizers(dimension))
        index = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
        sample = training_sample(vectors)
        with omp_threads(1):  # 16 centroids per sub-space: spinning threads cost more
            index.train(sample)
        info.update({"faiss": factory, "exact": False, "train_sample": len(sample),
                     "rerank_depth": rerank_depth(count), "rerank_margin": RERANK_MARGIN,
                     "rerank_from": VECTOR_STORE})
    for start in range(0, count, ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start:start + ADD_CHUNK], dtype=np.float32))
    info["resident_bytes_per_face"] = resident_bytes_per_face(index)
    info["build_seconds"] = round(time.perf_counter() - clock, 1)
    if index_type != "flat":
        clock = time.perf_counter()
        info.update(measure_kept_share(VectorSearch(index, vectors, info),
                                       default_threshold(count) if threshold is None
                                       else threshold, seed=SEED))
        info["kept_share_seconds"] = round(time.perf_counter() - clock, 1)
    return index, info


def pq_subquantizers(dimension: int) -> int:
    """Sub-quantisers of the PQ codes: one per PQ_SUBVECTOR dimensions (a divisor of d)."""
    wanted = max(1, dimension // PQ_SUBVECTOR)
    return max(m for m in range(1, wanted + 1) if dimension % m == 0)


def training_sample(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    """A seeded sample of rows (read in row order from a memory map), padded with jittered
    copies when the index is too small to train 16 centroids per sub-space."""
    count = len(vectors)
    rng = np.random.default_rng(SEED)
    if count > TRAIN_SAMPLE:
        rows = np.sort(rng.choice(count, TRAIN_SAMPLE, replace=False))
        return np.ascontiguousarray(vectors[rows], dtype=np.float32)
    sample = np.asarray(vectors, dtype=np.float32)
    if count < TRAIN_MINIMUM:
        base = sample if count else rng.standard_normal((1, vectors.shape[1]), np.float32)
        extra = base[rng.integers(0, len(base), TRAIN_MINIMUM - count)]
        extra = extra + rng.normal(0, 0.01, extra.shape).astype(np.float32)
        sample = np.concatenate([sample, extra])
    return np.ascontiguousarray(sample)


def resident_bytes_per_face(index: faiss.Index) -> float:
    """RAM the structure holds per face (codes or vectors), the memory-mapped store aside."""
    return float(index.sa_code_size())


class VectorSearch:
    """A published index's searchable structure and vector store, ready to search.
    Thread-safe: FAISS searches of a read-only index and reads of the store may run
    concurrently."""

    def __init__(self, index: faiss.Index, vectors: NDArray[np.floating],
                 info: dict[str, Any]) -> None:
        if len(vectors) != index.ntotal:
            raise ValueError(f"{len(vectors)} stored vectors for {index.ntotal} searchable ones")
        self.index, self.vectors, self.info = index, vectors, info
        self.exact = info.get("type", "flat") == "flat"
        self.depth = int(info.get("rerank_depth", 0))
        self.margin = float(info.get("rerank_margin", RERANK_MARGIN))

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any]) -> VectorSearch:
        """The structure described by the manifest's ``info`` in ``folder``."""
        return cls(faiss.read_index(str(folder / info.get("file", FAISS_FILE))),
                   np.load(folder / info.get("vectors", VECTOR_STORE), mmap_mode="r"), info)

    @classmethod
    def in_memory(cls, vectors: NDArray[np.floating], index_type: str = "flat"
                  ) -> VectorSearch:
        """A structure over ``vectors`` that is never written (evaluation, tests)."""
        index, info = build_search_index(vectors, index_type)
        return cls(index, vectors, info)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def range_search(self, query: NDArray[np.float32], threshold: float
                     ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(scores, rows) of every face scoring strictly above ``threshold``, unordered.
        Scores are exact (from the float32 vectors, or re-ranked from the float16 store)."""
        if self.ntotal == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        matrix = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if self.exact:
            _, scores, rows = self.index.range_search(matrix, float(threshold))
            return scores, rows.astype(np.int64, copy=False)
        return self._reranked(matrix, threshold)

    def _reranked(self, matrix: NDArray[np.float32], threshold: float
                  ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The best ``depth`` faces by approximate score, re-scored exactly; widened (x WIDEN,
        only the new candidates re-scored) while the deepest quarter of the candidates still
        holds a face above the threshold, or the last one's approximate score is within the
        margin of it: a person with more photos than the depth, a crowd of look-alikes.

        The first scan asks for the depth only: at 10^7 faces k = 4 depth costs 10 % more
        (19.0 ms against 17.2), and none of the 476 searches timed there widened. A search that
        widens scans again for 4 times the new depth, so its next widening needs no scan (the
        fast scan reads every code whatever k is; benchmarks/search_scale.py)."""
        query = matrix[0]
        depth, done, scanned = min(self.depth, self.ntotal), 0, 0
        ranked = np.empty(0, np.int64)
        approximate = np.empty(0, np.float32)
        scored = np.empty(0, np.int64)  # the previous ranking's re-scored rows, after a scan
        found_scores, found_rows = [], []
        while True:
            window_start = done
            if depth > scanned:
                scanned = min(self.ntotal, depth * (WIDEN if done else 1))
                distances, candidates = self.index.search(matrix, scanned)
                scored = ranked[:done]
                approximate, ranked = distances[0], candidates[0]
                window_start = 0 if done else done
            window = ranked[:depth]
            positions = np.arange(window_start, depth)
            positions = positions[window[positions] >= 0]
            if window_start < done:  # a new ranking: skip what was re-scored, wherever it is
                positions = positions[~np.isin(window[positions], scored)]
            scores, above = rescoring.scores_above(self.vectors, query, window[positions],
                                                   threshold)
            found_scores.append(scores)
            found_rows.append(window[positions[above]])
            deep = positions[above] >= depth - (depth - done) // 4
            if depth >= self.ntotal or not (deep.any()
                                            or approximate[depth - 1] > threshold - self.margin):
                break
            done, depth = depth, min(self.ntotal, depth * WIDEN)
        return np.concatenate(found_scores), np.concatenate(found_rows)

    def knn(self, queries: NDArray[np.float32], k: int
            ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The ``k`` best faces of each query, best first: (scores (m, k) exact, rows (m, k)),
        rows -1 and scores -inf where the index has fewer than ``k`` faces. On a GPU: exact,
        over the store; on a CPU: through the structure (pq-rerank re-ranks
        max(KNN_DEPTH_FACTOR k, KNN_MIN_DEPTH) candidates per query)."""
        matrix = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.index.d)
        scores = np.full((len(matrix), k), -np.inf, np.float32)
        rows = np.full((len(matrix), k), -1, np.int64)
        if self.ntotal == 0 or len(matrix) == 0 or k <= 0:
            return scores, rows
        found = min(k, self.ntotal)
        if gpu_available():
            scores[:, :found], rows[:, :found] = gpu_knn(self.vectors, matrix, found)
        elif self.exact:
            scores[:, :found], rows[:, :found] = self.index.search(matrix, found)
        else:
            depth = min(self.ntotal, max(KNN_DEPTH_FACTOR * k, KNN_MIN_DEPTH))
            batch = max(1, KNN_GATHER // depth)
            for start in range(0, len(matrix), batch):
                part = slice(start, start + batch)
                scores[part, :found], rows[part, :found] = self._rerank(matrix[part], depth,
                                                                        found)
        scores[rows < 0] = -np.inf
        return scores, rows

    def _rerank(self, matrix: NDArray[np.float32], depth: int, k: int
                ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        _, candidates = self.index.search(matrix, depth)
        unique, inverse = np.unique(candidates, return_inverse=True)
        valid = unique >= 0
        stored = np.zeros((len(unique), self.index.d), np.float32)
        stored[valid] = self.vectors[unique[valid]]
        exact = np.einsum("qcd,qd->qc", stored[inverse.reshape(candidates.shape)], matrix)
        exact[candidates < 0] = -np.inf
        best = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(exact, best, axis=1),
                np.take_along_axis(candidates, best, axis=1))


def write_vector_store(path: Path, vectors: NDArray[np.floating]) -> None:
    """``vectors`` as the float16 store (chunked, so a memory map is never read whole)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=vectors.shape)
    for start in range(0, len(vectors), ADD_CHUNK):
        out[start:start + ADD_CHUNK] = vectors[start:start + ADD_CHUNK]
    out.flush()
    del out
