"""Load test of the service: concurrent clients posting real selfies to a real uvicorn
`faceaudit serve` on 127.0.0.1, with a new index published at the served path half-way (hot
swap), against the same server's single-client searches/s measured first in the same run.

    python benchmarks/load.py [--faces 1000000] [--clients 32] [--seconds 60]
                              [--index INDEX] [--work DIR] [--replicas N --threads N]

Without --index it builds (once, kept in --work for the next run) the demo collection's index
plus --faces synthetic distractor faces (random unit vectors, each the one face of a synthetic
photo record; see serving.synthetic_index). The selfies are the demo's, so every search finds
the demo's real photos among the distractors. The server serves a hard-linked copy of the
index; the hot swap publishes another (its manifest rewritten), so nothing is copied.

Runs one client (--baseline-seconds), then all clients (--warmup-seconds, then --seconds, the
measured run). Prints: requests, failed requests (any answer but 200, or no answer),
searches/s and p50/p99 latency of one client and of all, their ratio, the CPU the server got
(on a shared machine, searches per core-second compare better than searches/s), the server's
RSS and anonymous RSS (without mapped files' pages) at start, after warm-up, at the end and at
its peak, and their growth from warm-up to the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from serving import Server, demo_index, linked_copy, serve, synthetic_index

from faceaudit.indexer.publish import publish
from faceaudit.indexer.store import MANIFEST
from faceaudit.service.engines import cores

GIB = 2**30


@dataclass
class Run:
    """What the clients saw: per request its end time, latency and outcome; and the server's
    CPU seconds meanwhile."""

    started: float
    server_cpu: float = 0.0
    ended: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    matched: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, latency: float, failure: str | None, matched: bool) -> None:
        with self.lock:
            self.ended.append(time.perf_counter())
            self.latency.append(latency)
            self.matched += matched
            if failure is not None:
                self.failures.append(failure)

    @property
    def requests(self) -> int:
        return len(self.latency)

    def per_second(self) -> float:
        ok = self.requests - len(self.failures)
        return ok / (max(self.ended) - self.started) if self.ended else 0.0

    def cores(self) -> float:
        """The server's CPU seconds per second: how many cores it got."""
        return self.server_cpu / (max(self.ended) - self.started) if self.ended else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latency, q)) if self.latency else float("nan")


def client(base: str, selfies: list[tuple[str, bytes]], until: float, run: Run,
           offset: int) -> None:
    with httpx.Client(base_url=base, timeout=300) as http:
        turn = offset
        while time.perf_counter() < until:
            name, data = selfies[turn % len(selfies)]
            turn += 1
            started = time.perf_counter()
            failure, matched = None, False
            try:
                response = http.post("/api/search", files={"selfie": (name, data, "image/jpeg")})
                if response.status_code != 200:
                    failure = f"{response.status_code} {response.text[:200]}"
                else:
                    matched = bool(response.json()["matches"])
            except httpx.HTTPError as error:
                failure = f"{type(error).__name__}: {error}"
            run.record(time.perf_counter() - started, failure, matched)


def load(server: Server, selfies: list[tuple[str, bytes]], clients: int, seconds: float,
         during: list[tuple[float, threading.Event]] | None = None) -> Run:
    """``clients`` threads searching for ``seconds``; each (fraction, event) of ``during`` is
    set when that fraction of the time has passed."""
    cpu = server.cpu()
    run = Run(time.perf_counter())
    until = run.started + seconds
    threads = [threading.Thread(target=client, args=(server.base, selfies, until, run, i))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for fraction, event in during or []:
        time.sleep(max(0.0, run.started + fraction * seconds - time.perf_counter()))
        event.set()
    for thread in threads:
        thread.join()
    run.server_cpu = server.cpu() - cpu
    return run


def sample_rss(server: Server, stop: threading.Event, peak: list[int]) -> None:
    while not stop.wait(0.25):
        try:
            peak[0] = max(peak[0], server.rss())
            peak[1] = max(peak[1], server.rss("RssAnon"))
        except (OSError, RuntimeError):
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000,
                        help="synthetic distractor faces beside the demo's (without --index)")
    parser.add_argument("--index", type=Path, help="serve this index instead of building one "
                        "(it is not modified: a hard-linked copy is served)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--baseline-seconds", type=float, default=15,
                        help="the single client's run, first")
    parser.add_argument("--warmup-seconds", type=float, default=10,
                        help="all clients, before the server's memory is read 'after warm-up'")
    parser.add_argument("--index-type", default="auto", help="of the synthetic index")
    parser.add_argument("--replicas", type=int, help="engine replicas of the server")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per replica")
    parser.add_argument("--no-swap", action="store_true", help="publish no index mid-run")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "faceaudit-load")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    demo, selfie_folder = demo_index(args.work)
    source = args.index
    if source is None:
        source = args.work / f"index-{args.faces}-{args.index_type}"
        if not (source / MANIFEST).is_file():
            seconds = synthetic_index(demo, source, args.faces, index_type=args.index_type)
            print(f"built {source}: {args.faces:,} synthetic faces + the demo's in "
                  f"{seconds:.0f} s")
    served, upcoming = args.work / "served", args.work / ".served-next"
    linked_copy(source, served, note=None)
    linked_copy(source, upcoming, note="load test hot swap")
    selfies = [(p.name, p.read_bytes()) for p in sorted(selfie_folder.iterdir())]

    options = [f"--{name}={value}" for name in ("replicas", "threads")
               if (value := getattr(args, name)) is not None]
    with serve([served], args.work / "server.log", args=options) as server:
        rss_start = (server.rss(), server.rss("RssAnon"))
        single = load(server, selfies, 1, args.baseline_seconds)
        # Every replica and thread warmed up before memory is read (a single client uses one).
        load(server, selfies, args.clients, args.warmup_seconds)
        rss_warm = (server.rss(), server.rss("RssAnon"))
        swap, stop, peak = threading.Event(), threading.Event(), list(rss_warm)
        sampler = threading.Thread(target=sample_rss, args=(server, stop, peak))
        sampler.start()
        swapped_at: list[float] = []

        def publish_when_told() -> None:
            if swap.wait(args.seconds * 2):
                swapped_at.append(time.perf_counter())
                publish(upcoming, served)

        publisher = threading.Thread(target=publish_when_told)
        publisher.start()
        many = load(server, selfies, args.clients, args.seconds,
                    during=None if args.no_swap else [(0.5, swap)])
        swap.set()  # with --no-swap: nothing left to wait for
        publisher.join()
        stop.set()
        sampler.join()
        rss_end = (server.rss(), server.rss("RssAnon"))
        log = server.log_text()
    layout = next((line for line in log.splitlines() if "engine replicas" in line), "?")
    swapped = "now serving the index published" in log

    print(f"server: {layout.split(': ', 1)[-1]}; ready in {server.ready_s:.1f} s")
    manifest = json.loads((source / MANIFEST).read_text())
    print(f"index: {source}: {manifest['counts']['faces']:,} faces, searchable structure "
          f"{manifest['index'].get('faiss', manifest['index'].get('type'))}")
    print(f"{'clients':>8} {'requests':>9} {'failed':>7} {'matched':>8} {'searches/s':>11} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'server cores':>13} {'per core-s':>11}")
    for count, run in ((1, single), (args.clients, many)):
        print(f"{count:>8} {run.requests:>9} {len(run.failures):>7} {run.matched:>8} "
              f"{run.per_second():>11.2f} {run.percentile(50) * 1000:>8.0f} "
              f"{run.percentile(99) * 1000:>8.0f} {run.cores():>13.2f} "
              f"{run.per_second() / max(run.cores(), 1e-9):>11.2f}")
    print(f"searches/s, {args.clients} clients / 1 client: "
          f"{many.per_second() / max(single.per_second(), 1e-9):.2f}x (of {cores()} cores; "
          f"server cores = its CPU seconds per second, what it got of the machine)")
    if not args.no_swap:
        print(f"hot swap: published at {swapped_at[0] - many.started:.1f} s of "
              f"{args.seconds:.0f}; {'served' if swapped else 'NOT served'} before the end")
    for name, at in (("RSS", 0), ("anonymous RSS", 1)):
        print(f"server {name}: start {rss_start[at] / GIB:.2f} GiB, after warm-up "
              f"{rss_warm[at] / GIB:.2f}, end {rss_end[at] / GIB:.2f}, peak {peak[at] / GIB:.2f};"
              f" growth warm-up to end {(rss_end[at] / rss_warm[at] - 1) * 100:+.1f} %")
    for failure in sorted(set(many.failures + single.failures))[:10]:
        print(f"failure: {failure}")


if __name__ == "__main__":
    main()
