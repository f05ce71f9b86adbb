"""The batched (CUDA) indexing path against the per-photo path, on LFW, in the same run.

    python benchmarks/gpu_speed.py --device cuda [--lfw ../shared/data/lfw-dev] [--limit 0]
    python benchmarks/gpu_speed.py --device cpu --limit 300      # the batching overhead on a CPU

Both run `faceaudit index`'s pipeline (read, decode, detect, align, embed; no index writing) on
the same photos with the same buffalo_s files. "per-photo" is the engine with batching off (one
detector run per photo, recognizer batches of 32); "batched" is the engine as ``--device`` makes
it (on CUDA: photos detected in batches at fixed shapes, crops of up to 256 photos per
recognizer run); on a CPU a third row runs the batched path with the CUDA batch size. Prints
images/s, faces/s, each row's ratio to per-photo, and whether both found the same faces
(counts per photo, lowest cosine between their embeddings). A warm-up pass on the first photos
(cuDNN picks its algorithms once per input shape) is not timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from faceaudit.indexer.face_inference import ProcessedImage
from faceaudit.indexer.pipeline import process_images
from faceaudit.indexer.readers.folder import scan_folder
from faceaudit.indexer.stage_times import StageTimes
from faceaudit.models.engine import GPU_BATCH, FaceEngine
from faceaudit.models.packs import buffalo_s


def run(engine: FaceEngine, root: Path, paths: list[str], workers: int
        ) -> tuple[float, list[ProcessedImage], StageTimes]:
    times = StageTimes()
    started = time.perf_counter()
    results = list(process_images(engine, root, paths, workers=workers, times=times))
    return time.perf_counter() - started, results, times


def agreement(reference: list[ProcessedImage], other: list[ProcessedImage]) -> str:
    differing = sum(len(a.faces) != len(b.faces) for a, b in zip(reference, other, strict=True))
    cosines = [float(np.min(np.sum(a.vectors * b.vectors, axis=1)))
               for a, b in zip(reference, other, strict=True)
               if len(a.faces) == len(b.faces) and len(a.faces)]
    return f"{differing} photos differ in face count, lowest cosine {min(cosines, default=1):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--lfw", type=Path, default=Path(__file__).parents[2] / "shared" /
                        "data" / "lfw-dev")
    parser.add_argument("--limit", type=int, default=0, help="LFW photos to use (0: all)")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="decoding threads (default: one per core)")
    args = parser.parse_args()
    if not args.lfw.is_dir():
        sys.exit(f"no LFW folder at {args.lfw}: give --lfw")
    paths = [p for p, _ in scan_folder(args.lfw)]
    paths = paths[: args.limit] if args.limit else paths

    pack = buffalo_s()
    engines = {"per-photo": FaceEngine(pack, device=args.device, batched=False, batch_size=32),
               "batched": FaceEngine(pack, device=args.device, batched=True)}
    if engines["batched"].device == "cpu":
        engines[f"batched-{GPU_BATCH}"] = FaceEngine(pack, device="cpu", batched=True,
                                                     batch_size=GPU_BATCH)
    print(f"device {engines['batched'].device} ({engines['batched'].providers[0]}), "
          f"{os.cpu_count()} cores, {args.workers} decoding threads, {len(paths)} LFW photos")
    print(f"{'path':<12} {'batch':>5} {'images':>6} {'faces':>6} {'img/s':>8} {'faces/s':>8} "
          f"{'ratio':>6}  busy s: decode / detect / embed")
    best: dict[str, tuple[float, list[ProcessedImage], StageTimes]] = {}
    for name, engine in engines.items():
        run(engine, args.lfw, paths[: min(len(paths), 2 * engine.batch_size)], args.workers)
        best[name] = min((run(engine, args.lfw, paths, args.workers)
                          for _ in range(args.repeat)), key=lambda r: r[0])
        seconds, results, times = best[name]
        faces = sum(len(r.faces) for r in results)
        ratio = best["per-photo"][0] / seconds
        print(f"{name:<12} {engine.batch_size:>5} {len(paths):>6} {faces:>6} "
              f"{len(paths) / seconds:>8.1f} {faces / seconds:>8.1f} {ratio:>5.2f}x  "
              f"{times.read_decode:.1f} / {times.detect:.1f} / {times.embed:.1f}")
    for name in list(engines)[1:]:
        print(f"{name} against per-photo: {agreement(best['per-photo'][1], best[name][1])}")


if __name__ == "__main__":
    main()
