"""Exact scores of chosen rows of an index's vector store: what pq-rerank re-scores its
candidates with (``faceaudit.indexer.ann``).

The store is float16 (``vectors.npy``, memory-mapped). Numpy converts float16 to float32 one
value at a time (3.5 ms for the 4,096 rows of a search at 10^7 faces, four fifths of the
re-rank); FAISS's fp16 scalar quantizer decodes with SIMD instructions and scores while it
decodes. The rows are gathered in row order (a memory map reads each page once) and handed to
a ``QT_fp16`` flat index as its codes (the float16 bytes are exactly its code format), which
keeps the best of them: 2 ms instead of 6 for the 4,096 rows of a search at 10^7 faces,
gathering included (benchmarks/search_scale.py, "where the time goes"). A store of another
type (float32, in evaluation) is scored with numpy, which needs no conversion.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np
from numpy.typing import NDArray

from faceaudit.indexer.faiss_threads import omp_threads

# The scored rows' best this many are kept (x4 while the last of them is still above the
# threshold: a person with many photos). FAISS's fp16 range search scores one code at a time
# (4.6 ms for 4,096 rows); its k-best search scores with SIMD (0.2 ms for the best 256).
FIRST_BEST = 256
# Rows whose buffers a thread keeps for its next search (16,384 rows of 512 dimensions: 16 MB
# gathered, 16 MB of codes). A deeper widening (up to 65,536 rows) gets buffers of its own,
# dropped after it, so that the service's worker threads do not each hold 128 MB.
KEPT_ROWS = 16_384


def scores_above(vectors: NDArray[np.floating], query: NDArray[np.float32],
                 rows: NDArray[np.int64], threshold: float
                 ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """(exact scores, positions in ``rows``) of the rows scoring strictly above
    ``threshold`` against ``query``, in no particular order."""
    if len(rows) == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    order = np.argsort(rows, kind="stable")
    if vectors.dtype != np.float16:
        stored = np.take(vectors, rows[order], axis=0)
        scores = np.einsum("ij,j->i", np.asarray(stored, np.float32), query)
        above = np.flatnonzero(scores > threshold)
        return scores[above].astype(np.float32, copy=False), order[above]
    scorer = _thread_scorer(vectors, rows[order])
    matrix = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    best = min(FIRST_BEST, len(rows))
    with omp_threads(1):
        while True:  # the best few; more only while the last of them is still above
            scores, found = scorer.search(matrix, best)
            if scores[0, -1] <= threshold or best == len(rows):
                break
            best = min(best * 4, len(rows))
    above = scores[0] > threshold
    return scores[0, above], order[found[0, above]]


_per_thread = threading.local()


def _thread_scorer(vectors: NDArray[np.float16], rows: NDArray[np.int64]
                   ) -> faiss.IndexScalarQuantizer:
    """This thread's scorer, holding the store's ``rows`` (sorted). The scorer and the
    gathering buffer are kept per thread and reused: a fresh 4 MB allocation per search
    faults its pages in from the kernel again (3.5 ms of the 5 a re-rank of 4,096 rows took)."""
    dimension = vectors.shape[1]
    scorer = getattr(_per_thread, "scorer", None)
    gathered = getattr(_per_thread, "gathered", None)
    if len(rows) > KEPT_ROWS:
        scorer, gathered = None, None
    elif scorer is None or scorer.d != dimension:
        scorer = _per_thread.scorer = _new_scorer(dimension)
    if gathered is None or gathered.shape[1] != dimension or len(gathered) < len(rows):
        gathered = np.empty((len(rows), dimension), np.float16)
        if len(rows) <= KEPT_ROWS:
            _per_thread.gathered = gathered
    np.take(vectors, rows, axis=0, out=gathered[:len(rows)])
    if scorer is None:
        scorer = _new_scorer(dimension)
    scorer.reset()  # keeps the codes' capacity
    scorer.add_sa_codes(gathered[:len(rows)].view(np.uint8))
    return scorer


def _new_scorer(dimension: int) -> faiss.IndexScalarQuantizer:
    return faiss.IndexScalarQuantizer(dimension, faiss.ScalarQuantizer.QT_fp16,
                                      faiss.METRIC_INNER_PRODUCT)
