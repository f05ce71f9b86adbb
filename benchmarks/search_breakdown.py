"""Where a pq-rerank search's time goes, and the re-rank it replaced as a baseline timed in
the same run (used by benchmarks/search_scale.py).

A search at 10^7 faces: the fast scan of every 4-bit code (k = the depth; a widening scans
again for 4 times its new depth), re-scoring the candidates exactly from the float16 store,
and the widenings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from faceaudit.indexer import ann, rescoring


@dataclass
class Queries:
    name: str
    vectors: NDArray[np.float32]
    own: list[set[int]]  # rows of the faces of each query's own photos (not counted)


def timed(search: Callable[[NDArray[np.float32]], object], queries: NDArray[np.float32]
          ) -> tuple[NDArray[np.float64], float]:
    """(wall ms of each search, mean CPU ms), one search at a time."""
    search(queries[0])  # warm-up
    walls = np.empty(len(queries))
    cpu = time.process_time()
    for number, query in enumerate(queries):
        clock = time.perf_counter()
        search(query)
        walls[number] = (time.perf_counter() - clock) * 1000
    return walls, (time.process_time() - cpu) * 1000 / len(queries)


def median_ms(calls: list[Callable[[], object]]) -> float:
    """The median wall ms of ``calls``, one at a time (the first also run once before)."""
    calls[0]()
    walls = []
    for call in calls:
        clock = time.perf_counter()
        call()
        walls.append((time.perf_counter() - clock) * 1000)
    return float(np.median(walls))


class PreviousRerank(ann.VectorSearch):
    """pq-rerank's re-rank as it was before FAISS scored the float16 rows: numpy's float16 to
    float32 conversion of the candidates in fresh arrays, and a new scan at each widening."""

    def _reranked(self, matrix: NDArray[np.float32], threshold: float
                  ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        depth, done = min(self.depth, self.ntotal), 0
        seen = np.empty(0, np.int64)
        found_scores, found_rows = [], []
        while True:
            approximate, candidates = self.index.search(matrix, depth)
            ranked = candidates[0]
            fresh = ~np.isin(ranked, seen) & (ranked >= 0)
            scores = numpy_scores(self.vectors, matrix[0], ranked[fresh])
            keep = scores > threshold
            found_scores.append(scores[keep])
            found_rows.append(ranked[fresh][keep])
            deep = np.flatnonzero(fresh)[keep] >= depth - (depth - done) // 4
            if depth >= self.ntotal or not (deep.any()
                                            or approximate[0, -1] > threshold - self.margin):
                break
            seen = ranked[ranked >= 0]
            done, depth = depth, min(self.ntotal, depth * ann.WIDEN)
        return np.concatenate(found_scores), np.concatenate(found_rows)


def numpy_scores(vectors: NDArray[np.floating], query: NDArray[np.float32],
                 rows: NDArray[np.int64]) -> NDArray[np.float32]:
    """The previous re-rank's exact scores: rows gathered in row order, converted by numpy."""
    order = np.argsort(rows)
    scores = np.empty(len(rows), np.float32)
    stored = np.take(vectors, rows[order], axis=0).astype(np.float32)
    scores[order] = np.einsum("ij,j->i", stored, query)
    return scores


@contextmanager
def counted(search: ann.VectorSearch) -> Iterator[list[list[int]]]:
    """Per search: [scans, rows re-scored], appended as ``search`` runs in the block."""
    counts: list[list[int]] = []
    index, score = search.index, rescoring.scores_above

    class Scans:
        ntotal, d = index.ntotal, index.d

        def search(self, matrix: NDArray[np.float32], k: int) -> Any:
            counts[-1][0] += 1
            return index.search(matrix, k)

    def scores_above(vectors: Any, query: Any, rows: NDArray[np.int64], threshold: float
                     ) -> Any:
        counts[-1][1] += len(rows)
        return score(vectors, query, rows, threshold)

    search.index, rescoring.scores_above = Scans(), scores_above
    try:
        yield counts
    finally:
        search.index, rescoring.scores_above = index, score


def time_breakdown(index: faiss.Index, store: NDArray[np.float16], info: dict[str, Any],
                   sets: list[Any], timing: int, report: Callable[[str], None]) -> None:
    """Each part of a search's time, on the first ``timing`` queries of each set, at its
    operating threshold and floor (medians, ms, one query at a time)."""
    depth = int(info["rerank_depth"])
    search = ann.VectorSearch(index, store, info)
    previous = PreviousRerank(index, store, info)
    report(f"   where the time goes: pq-rerank at depth {depth:,}, the first {timing} queries "
           f"of each set one at a time, medians in ms (p99 in brackets)")
    for query_set in sets:
        queries = query_set.queries.vectors[:timing]
        scan = {k: np.median(timed(lambda q, k=k: index.search(q[None], k), queries)[0])
                for k in (depth, depth * ann.WIDEN)}
        rows = [index.search(q[None], depth)[1][0] for q in queries]
        t = query_set.thresholds[0]
        numpy_ms = median_ms([lambda q=q, r=r: numpy_scores(store, q, r)
                              for q, r in zip(queries, rows, strict=True)])
        faiss_ms = median_ms([lambda q=q, r=r, t=t: rescoring.scores_above(store, q, r, t)
                              for q, r in zip(queries, rows, strict=True)])
        report(f"   {query_set.queries.name}: scan k={depth:,} {scan[depth]:.1f}, "
               f"k={depth * ann.WIDEN:,} {scan[depth * ann.WIDEN]:.1f}; re-score {depth:,} "
               f"rows: numpy {numpy_ms:.1f}, FAISS fp16 {faiss_ms:.1f}")
        for t in query_set.thresholds[:2]:
            with counted(search) as counts:
                for query in queries:
                    counts.append([0, 0])
                    search.range_search(query, t)
            now, _ = timed(lambda q, t=t: search.range_search(q, t), queries)
            before, _ = timed(lambda q, t=t: previous.range_search(q, t), queries)
            widened = sum(1 for _, scored in counts if scored > depth)
            rescanned = sum(1 for scans, _ in counts if scans > 1)
            report(f"      at {t}: search {np.median(now):.1f} ({np.percentile(now, 99):.1f}), "
                   f"previous re-rank {np.median(before):.1f} "
                   f"({np.percentile(before, 99):.1f}): x{np.median(now) / np.median(before):.2f}"
                   f"; widened {widened}/{len(queries)}, scanned again {rescanned}")
