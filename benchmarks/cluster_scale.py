"""Time and memory of identity clustering (faceaudit.research.clustering) on synthetic faces with
planted identities, and what they become at 10^7 faces.

    python benchmarks/cluster_scale.py --faces 1000000

The faces: unit vectors (512-d, stored float16 and memory-mapped, as an index stores them);
``--singletons`` of them alone, the rest in identities of 2 to 500 faces (Zipf, a = 2), each
face ``w`` centre + ``sqrt(1 - w^2)`` noise with ``w`` in [0.75, 0.9]: a person's faces score
0.56-0.81 with each other, strangers about 0 +- 0.044. Real strangers score higher (a heavier
tail): this measures time and memory, not quality, which `faceaudit eval` measures on lfw-dev.

Stages, each timed with its peak resident memory (sampled):
- ``knn``: the k-NN graph (``knn_graph``) through ``--search``: the name of an index
  type of indexer/ann.py (``pq-rerank``, ``flat``: its VectorSearch's ``knn``, what
  ``faceaudit cluster`` uses), ``exact`` (IndexFlatIP over all faces), or ``ivf`` (an IVF
  partition over float16 codes, nlist = 4 sqrt(N), for comparison: no index type uses it);
- exact k-NN on a sample of queries, to extrapolate the exact graph (N^2) and measure the
  share of the exact graph's edges ``--search`` finds;
- ``agglomerate``: the guarded merging of the graph, and the planted identities' scores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from faceaudit.indexer.ann import VectorSearch
from faceaudit.models.calibration_files import load_calibration
from faceaudit.models.packs import buffalo_s
from faceaudit.research.clustering.agglomeration import agglomerate, number_by_size
from faceaudit.research.clustering.cluster import DEFAULT_K
from faceaudit.research.clustering.graph import Graph, NeighbourSearch, knn_graph
from faceaudit.research.clustering.graph import neighbour_search as graph_neighbour_search
from faceaudit.research.clustering.threshold import default_threshold
from faceaudit.research.metrics.clustering import cluster_scores

DIMENSION = 512
CHUNK = 65_536


@contextmanager
def peak_rss(into: dict[str, float], name: str) -> Iterator[None]:
    """Record in ``into`` the block's seconds (wall and CPU), the process's peak resident
    memory (GiB, sampled every 20 ms from /proc: it counts the pages of the memory-mapped
    store read so far, and FAISS's own allocations) and the peak of what Python and numpy
    allocated in it (tracemalloc: the clustering's own arrays)."""
    page = os.sysconf("SC_PAGE_SIZE")
    peak, done = [0], threading.Event()
    cpu = time.process_time()

    def sample() -> None:
        while not done.is_set():
            with open("/proc/self/statm") as stream:
                peak[0] = max(peak[0], int(stream.read().split()[1]) * page)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        into[f"{name}_numpy_peak_gib"] = round(tracemalloc.get_traced_memory()[1] / 2**30, 3)
        tracemalloc.stop()
        into[f"{name}_s"] = round(time.perf_counter() - started, 2)
        into[f"{name}_cpu_s"] = round(time.process_time() - cpu, 2)
        done.set()
        sampler.join()
        into[f"{name}_peak_gib"] = round(peak[0] / 2**30, 2)


def planted_faces(path: Path, faces: int, singletons: float, seed: int
                  ) -> tuple[np.memmap, np.ndarray]:
    """The float16 store at ``path`` and each face's planted identity."""
    rng = np.random.default_rng(seed)
    alone = int(faces * singletons)
    sizes: list[int] = [1] * alone
    left = faces - alone
    while left > 0:
        size = int(min(left, 500, 1 + rng.zipf(2.0)))
        sizes.append(size)
        left -= size
    owner = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16,
                                      shape=(faces, DIMENSION))
    centres = np.empty((len(sizes), DIMENSION), np.float32)
    for start in range(0, len(sizes), CHUNK):
        block = rng.standard_normal((min(CHUNK, len(sizes) - start), DIMENSION),
                                    dtype=np.float32)
        centres[start:start + len(block)] = block / np.linalg.norm(block, axis=1,
                                                                   keepdims=True)
    for start in range(0, faces, CHUNK):
        rows = owner[start:start + CHUNK]
        noise = rng.standard_normal((len(rows), DIMENSION), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        weight = rng.uniform(0.75, 0.9, size=(len(rows), 1)).astype(np.float32)
        vectors = weight * centres[rows] + np.sqrt(1 - weight**2) * noise
        store[start:start + len(rows)] = vectors / np.linalg.norm(vectors, axis=1,
                                                                  keepdims=True)
    store.flush()
    return store, owner


class IvfSearch:
    """k-NN through IVF (inner product, float16 codes: the store's own precision),
    nlist = 4 sqrt(N), trained on a sample."""

    def __init__(self, store: np.ndarray, nprobe: int, seed: int) -> None:
        count = len(store)
        self.nlist = int(4 * np.sqrt(count))
        quantizer = faiss.IndexFlatIP(DIMENSION)
        self.index = faiss.IndexIVFScalarQuantizer(
            quantizer, DIMENSION, self.nlist, faiss.ScalarQuantizer.QT_fp16,
            faiss.METRIC_INNER_PRODUCT)
        sample = np.sort(np.random.default_rng(seed).choice(
            count, min(count, 40 * self.nlist), replace=False))
        self.index.train(np.asarray(store[sample], np.float32))
        for start in range(0, count, CHUNK):
            self.index.add(np.asarray(store[start:start + CHUNK], np.float32))
        self.index.nprobe = nprobe

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.index.search(queries, k)
        return scores, rows.astype(np.int64)


def neighbour_search(kind: str, store: np.ndarray, nprobe: int, seed: int
                     ) -> NeighbourSearch:
    if kind == "ivf":
        return IvfSearch(store, nprobe, seed)
    if kind == "exact":
        return graph_neighbour_search(VectorSearch.in_memory(store, "flat"))
    search = VectorSearch.in_memory(store, kind)
    if not hasattr(search, "knn"):
        raise SystemExit(f"VectorSearch has no knn for index type {kind!r} yet")
    return search  # type: ignore[return-value]


def exact_sample(store: np.ndarray, graph: Graph, k: int, threshold: float,
                 queries: int, seed: int) -> dict[str, float]:
    """Exact k-NN of ``queries`` sampled faces: seconds per query, and the share of their
    exact edges above ``threshold`` that ``graph`` holds."""
    count = len(store)
    rows = np.sort(np.random.default_rng(seed + 1).choice(count, queries, replace=False))
    query = np.asarray(store[rows], np.float32)
    started = time.perf_counter()
    blocks = (np.asarray(store[start:start + CHUNK], np.float32)
              for start in range(0, count, CHUNK))  # the store a block at a time
    scores, found = knn_ground_truth(query, blocks, k + 1, faiss.METRIC_INNER_PRODUCT)
    seconds = time.perf_counter() - started
    keep = (found >= 0) & (found != rows[:, None]) & (scores > threshold)
    left = np.broadcast_to(rows[:, None], found.shape)[keep]
    right = found[keep]
    exact_keys = np.minimum(left, right) * count + np.maximum(left, right)
    graph_keys = np.sort(graph.left.astype(np.int64) * count + graph.right)
    position = np.clip(np.searchsorted(graph_keys, exact_keys), 0, len(graph_keys) - 1)
    found_share = (float(np.mean(graph_keys[position] == exact_keys)) if len(exact_keys)
                   else float("nan"))
    return {"exact_s_per_query": seconds / queries, "graph_edge_recall": found_share}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"faces": args.faces, "k": args.k, "search": args.search,
                              "nprobe": args.nprobe, "cores": os.cpu_count()}
    with open("/proc/self/statm") as stream:  # what the process holds before any stage
        result["baseline_gib"] = round(int(stream.read().split()[1])
                                       * os.sysconf("SC_PAGE_SIZE") / 2**30, 2)
    calibration = load_calibration(buffalo_s())
    threshold = (args.threshold if args.threshold is not None
                 else default_threshold(calibration, args.faces))
    result["threshold"] = threshold
    with peak_rss(result, "generate"):
        store, owner = planted_faces(work / "vectors.npy", args.faces, args.singletons,
                                     args.seed)
    result["true_identities"] = int(len(np.unique(owner)))
    del store
    store = np.load(work / "vectors.npy", mmap_mode="r")  # as an index opens its store
    with peak_rss(result, "search_build"):
        search = neighbour_search(args.search, store, args.nprobe, args.seed)
    with peak_rss(result, "knn"):
        graph = knn_graph(store, args.k, threshold, search)
    del search
    result["edges"] = len(graph.score)
    result["edge_bytes"] = int(graph.left.nbytes + graph.right.nbytes + graph.score.nbytes)
    if args.exact_queries:
        with peak_rss(result, "exact_sample"):
            result.update(exact_sample(store, graph, args.k, threshold, args.exact_queries,
                                       args.seed))
        result["exact_knn_s_extrapolated"] = result["exact_s_per_query"] * args.faces
    with peak_rss(result, "agglomerate"):
        labels, sizes = number_by_size(agglomerate(graph))
    scores = cluster_scores(owner, labels)
    result.update(identities=int(len(sizes)), bcubed_f1=scores.bcubed_f1,
                  pairwise_f1=scores.pairwise_f1, identities_error=scores.identities_error)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--singletons", type=float, default=0.4,
                        help="share of faces whose person appears once")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--threshold", type=float, default=None,
                        help="default: clustering.threshold.default_threshold for this many faces")
    parser.add_argument("--search", default="pq-rerank",
                        help="an index type of indexer/ann.py (its knn), exact, or ivf")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--exact-queries", type=int, default=4000,
                        help="faces searched exactly to extrapolate the exact graph (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the vector store (default: a temporary one)")
    args = parser.parse_args()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        result = run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="cluster_scale.") as folder:
            result = run(args, Path(folder))
    print(json.dumps(result, indent=1))
    scale = 10_000_000 / args.faces
    # IVF with nlist ~ sqrt(N) and a fixed nprobe: each query costs ~ sqrt(N), all ~ N^1.5;
    # exact and pq-rerank scan every face for every query: N^2.
    growth = scale**1.5 if args.search == "ivf" else scale**2
    print(f"\n{args.faces:,} faces, {result['true_identities']:,} planted identities, "
          f"threshold {result['threshold']}, k {args.k}:")
    print(f"  {args.search} k-NN graph  {result['knn_s']:9.1f} s   peak "
          f"{result['knn_peak_gib']:.2f} GiB ({result['edges']:,} edges, "
          f"{result['edge_bytes'] / 2**20:.0f} MiB, numpy peak "
          f"{result['knn_numpy_peak_gib']:.2f} GiB; index built in "
          f"{result['search_build_s']:.1f} s, peak {result['search_build_peak_gib']:.2f} GiB)")
    if "exact_s_per_query" in result:
        print(f"  exact k-NN graph    {result['exact_knn_s_extrapolated']:9.1f} s   "
              f"(extrapolated from {args.exact_queries:,} queries); the {args.search} graph "
              f"holds {result['graph_edge_recall']:.4f} of the exact graph's edges")
    print(f"  agglomerate         {result['agglomerate_s']:9.1f} s   peak "
          f"{result['agglomerate_peak_gib']:.2f} GiB (numpy peak "
          f"{result['agglomerate_numpy_peak_gib']:.2f} GiB) -> {result['identities']:,} identities "
          f"(error {result['identities_error']:+.4f}), BCubed F1 {result['bcubed_f1']:.4f}, "
          f"pairwise F1 {result['pairwise_f1']:.4f}")
    print(f"At 10^7 faces (x{scale:g}): agglomerate about {result['agglomerate_s'] * scale:.0f} "
          f"s (near-linear in edges), {args.search} graph about "
          f"{result['knn_s'] * growth:.0f} s, "
          + (f"exact graph about {result['exact_knn_s_extrapolated'] * scale**2 / 3600:.0f} h"
             if "exact_s_per_query" in result else ""))


if __name__ == "__main__":
    main()
