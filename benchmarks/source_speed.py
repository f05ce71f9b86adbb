"""Build throughput by source kind: the same photos indexed from a folder, from img2dataset
webdataset shards and from a CSV manifest, one after the other in the same run; then a
rebuild with nothing changed (the incremental path).

    python benchmarks/source_speed.py [--lfw ../shared/data/lfw-dev] [--limit 1500]

The shards are written as img2dataset writes them (``{key}.jpg`` + ``{key}.json`` with a
Flickr-style URL per sample, 1,000 samples per tar). Timing covers `build_index` whole:
reading, decoding, detection, embedding, shards, merge and publish, not model loading.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from faceaudit.indexer.build import build_index
from faceaudit.indexer.readers import open_source
from faceaudit.indexer.readers.folder import scan_folder
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import buffalo_s


def write_shards(root: Path, paths: list[str], out: Path, per_shard: int = 1000) -> None:
    out.mkdir(parents=True)
    for shard, start in enumerate(range(0, len(paths), per_shard)):
        with tarfile.open(out / f"{shard:05d}.tar", "w") as tar:
            for offset, path in enumerate(paths[start:start + per_shard]):
                key = f"{shard:05d}{offset:04d}"
                meta = {"url": f"https://live.staticflickr.com/1/{10**6 + start + offset}_ab_z.jpg",
                        "key": key, "status": "success", "caption": path}
                for name, data in ((f"{key}.jpg", (root / path).read_bytes()),
                                   (f"{key}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw-dev"))
    parser.add_argument("--limit", type=int, default=1500)
    args = parser.parse_args()
    paths = [p for p, _ in scan_folder(args.lfw)][: args.limit]
    work = Path(tempfile.mkdtemp(prefix="faceaudit-sources-"))
    try:
        folder = work / "photos"
        for path in paths:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.lfw / path, folder / path)
        with open(folder / "manifest.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["file", "author"])
            writer.writerows([p, p.split("/")[0]] for p in paths)
        write_shards(folder, paths, work / "shards")
        engine = FaceEngine(buffalo_s(), device="cpu")
        runs = {"folder": folder, "webdataset": work / "shards",
                "manifest": folder / "manifest.csv"}
        rates = {}
        print(f"{len(paths)} LFW photos; 2 decode threads, one engine replica per core")
        print(f"{'source':<12} {'images':>7} {'faces':>6} {'seconds':>8} {'img/s':>7}")
        for name, source in runs.items():
            summary = build_index(open_source(source), work / f"index-{name}", engine)
            rates[name] = summary.images_per_second
            print(f"{name:<12} {summary.images:>7} {summary.faces:>6} {summary.seconds:>8.1f} "
                  f"{rates[name]:>7.1f}")
        again = build_index(open_source(work / "shards"), work / "index-webdataset", engine)
        print(f"{'rebuild':<12} {again.images:>7} {again.faces:>6} {again.seconds:>8.1f} "
              f"(nothing changed: {again.reused_images} reused, {again.processed} processed)")
        for name in ("webdataset", "manifest"):
            print(f"{name} / folder images/s: {rates[name] / rates['folder']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
