"""Kept share, ms/search, resident bytes/face and build time of the searchable structures at
10^6 and 10^7 faces, beside exact search, in one run; for one-selfie queries and for templates
of 3 selfies; and where a pq-rerank search's time goes.

    nice python benchmarks/search_scale.py [--sizes 1000000,10000000] [--timing-queries 300]
        [--out benchmarks/results/search_scale.txt] [--keep-stores]

The index: every face of lfw-dev through faceaudit's pipeline (4,435 real faces) and honest
synthetic distractors up to the size (benchmarks/distractors.py), in a float16 vector store
(benchmarks/.cache/store-N.npy: 1 GB at 10^6, 10 GB at 10^7; deleted at the end unless
--keep-stores; regenerated from a fixed seed). The queries: every labelled face of a person
with two photos or more, embedded as a selfie is (2,484), each searching every other photo:
the faces of its own photo are left out of what is counted. Template queries: every person
with 4 such photos or more, 3 of them drawn (seeded) as the selfies and fused as the service
fuses them (``fuse_template``), searching the person's other photos (the 3 photos left out).

Kept share: of the (query, face) pairs exact search returns strictly above the threshold, the
share a structure returns, at the pack's operating threshold for the index's size and the
template searched (``Calibration.for_template(k).operating_threshold``), at its floor
(``min_threshold``: what an operator may search at) and, for one selfie, at the base threshold
0.375. Exact results are computed by a chunked scan of the float16 store (the queries
batched): a float32 IndexFlatIP at 10^7 would need 20 GB.

ms/search: one search at a time (a single query runs on one core in FAISS; the machine has
two), median and 99th percentile of the wall time and the mean CPU time, on the first
--timing-queries queries at the operating threshold and at the floor; the exact baseline is
timed the same way, one query per chunked scan of the store. The baseline of the re-rank is
the one before this benchmark's last change (``PreviousRerank``: numpy's float16 conversion
into fresh arrays, a new scan at each widening), timed in the same run.

Where the time goes (pq-rerank at its default depth): the fast scan at k = depth and 4 depth,
re-scoring the depth's candidates (numpy against FAISS's fp16 scorer), and how many searches
widened or scanned again.

Resident bytes/face: what the structure holds in RAM (codes, vectors, list ids); the store the
re-rank reads is memory-mapped (page cache). Build time: training and adding, plus, for
pq-rerank, the manifest's kept share measured at build.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).parent))
from distractors import CACHE, RealFaces, fit_mixture, load_real_faces, write_store  # noqa: E402
from search_breakdown import PreviousRerank, Queries, time_breakdown, timed  # noqa: E402

from faceaudit.indexer import ann, exact  # noqa: E402
from faceaudit.models.calibration import Calibration  # noqa: E402
from faceaudit.models.calibration_files import calibration_path  # noqa: E402
from faceaudit.models.packs import buffalo_s  # noqa: E402
from faceaudit.models.templates import fuse_template  # noqa: E402

BASE_THRESHOLD = 0.375
TEMPLATE_SELFIES = 3
TEMPLATE_SEED = 15
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


def single_queries(faces: RealFaces) -> Queries:
    """Every labelled face of a person with two photos or more, as a selfie."""
    photos = faces.query_photos()
    return Queries("1 selfie", faces.query[photos],
                   [set(np.flatnonzero(faces.image == photo).tolist()) for photo in photos])


def template_queries(faces: RealFaces) -> Queries:
    """For every person with TEMPLATE_SELFIES + 1 query photos or more: a template of
    TEMPLATE_SELFIES of them (seeded), their faces left out of what is counted."""
    photos = faces.query_photos()
    rng = np.random.default_rng(TEMPLATE_SEED)
    vectors, own = [], []
    for person in np.unique(faces.identity[photos]):
        mine = photos[faces.identity[photos] == person]
        if len(mine) <= TEMPLATE_SELFIES:
            continue
        chosen = rng.choice(mine, TEMPLATE_SELFIES, replace=False)
        vectors.append(fuse_template(list(faces.query[chosen])))
        own.append(set(np.flatnonzero(np.isin(faces.image, chosen)).tolist()))
    return Queries(f"{TEMPLATE_SELFIES} selfies", np.array(vectors, np.float32), own)


@dataclass
class QuerySet:
    """Queries, the thresholds they are measured at (operating, floor[, base]) and what exact
    search returns above each."""

    queries: Queries
    thresholds: list[float]
    truth: dict[float, Rows] = field(default_factory=dict)


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


@dataclass
class Run:
    """One size's run: its store, query sets, and the table being printed."""

    size: int
    path: Path
    store: NDArray[np.float16]
    sets: list[QuerySet]
    timing: int
    report: Report
    exact_ms: float = 0.0

    def row(self, name: str, search: ann.VectorSearch, build: float, ids: int = 0,
            sets: int | None = None) -> None:
        for number, query_set in enumerate(self.sets[:sets]):
            self.set_row(name if number == 0 else "", search, build, ids, query_set)

    def set_row(self, name: str, search: ann.VectorSearch, build: float, ids: int,
                query_set: QuerySet) -> None:
        queries = query_set.queries
        shares = []
        for t in query_set.thresholds:
            share, _, missing = (1.0, 0, 0) if search.exact else kept_share(
                query_set.truth[t], lambda q, t=t: set(search.range_search(q, t)[1].tolist()),
                queries)
            shares.append(f"{share:.5f} ({missing})")
        walls, cpu = [], []
        for t in query_set.thresholds[:2]:  # operating, floor
            wall, cpu_ms = timed(lambda q, t=t: search.range_search(q, t),
                                 queries.vectors[:self.timing])
            walls.append(wall)
            cpu.append(cpu_ms)
        times = "".join(f"{np.median(w):8.1f}{np.percentile(w, 99):7.1f}" for w in walls)
        self.report(f"{name:40}{queries.name:>10}  {'  '.join(shares):48}{times}"
                    f"{cpu[0]:7.1f}{np.median(walls[0]) / self.exact_ms:9.4f}"
                    f"{ann.resident_bytes_per_face(search.index) + ids:7.0f}{build:8.0f}")


HEADER = (f"{'structure':40}{'queries':>10}  "
          f"{'kept share (missing): operating, floor[, base]':48}"
          f"{'ms median, p99: operating, floor':>30}{'cpu ms':>7}{'x exact':>9}{'B/face':>7}"
          f"{'build s':>8}")


def exact_row(run: Run) -> None:
    count = EXACT_TIMING_QUERIES.get(run.size, 10)
    single = run.sets[0]
    wall, cpu = timed(lambda q: exact.exact_range_search(
        run.store, q[None], single.thresholds[0], chunk=262_144),
        single.queries.vectors[:count])
    run.exact_ms = float(np.median(wall))
    run.report(f"{'exact, chunked float16 scan (' + str(count) + ' timed)':40}{'':10}  "
               f"{'exact by construction':48}{run.exact_ms:8.0f}{np.percentile(wall, 99):7.0f}"
               f"{'':15}{cpu:7.1f}{1.0:9.4f}{0:7d}{0:8.0f}")

def flat_row(run: Run) -> None:
    clock = time.perf_counter()
    flat = ann.VectorSearch.in_memory(run.store, "flat")
    run.row("flat (IndexFlatIP, float32 in RAM)", flat, time.perf_counter() - clock)


def pq_rerank_rows(run: Run) -> tuple[faiss.Index, dict]:
    """pq-rerank as ``ann`` builds it, at several depths, and the previous re-rank at the
    default depth; the structure and its manifest section."""
    clock = time.perf_counter()
    index, info = ann.build_search_index(run.store, "pq-rerank",
                                         threshold=run.sets[0].thresholds[0])
    built = time.perf_counter() - clock
    run.report(f"   pq-rerank manifest: {info}")
    depth = int(info["rerank_depth"])
    run.report(f"   pq-rerank re-scores {depth:,} rows of the store per search ({depth:,} KB, "
               f"on up to {depth:,} pages of 4 KB): the figures below are with the store in "
               f"the page cache ({run.store.nbytes / 2**30:.1f} GiB)")
    run.row(f"{info['faiss']} + re-rank {depth}, previous re-rank",
            PreviousRerank(index, run.store, info), built)
    for factor in DEPTH_FACTORS:
        chosen = int(depth * factor)
        run.row(f"{info['faiss']} + re-rank {chosen}" + (" (ann default)" if factor == 1 else ""),
                ann.VectorSearch(index, run.store, {**info, "rerank_depth": chosen}), built,
                sets=None if factor == 1 else 1)
    return index, info


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
                ann.VectorSearch(ivf, run.store, info), built, ids=8, sets=1)


def run_size(size: int, faces: RealFaces, query_sets: list[Queries], calibration: Calibration,
             timing: int, report: Report, keep: bool, ivf: bool) -> None:
    path = CACHE / f"store-{size}.npy"
    store = write_store(path, faces.vectors, size, fit_mixture(faces.fit_faces()))
    clock = time.perf_counter()
    sets = []
    for queries, selfies in zip(query_sets, (1, TEMPLATE_SELFIES), strict=True):
        template = calibration.for_template(selfies)
        thresholds = [template.operating_threshold(size), template.min_threshold(size)]
        sets.append(QuerySet(queries, thresholds + ([BASE_THRESHOLD] if selfies == 1 else [])))
        sets[-1].truth = exact_truth(store, queries, sets[-1].thresholds)
    run = Run(size, path, store, sets, timing, report)
    report(f"\n== {size:,} faces ({len(faces.vectors):,} real); ground truth by a chunked "
           f"float16 scan, batched: {time.perf_counter() - clock:.0f} s")
    for query_set in sets:
        names = ("operating", "floor", "base")[:len(query_set.thresholds)]
        report(f"   {query_set.queries.name}: {len(query_set.queries.vectors):,} queries; "
               + "; ".join(f"{n} {t}" for n, t in zip(names, query_set.thresholds, strict=True)))
        for t in query_set.thresholds:
            pairs = sum(len(rows) for rows in query_set.truth[t])
            strangers = sum(sum(1 for r in rows if r >= len(faces.vectors))
                            for rows in query_set.truth[t])
            report(f"      exact above {t}: {pairs:,} (query, face) pairs, {strangers} of them "
                   f"distractors")
    report(f"   load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} (other jobs share "
           f"the {os.cpu_count()} cores: compare CPU ms)")
    report(HEADER)
    exact_row(run)
    if size <= FLAT_MAX:
        flat_row(run)
    index, info = pq_rerank_rows(run)
    time_breakdown(index, store, info, sets, timing, report)
    if ivf:
        ivf_rows(run, int(info["rerank_depth"]))
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
    parser.add_argument("--no-ivf", action="store_true", help="leave the IVF rows out")
    args = parser.parse_args()
    report = Report(args.out)
    faces = load_real_faces(args.lfw)
    calibration = Calibration.from_file(calibration_path(buffalo_s()))
    report(f"search_scale: {os.cpu_count()} cores, faiss {faiss.__version__}, "
           f"{time.strftime('%Y-%m-%d %H:%M')}; kept share over (query, face) pairs, "
           f"ms/search one query at a time on the first {args.timing_queries} queries")
    for size in (int(s) for s in args.sizes.split(",")):
        run_size(size, faces, [single_queries(faces), template_queries(faces)], calibration,
                 args.timing_queries, report, args.keep_stores, not args.no_ivf)


if __name__ == "__main__":
    main()
