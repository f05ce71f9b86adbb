"""Indexing speed: faceaudit's pipeline against the naive InsightFace loop, in the same run.

    python benchmarks/index_speed.py [--lfw ../shared/data/lfw-dev] [--limit N] [--repeat 2]

Two photo folders: LFW (250x250 photos, one face each, some with people behind) and a folder of
larger multi-face photos made here from package images (group and team photos at 1.3-2.4
megapixels). For each it prints images/s and faces/s of both, their ratio, the faces each
found, and the share of the machine's ceiling each reached (model multiply-accumulates per
image against numpy's measured matmul GFLOP/s). Both run the same buffalo_s files; timing
covers decoding, detection, alignment and embedding, not model loading.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "peers"))

from flops import matmul_gflops, model_macs  # noqa: E402
from insightface_naive import DET_SIZE  # noqa: E402
from insightface_naive import load as load_naive  # noqa: E402

from faceaudit.demo import astronaut, insightface_image, paste_small, vectron_image  # noqa: E402
from faceaudit.indexer.pipeline import process_images  # noqa: E402
from faceaudit.indexer.readers.folder import scan_folder  # noqa: E402
from faceaudit.indexer.stage_times import StageTimes  # noqa: E402
from faceaudit.models.engine import DetectionSettings, FaceEngine  # noqa: E402
from faceaudit.models.packs import buffalo_s  # noqa: E402


def make_multiface_folder(folder: Path, count: int = 48) -> Path:
    """Larger photos with several faces each, from package images (deterministic)."""
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    group = Image.open(insightface_image("t1.jpg")).convert("RGB")
    team = Image.open(vectron_image("players.jpg")).convert("RGB")
    gdp = Image.open(vectron_image("gdp.jpg")).convert("RGB")
    portrait = Image.open(vectron_image("yaoming.jpg")).convert("RGB")
    sources = [group, team, gdp, astronaut()]
    for i in range(count):
        base = sources[i % len(sources)]
        scale = 1.2 + 0.2 * (i % 5)
        photo = base.resize((int(base.width * scale), int(base.height * scale)),
                            Image.Resampling.BICUBIC)
        if i % 2:
            photo = ImageOps.mirror(photo)
        photo = paste_small(photo, portrait, width=60 + 10 * (i % 4), at=(30 + i, 30))
        photo.save(folder / f"multi_{i:03d}.jpg", quality=88)
    return folder


class MacCounter:
    def __init__(self) -> None:
        pack = buffalo_s()
        self.detector, self.recognizer = pack.detector.path, pack.recognizer.path
        self.per_face = model_macs(self.recognizer, 112, 112)
        self.cache: dict[tuple[int, int], int] = {}

    def detector_macs(self, width: int, height: int) -> int:
        if (width, height) not in self.cache:
            self.cache[(width, height)] = model_macs(self.detector, height, width)
        return self.cache[(width, height)]


def run_faceaudit(engine: FaceEngine, root: Path, paths: list[str], macs: MacCounter) -> dict:
    started = time.perf_counter()
    items = list(process_images(engine, root, paths, times=StageTimes()))
    seconds = time.perf_counter() - started
    faces = sum(len(item.faces) for item in items)
    total_macs = sum(
        macs.detector_macs(*size) for item in items if item.record.width
        for size in engine.detector_input_sizes(item.record.width, item.record.height)
    ) + faces * macs.per_face
    return {"seconds": seconds, "faces": faces, "macs": total_macs,
            "no_face": sum(1 for item in items if not item.faces)}


def run_naive(root: Path, paths: list[str], macs: MacCounter) -> dict:
    extractor = load_naive()
    started = time.perf_counter()
    found = [extractor.extract(root / path) for path in paths]
    seconds = time.perf_counter() - started
    faces = sum(len(f.boxes) for f in found)
    total_macs = len(paths) * macs.detector_macs(*DET_SIZE) + faces * macs.per_face
    return {"seconds": seconds, "faces": faces, "macs": total_macs,
            "no_face": sum(1 for f in found if len(f.boxes) == 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=Path(__file__).parents[2] / "shared" /
                        "data" / "lfw-dev")
    parser.add_argument("--limit", type=int, default=1500, help="LFW photos to use (0: all)")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/faceaudit-bench"))
    args = parser.parse_args()

    folders = {}
    if args.lfw.is_dir():
        paths = [p for p, _ in scan_folder(args.lfw)]
        folders["lfw"] = (args.lfw, paths[: args.limit] if args.limit else paths)
    else:
        print(f"(no LFW folder at {args.lfw}: skipped)")
    multi = make_multiface_folder(args.cache / "multiface")
    folders["multiface"] = (multi, [p for p, _ in scan_folder(multi)])

    ceiling = matmul_gflops()
    macs = MacCounter()
    engine = FaceEngine(buffalo_s(), device="cpu")
    engine640 = FaceEngine(buffalo_s(), device="cpu", detection=DetectionSettings(det_size=640))
    print(f"cores {os.cpu_count()}, numpy matmul ceiling {ceiling:.1f} GFLOP/s; recognizer "
          f"{macs.per_face / 1e9:.3f} GMAC/face, detector at 640x640 "
          f"{macs.detector_macs(*DET_SIZE) / 1e9:.3f} GMAC")
    header = (f"{'folder':<10} {'system':<10} {'images':>6} {'faces':>6} {'no face':>7} "
              f"{'img/s':>7} {'faces/s':>8} {'GFLOP/s':>8} {'ceiling':>7}")
    print(header)
    for name, (root, paths) in folders.items():
        results = {
            "naive": min((run_naive(root, paths, macs) for _ in range(args.repeat)),
                         key=lambda r: r["seconds"]),
            "faceaudit": min((run_faceaudit(engine, root, paths, macs)
                              for _ in range(args.repeat)), key=lambda r: r["seconds"]),
        }
        if name == "multiface":  # like for like: the naive loop's 640 px detector input
            results["fa-det640"] = min((run_faceaudit(engine640, root, paths, macs)
                                        for _ in range(args.repeat)), key=lambda r: r["seconds"])
        for system, r in results.items():
            gflops = 2 * r["macs"] / r["seconds"] / 1e9
            print(f"{name:<10} {system:<10} {len(paths):>6} {r['faces']:>6} {r['no_face']:>7} "
                  f"{len(paths) / r['seconds']:>7.1f} {r['faces'] / r['seconds']:>8.1f} "
                  f"{gflops:>8.1f} {gflops / ceiling:>7.0%}")
        for system in results.keys() - {"naive"}:
            ratio = results["naive"]["seconds"] / results[system]["seconds"]
            print(f"{name:<10} {system} / naive images/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
