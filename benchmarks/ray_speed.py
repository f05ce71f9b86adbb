"""Images/s of `faceaudit index --ray` (a local Ray, one single-threaded engine per core) beside
the single-host build (one engine replica per core), on the same LFW photos, in one run.

Ray's services listen on every interface, so this runs only in a private network namespace
holding just the loopback interface:

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/ray_speed.py \
        [--lfw ../shared/data/lfw-dev] [--limit 300] [--unit-size 50]'

Both timings cover the whole build (reading, decoding, detection, embedding, shards, merge,
publish) after the driver's models are loaded; the Ray one also covers starting the actors
(each loads its models), not starting Ray itself, which is printed apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from faceaudit.indexer.build import build_index
from faceaudit.indexer.distributed import build_index_on_ray
from faceaudit.indexer.readers import open_source
from faceaudit.indexer.readers.folder import scan_folder
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import buffalo_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw-dev"))
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--unit-size", type=int, default=50)
    args = parser.parse_args()
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        raise SystemExit("run this in a private network namespace (see the docstring): a local "
                         "Ray listens on every interface")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    paths = [p for p, _ in scan_folder(args.lfw)][: args.limit]
    work = Path(tempfile.mkdtemp(prefix="faceaudit-ray-speed-"))
    try:
        photos = work / "photos"
        for path in paths:
            (photos / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.lfw / path, photos / path)
        engine = FaceEngine(buffalo_s(), device="cpu")
        single = build_index(open_source(photos), work / "single", engine)
        clock = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False,
                 _node_ip_address="127.0.0.1", _temp_dir=str(work / "ray"), log_to_driver=False)
        started = time.perf_counter() - clock
        try:
            distributed = build_index_on_ray(open_source(photos), work / "ray-index", engine,
                                             device="cpu", unit_size=args.unit_size)
        finally:
            ray.shutdown()
        print(f"{len(paths)} LFW photos, {os.cpu_count()} cores, units of {args.unit_size}")
        print(f"{'build':<12} {'images':>6} {'faces':>6} {'seconds':>8} {'images/s':>9}")
        for name, summary in (("single host", single), ("ray", distributed)):
            print(f"{name:<12} {summary.processed:>6} {summary.faces:>6} "
                  f"{summary.seconds:8.1f} {summary.images_per_second:9.1f}")
        print(f"ray / single host images/s: "
              f"{distributed.images_per_second / single.images_per_second:.2f}x "
              f"(starting Ray itself: {started:.1f} s, not counted)")
        working = distributed.processed / (distributed.seconds - distributed.startup_seconds)
        print(f"ray once its {os.cpu_count()} workers had loaded "
              f"their models ({distributed.startup_seconds:.1f} s): {working:.1f} images/s, "
              f"{working / single.images_per_second:.2f}x the single host")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
