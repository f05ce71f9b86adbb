"""faceaudit and its peers side by side: same photos, same evaluation protocol, one run.

    bash benchmarks/peers/setup.sh                  # once: the peers' own environments
    python benchmarks/compare_peers.py [DATASET] [--pairs PAIRS] [--models PACK ...]

DATASET defaults to ../shared/data/lfw-dev with its pairs file. Each peer (dlib through
face_recognition; OpenCV YuNet + SFace int8; the naive InsightFace loop) runs in its own
environment as a subprocess that writes the faces it found to an .npz file; faceaudit runs in
this process. Then `faceaudit.research.evaluation.protocol.run_eval`, the protocol of
`faceaudit eval`, scores every system on the same images. One table: verification accuracy,
1:N recall at FPIR <= 1 %, images/s (decode + detect + embed, model loading excluded), photos
without a face. The systems run one after another, so their timings share the machine's conditions.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import resolve_pack
from faceaudit.research.evaluation.dataset import (
    Dataset,
    ExtractedFaces,
    extract_with_engine,
    load_dataset,
)
from faceaudit.research.evaluation.protocol import run_eval
from faceaudit.research.metrics.pairs import parse_pairs

HERE = Path(__file__).parent
PEERS = HERE / "peers"
VENVS = PEERS / ".venvs"
PEER_RUNS = {  # name: (python, script)
    "dlib (face_recognition)": (VENVS / "dlib" / "bin" / "python", "dlib_face_recognition.py"),
    "OpenCV YuNet+SFace int8": (VENVS / "opencv4" / "bin" / "python", "opencv_yunet_sface.py"),
    "InsightFace naive loop": (Path(sys.executable), "insightface_naive.py"),
}


def load_npz(path: Path) -> tuple[dict[str, ExtractedFaces], float]:
    with np.load(path, allow_pickle=False) as data:
        paths = [str(p) for p in data["paths"]]
        offsets, boxes, vectors = data["offsets"], data["boxes"], data["vectors"]
        widths, heights = data["widths"], data["heights"]
        seconds = float(data["seconds"])
    extracted = {}
    for i, path in enumerate(paths):
        rows = slice(int(offsets[i]), int(offsets[i + 1]))
        extracted[path] = ExtractedFaces(boxes[rows], vectors[rows], int(widths[i]),
                                         int(heights[i]))
    return extracted, seconds


def run_peer(name: str, dataset: Path, out: Path) -> tuple[dict[str, ExtractedFaces], float]:
    python, script = PEER_RUNS[name]
    if not python.exists():
        raise FileNotFoundError(f"{python} is missing: run `bash benchmarks/peers/setup.sh`")
    subprocess.run([str(python), str(PEERS / script), str(dataset), "--out", str(out)],
                   check=True, cwd=PEERS, stdout=subprocess.DEVNULL)
    return load_npz(out)


# Each system's scores live on its own scale (dlib's cosines of same-person pairs sit near 0.95),
# so every system is swept over the whole range for its recall at FPIR <= 1 %.
SWEEP = np.round(np.arange(0.0, 0.995, 0.005), 3)


def row(name: str, dataset, extracted, pairs, seconds: float) -> str:
    report = run_eval(dataset, extracted, pairs, thresholds=SWEEP)
    best = report.search.recall_at_fpir_1pct
    accuracy = report.verification.accuracy if report.verification else float("nan")
    recall = f"{best['recall']:.4f} @ {best['threshold']:.3f}" if best else "n/a"
    images = len(dataset.paths)
    return (f"{name:<28} {accuracy:>9.4f} {recall:>17} {images / seconds:>8.1f} "
            f"{report.no_face_images:>8}")


def main() -> None:
    default = Path(__file__).parents[2] / "shared" / "data" / "lfw-dev"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, nargs="?", default=default)
    parser.add_argument("--pairs", type=Path, default=None)
    parser.add_argument("--models", action="append", default=[],
                        help="another InsightFace pack folder for faceaudit (repeatable)")
    parser.add_argument("--skip", action="append", default=[], help="a peer to leave out")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the peers' .npz files in this folder; with --reuse, score "
                        "files already there instead of running the peers again")
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    pairs_file = args.pairs or next(iter(sorted(args.dataset.glob("pairs*.txt"))), None)
    pairs = parse_pairs(pairs_file.read_text()) if pairs_file else None
    dataset = load_dataset(args.dataset.resolve())
    print(f"{len(dataset.paths)} photos, {len(dataset.identities)} identities, pairs: "
          f"{pairs_file}")
    print(f"{'system':<28} {'verif acc':>9} {'recall@FPIR<=1%':>17} {'img/s':>8} {'no face':>8}")
    for pack_name in [None, *args.models]:
        engine = FaceEngine(resolve_pack(pack_name), device="cpu")
        started = time.perf_counter()  # timed: what `faceaudit index` computes
        extracted = extract_with_engine(engine, dataset, embed_selfies=False)
        seconds = time.perf_counter() - started
        # untimed: the selfies embedded as `faceaudit search` embeds them
        selfies = Dataset(dataset.root, {n: p[:1] for n, p in dataset.identities.items()})
        for path, faces in extract_with_engine(engine, selfies).items():
            extracted[path] = replace(extracted[path], query_vectors=faces.query_vectors)
        print(row(f"faceaudit ({engine.pack.name})", dataset, extracted, pairs, seconds),
              flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for name in PEER_RUNS:
            if any(skip.lower() in name.lower() for skip in args.skip):
                continue
            out = folder / f"{PEER_RUNS[name][1].removesuffix('.py')}.npz"
            if args.reuse and out.is_file():
                extracted, seconds = load_npz(out)
            else:
                extracted, seconds = run_peer(name, dataset.root, out)
            print(row(name, dataset, extracted, pairs, seconds), flush=True)


if __name__ == "__main__":
    main()
