"""Exact search over a float16 vector store: the ground truth approximate structures are
measured against (a chunked scan, batched over queries, so a memory-mapped store of 10^7 faces
is read once whatever the number of queries), the kept share recorded in an index's manifest,
and exact k-NN on a GPU where FAISS has one.
"""

from __future__ import annotations

from typing import Any, Protocol

import faiss
import numpy as np
from numpy.typing import NDArray

# Store rows scored at a time (a chunk of float32 scores per query batch stays small).
SCAN_CHUNK = 65_536
# The kept share recorded in the manifest: measured at build time with this many of the
# index's own faces as queries (each itself left out), at the threshold the build names (its
# pack's operating threshold for the index's size), by default the bundled pack's.
KEPT_SHARE_QUERIES = 300
DEFAULT_PACK_CALIBRATION = "buffalo_s.json"
GPU_CHUNK = 1_048_576


class RangeSearch(Protocol):
    """What the kept share is measured on (``faceaudit.indexer.ann.VectorSearch``)."""

    vectors: NDArray[np.floating]

    @property
    def ntotal(self) -> int: ...

    def range_search(self, query: NDArray[np.float32], threshold: float
                     ) -> tuple[NDArray[np.float32], NDArray[np.int64]]: ...


def default_threshold(faces: int) -> float:
    """The bundled pack's operating threshold for an index of ``faces`` faces."""
    from faceaudit.models.calibration import Calibration
    from faceaudit.models.calibration_files import BUNDLED

    calibration = Calibration.from_file(BUNDLED / DEFAULT_PACK_CALIBRATION)
    return calibration.operating_threshold(max(faces, 1))


def exact_range_search(vectors: NDArray[np.floating], queries: NDArray[np.float32],
                       threshold: float, chunk: int = SCAN_CHUNK
                       ) -> list[tuple[NDArray[np.float32], NDArray[np.int64]]]:
    """Exact (scores, rows) strictly above ``threshold`` for each query, by a chunked scan of
    ``vectors`` (a memory map is read once, a chunk at a time, whatever the number of queries)."""
    found: list[list[tuple[NDArray[np.float32], NDArray[np.int64]]]] = [[] for _ in queries]
    matrix = np.ascontiguousarray(queries, dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        scores = matrix @ np.asarray(vectors[start:start + chunk], dtype=np.float32).T
        which, rows = np.nonzero(scores > threshold)
        for query in np.unique(which):
            mine = which == query
            found[query].append((scores[query, rows[mine]], rows[mine] + start))
    empty = (np.empty(0, np.float32), np.empty(0, np.int64))
    return [(np.concatenate([s for s, _ in parts]), np.concatenate([r for _, r in parts]))
            if parts else empty for parts in found]


def measure_kept_share(search: RangeSearch, threshold: float,
                       queries: int = KEPT_SHARE_QUERIES, seed: int = 0) -> dict[str, Any]:
    """The share of the faces exact search finds above ``threshold`` that ``search`` finds,
    over a seeded sample of the index's own faces as queries (each query face left out)."""
    count = search.ntotal
    rows = np.sort(np.random.default_rng(seed).choice(count, min(queries, count), replace=False))
    matrix = np.asarray(search.vectors[rows], dtype=np.float32)
    found = kept = 0
    for query, own, (_, exact) in zip(matrix, rows, exact_range_search(search.vectors, matrix,
                                                                       threshold), strict=True):
        truth = set(exact.tolist()) - {int(own)}
        found += len(truth)
        kept += len(truth & set(search.range_search(query, threshold)[1].tolist()))
    return {"kept_share": round(kept / found, 6) if found else None,
            "kept_share_threshold": threshold, "kept_share_queries": len(rows),
            "kept_share_found": found}


def gpu_available() -> bool:
    """Whether FAISS can use a GPU here (a GPU build and at least one device)."""
    return faiss.get_num_gpus() > 0 and hasattr(faiss, "StandardGpuResources")


def gpu_knn(vectors: NDArray[np.floating], queries: NDArray[np.float32], k: int
            ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact k-NN (inner product) of ``queries`` over ``vectors`` (float16 rows, k at most
    their number) on the GPU, a chunk of the store at a time, merged on the host."""
    resources = _gpu_resources()
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start in range(0, len(vectors), GPU_CHUNK):
        block = np.ascontiguousarray(vectors[start:start + GPU_CHUNK])
        scores, rows = faiss.knn_gpu(resources, queries, block, min(k, len(block)),
                                     metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, np.where(rows >= 0, rows + start, -1))
    heap.finalize()
    return heap.D, heap.I


_resources: list[Any] = []


def _gpu_resources() -> Any:
    """One set of GPU resources (scratch memory, streams) for the process."""
    if not _resources:
        _resources.append(faiss.StandardGpuResources())
    return _resources[0]
