"""Seconds from starting `faceaudit serve` to its first 200 of /healthz, for an index folder,
and where they go (imports, models, each part of the index).

    python benchmarks/service_start.py --index INDEX [--repeat 3]
    python benchmarks/service_start.py --faces 1000000 [--index-type auto] [--work DIR]

With --faces it first builds (once, kept in --work) the demo collection's index plus that many
synthetic distractor faces (see serving.synthetic_index). The files are read as the system has
them cached: run it once to warm the page cache, or after `echo 3 > /proc/sys/vm/drop_caches`
on a machine of your own for a cold start.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from serving import demo_index, serve, synthetic_index

from faceaudit.indexer.store import MANIFEST

# Run in a fresh interpreter: each step's seconds, as the service does them at start-up.
BREAKDOWN = """
import json, sys, time
from pathlib import Path
times = {}
t = time.perf_counter()
import faceaudit.service.app
from faceaudit.indexer.ann import VectorSearch
from faceaudit.indexer.store import FACES_DIR, IMAGES_FILE, SMALL_FACES_DIR, BoxTable, \\
    FaceTable, ImageTable, read_manifest
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import resolve_pack
times["imports"] = time.perf_counter() - t
folder = Path(sys.argv[1])
t = time.perf_counter(); engine = FaceEngine(resolve_pack(), device="cpu", threads=1)
engine.replica(threads=1); times["models (2 replicas)"] = time.perf_counter() - t
t = time.perf_counter(); manifest = read_manifest(folder)
times["manifest"] = time.perf_counter() - t
t = time.perf_counter(); vectors = VectorSearch.load(folder, manifest["index"])
times["searchable structure (" + str(manifest["index"].get("type")) + ")"] = (
    time.perf_counter() - t)
t = time.perf_counter(); FaceTable.load(folder / FACES_DIR, mmap=True)
BoxTable.load(folder / SMALL_FACES_DIR, mmap=True); times["face tables (mmap)"] = (
    time.perf_counter() - t)
t = time.perf_counter(); images = ImageTable(folder / IMAGES_FILE); len(images)
times["image records (Parquet footer)"] = time.perf_counter() - t
print(json.dumps({"faces": vectors.ntotal, "images": len(images), "times": times}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="the index folder to serve")
    parser.add_argument("--faces", type=int, help="build one: this many synthetic faces")
    parser.add_argument("--index-type", default="auto", help="of the synthetic index")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "faceaudit-start")
    args = parser.parse_args()
    if (args.index is None) == (args.faces is None):
        parser.error("give --index or --faces")

    folder = args.index
    if folder is None:
        args.work.mkdir(parents=True, exist_ok=True)
        folder = args.work / f"index-{args.faces}-{args.index_type}"
        if not (folder / MANIFEST).is_file():
            demo, _ = demo_index(args.work)
            seconds = synthetic_index(demo, folder, args.faces, index_type=args.index_type)
            print(f"built {folder} in {seconds:.0f} s")
    log = Path(tempfile.gettempdir()) / "faceaudit-start-server.log"

    ready = []
    for _ in range(args.repeat):
        with serve([folder], log, args=["--replicas=2", "--threads=1"]) as server:
            ready.append(server.ready_s)
    parts = json.loads(subprocess.run([sys.executable, "-c", BREAKDOWN, str(folder)],
                                      check=True, capture_output=True, text=True).stdout)
    print(f"index {folder}: {parts['faces']:,} faces, {parts['images']:,} photos")
    print("seconds from start to the first 200 of /healthz: "
          + ", ".join(f"{s:.2f}" for s in ready) + f" (median {statistics.median(ready):.2f})")
    print("where they go, in a fresh interpreter:")
    for name, seconds in parts["times"].items():
        print(f"  {name:<36} {seconds:7.3f} s")


if __name__ == "__main__":
    main()
