"""Kept share, ms/search, resident bytes/face and build time of the searchable structures at
10^6 and 10^7 faces, beside exact search, in one run.

    nice python benchmarks/search_scale.py [--sizes 1000000,10000000] [--timing-queries 300]
        [--out benchmarks/results/search_scale.txt] [--keep-stores]

The index: every face of lfw-dev through faceaudit's pipeline (4,435 real faces) and honest
synthetic distractors up to the size (benchmarks/distractors.py), in a float16 vector store
(benchmarks/.cache/store-N.npy: 1 GB at 10^6, 10 GB at 10^7; deleted at the end unless
--keep-stores; regenerated from a fixed seed). The queries: every labelled face of a person
with two photos or more, embedded as a selfie is (2,484), each searching every other photo:
the faces of its own photo are left out of what is counted.

Kept share: of the (query, face) pairs exact search returns strictly above the threshold, the
share a structure returns, at the pack's operating threshold for the index's size
(``Calibration.operating_threshold``) and at its base threshold 0.375. Exact results are
computed by a chunked scan of the float16 store (the queries batched): a float32 IndexFlatIP
at 10^7 would need 20 GB. ms/search: one search at a time (a single query runs on one core in
FAISS; the machine has two), wall and CPU time, on the first --timing-queries queries at the
operating threshold; the exact baseline is timed the same way, one query per chunked scan of
the store. Resident bytes/face: what the structure holds in RAM (codes, vectors, list ids);
the store the re-rank reads is memory-mapped (page cache). Build time: training and adding,
plus, for pq-rerank, the manifest's kept share measured at build.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).parent))
from distractors import CACHE, RealFaces, fit_mixture, load_real_faces, write_store  # noqa: E402

from faceaudit.indexer import ann, exact  # noqa: E402
from faceaudit.models.calibration import Calibration  # noqa: E402
from faceaudit.models.calibration_files import calibration_path  # noqa: E402
from faceaudit.models.packs import buffalo_s  # noqa: E402

BASE_THRESHOLD = 0.375
EXACT_TIMING_QUERIES = {1_000_000: 20, 10_000_000: 5}
# IVF: 1,024 lists (k-means, 10 iterations on 64 points per list; an exhaustive assignment of
# 10^7 vectors to 4,096 lists takes ~15 min on 2 cores, and an HNSW over the centroids
# misassigns enough vectors to lose 6 % of the pairs whatever the probing), probing 1/16 and
# 1/4 of them, the same 4-bit fast-scan codes in the lists and the same exact re-rank.
IVF_LISTS = 1024
IVF_FACTORY = f"IVF{IVF_LISTS},PQ64x4fs"
IVF_TRAIN = IVF_LISTS * 64
IVF_TRAIN_ITERATIONS = 10
IVF_PROBES = (64, 256)
FLAT_MAX = 1_000_000  # IndexFlatIP measured up to this size (float32 in RAM: 2 GB at 10^6)
DEPTH_FACTORS = (0.25, 1, 4)
Rows = list[set[int]]


class Report:
    """Lines printed as they come and written to a file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as stream:
                stream.write(line + "\n")


@dataclass
class Queries:
    vectors: NDArray[np.float32]
    own: list[set[int]]  # rows of the faces of each query's own photo


def exact_truth(store: NDArray[np.float16], queries: Queries, thresholds: list[float]
                ) -> dict[float, Rows]:
    found = exact.exact_range_search(store, queries.vectors, min(thresholds))
    return {t: [set(rows[scores > t].tolist()) - own for (scores, rows), own
                in zip(found, queries.own, strict=True)] for t in thresholds}


def kept_share(truth: Rows, search: Callable[[NDArray[np.float32]], set[int]],
               queries: Queries) -> tuple[float, int, int]:
    """(kept share, pairs exact finds, queries that miss any)."""
    found = kept = missing = 0
    for query, expected in zip(queries.vectors, truth, strict=True):
        got = len(expected & search(query))
        found, kept, missing = found + len(expected), kept + got, missing + (got < len(expected))
    return kept / max(found, 1), found, missing


def timed(search: Callable[[NDArray[np.float32]], object], queries: NDArray[np.float32]
          ) -> tuple[float, float]:
    """(wall ms, CPU ms) per search, one at a time."""
    search(queries[0])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for query in queries:
        search(query)
    count = len(queries)
    return ((time.perf_counter() - wall) * 1000 / count,
            (time.process_time() - cpu) * 1000 / count)


@dataclass
class Run:
    """One size's run: its store, queries, exact results and the table being printed."""

    size: int
    path: Path
    store: NDArray[np.float16]
    queries: Queries
    thresholds: list[float]  # operating, base
    truth: dict[float, Rows]
    timing: int
    report: Report
    exact_ms: float = 0.0

    def row(self, name: str, search: ann.VectorSearch, build: float, ids: int = 0) -> None:
        shares = [(1.0, 0), (1.0, 0)]  # exact by construction: not searched twice more
        for number, t in enumerate(self.thresholds if not search.exact else []):
            share, _, missing = kept_share(
                self.truth[t], lambda q, t=t: set(search.range_search(q, t)[1].tolist()),
                self.queries)
            shares[number] = (share, missing)
        operating = self.thresholds[0]
        ms, cpu = timed(lambda q: search.range_search(q, operating),
                        self.queries.vectors[:self.timing])
        self.report(f"{name:44}{shares[0][0]:11.5f}{shares[1][0]:11.5f}{ms:10.2f}{cpu:8.2f}"
                    f"{ms / self.exact_ms:9.4f}"
                    f"{ann.resident_bytes_per_face(search.index) + ids:8.0f}{build:9.0f}"
                    f"   (queries missing any: {shares[0][1]}, {shares[1][1]})")


def exact_row(run: Run) -> None:
    count = EXACT_TIMING_QUERIES.get(run.size, 10)
    run.exact_ms, cpu = timed(lambda q: exact.exact_range_search(
        run.store, q[None], run.thresholds[0], chunk=262_144), run.queries.vectors[:count])
    run.report(f"{'exact, chunked float16 scan (' + str(count) + ' timed)':44}{1.0:11.4f}"
               f"{1.0:11.4f}{run.exact_ms:10.1f}{cpu:8.1f}{1.0:9.3f}{0:8d}{0:9.0f}")


def flat_row(run: Run) -> None:
    clock = time.perf_counter()
    flat = ann.VectorSearch.in_memory(run.store, "flat")
    run.row("flat (IndexFlatIP, float32 in RAM)", flat, time.perf_counter() - clock)


def pq_rerank_rows(run: Run) -> int:
    """pq-rerank as ``ann`` builds it, at several depths; its default depth."""
    clock = time.perf_counter()
    index, info = ann.build_search_index(run.store, "pq-rerank", threshold=run.thresholds[0])
    built = time.perf_counter() - clock
    run.report(f"   pq-rerank manifest: {info}")
    depth = int(info["rerank_depth"])
    run.report(f"   pq-rerank reads {depth:,} rows of the store per search ({depth:,} KB, on "
               f"up to {depth:,} pages of 4 KB): the figures below are with the store in the "
               f"page cache ({run.store.nbytes / 2**30:.1f} GiB)")
    for factor in DEPTH_FACTORS:
        chosen = int(depth * factor)
        run.row(f"{info['faiss']} + re-rank {chosen}" + (" (ann default)" if factor == 1 else ""),
                ann.VectorSearch(index, run.store, {**info, "rerank_depth": chosen}), built)
    return depth


def ivf_rows(run: Run, depth: int) -> None:
    clock = time.perf_counter()
    ivf = faiss.index_factory(run.store.shape[1], IVF_FACTORY, faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(ivf).cp.niter = IVF_TRAIN_ITERATIONS
    rows = np.sort(np.random.default_rng(ann.SEED).choice(run.size, min(run.size, IVF_TRAIN),
                                                           replace=False))
    ivf.train(np.asarray(run.store[rows], np.float32))
    for start in range(0, run.size, ann.ADD_CHUNK):
        ivf.add(np.asarray(run.store[start:start + ann.ADD_CHUNK], np.float32))
    built = time.perf_counter() - clock
    info = {"type": "pq-rerank", "rerank_depth": depth}
    for nprobe in IVF_PROBES:
        faiss.extract_index_ivf(ivf).nprobe = nprobe
        run.row(f"IVF{IVF_LISTS},PQ64x4fs nprobe {nprobe} + re-rank {depth}",
                ann.VectorSearch(ivf, run.store, info), built, ids=8)


def run_size(size: int, faces: RealFaces, queries: Queries, calibration: Calibration,
             timing: int, report: Report, keep: bool) -> None:
    operating = calibration.operating_threshold(size)
    thresholds = [operating, BASE_THRESHOLD]
    path = CACHE / f"store-{size}.npy"
    store = write_store(path, faces.vectors, size, fit_mixture(faces.fit_faces()))
    clock = time.perf_counter()
    run = Run(size, path, store, queries, thresholds, exact_truth(store, queries, thresholds),
              timing, report)
    report(f"\n== {size:,} faces ({len(faces.vectors):,} real), {len(queries.vectors):,} "
           f"queries; operating threshold {operating} (calibration at {size:,} faces) and "
           f"{BASE_THRESHOLD}; ground truth by a chunked float16 scan, batched: "
           f"{time.perf_counter() - clock:.0f} s")
    for t in thresholds:
        pairs = sum(len(rows) for rows in run.truth[t])
        strangers = sum(sum(1 for r in rows if r >= len(faces.vectors)) for rows in run.truth[t])
        report(f"   exact above {t}: {pairs:,} (query, face) pairs, {strangers} of them "
               f"distractors")
    report(f"   load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} (other jobs share "
           f"the {os.cpu_count()} cores: compare CPU ms)")
    report(f"{'structure':44}{'kept@' + str(operating):>11}{'kept@0.375':>11}"
           f"{'ms/search':>10}{'cpu ms':>8}{'x exact':>9}{'B/face':>8}{'build s':>9}")
    exact_row(run)
    if size <= FLAT_MAX:
        flat_row(run)
    ivf_rows(run, pq_rerank_rows(run))
    if not keep:
        path.unlink()
        path.with_suffix(".done").unlink(missing_ok=True)
        report(f"   deleted {path} (regenerated from the seed on the next run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw-dev"))
    parser.add_argument("--timing-queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep-stores", action="store_true")
    args = parser.parse_args()
    report = Report(args.out)
    faces = load_real_faces(args.lfw)
    photos = faces.query_photos()
    queries = Queries(faces.query[photos],
                      [set(np.flatnonzero(faces.image == photo).tolist()) for photo in photos])
    calibration = Calibration.from_file(calibration_path(buffalo_s()))
    report(f"search_scale: {os.cpu_count()} cores, faiss {faiss.__version__}, "
           f"{time.strftime('%Y-%m-%d %H:%M')}; kept share over (query, face) pairs, "
           f"ms/search one query at a time on the first {args.timing_queries} queries")
    for size in (int(s) for s in args.sizes.split(",")):
        run_size(size, faces, queries, calibration, args.timing_queries, report,
                 args.keep_stores)


if __name__ == "__main__":
    main()
