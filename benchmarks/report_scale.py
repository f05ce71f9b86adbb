"""`faceaudit report` at scale, on a synthetic index (no photos, no models).

Writes an index of ``--faces`` faces (default 10^6) with ``store.write_index_files``: photos
with several faces, failures, too-small faces, Flickr-like licences and uploaders (a few with
many photos), and embeddings drawn around identity centres (a few people in many photos).
Then times ``make_report`` + ``write_report`` on it, with the synthetic identities given as the
clustering (clustering 10^6 faces exactly is faceaudit cluster's own cost, hours on 2 cores,
and measured by its own benchmark), and, as the baseline measured in the same run, one pass
of the per-row way: an ImageRecord per photo (``ImageTable.__iter__``), nothing computed.

    python benchmarks/report_scale.py [--faces 1000000] [--folder /tmp/faceaudit-report-scale]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from faceaudit.indexer.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_SCHEMA,
    IMAGES_FILE,
    STATUS_FAILED,
    STATUS_NO_FACE,
    STATUS_OK,
    BoxTable,
    FaceTable,
    ImageTable,
    write_index_files,
)
from faceaudit.research.clustering.cluster import Clustering
from faceaudit.research.report import make_report, write_report
from faceaudit.research.report.index_files import IndexFiles

DIMENSION = 512
CHUNK = 65_536
LICENCES = [  # YFCC100M's names, roughly in its proportions
    ("Attribution-NonCommercial-ShareAlike License",
     "http://creativecommons.org/licenses/by-nc-sa/2.0/", 0.34),
    ("Attribution-NonCommercial License", "http://creativecommons.org/licenses/by-nc/2.0/",
     0.17),
    ("Attribution-NonCommercial-NoDerivs License",
     "http://creativecommons.org/licenses/by-nc-nd/2.0/", 0.2),
    ("Attribution License", "http://creativecommons.org/licenses/by/2.0/", 0.15),
    ("Attribution-ShareAlike License", "http://creativecommons.org/licenses/by-sa/2.0/", 0.09),
    ("Attribution-NoDerivs License", "http://creativecommons.org/licenses/by-nd/2.0/", 0.04),
    ("No known copyright restrictions", "https://www.flickr.com/commons/usage/", 0.0005),
    ("United States Government Work", "http://www.usgovxml.com/", 0.0002),
    (None, None, 0.0093),
]


def synthetic_index(folder: Path, faces: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    images = max(1, int(faces / 2.2))
    # Faces per photo: none in 15 %, otherwise 1 + geometric; failures 1 %.
    per_image = np.where(rng.random(images) < 0.15, 0, rng.geometric(0.45, images))
    failed = rng.random(images) < 0.01
    per_image[failed] = 0
    scale = faces / max(1, per_image.sum())
    per_image = np.floor(per_image * scale + rng.random(images)).astype(np.int64)
    per_image[failed] = 0
    excess = int(per_image.sum()) - faces
    while excess != 0:  # nudge to the exact number of faces
        rows = np.flatnonzero(per_image > 0) if excess > 0 else np.flatnonzero(~failed)
        take = rng.choice(rows, min(abs(excess), len(rows)), replace=False)
        per_image[take] += -1 if excess > 0 else 1
        excess = int(per_image.sum()) - faces
    image_of_face = np.repeat(np.arange(images, dtype=np.int32), per_image)

    width = np.full(images, 1024, np.int32)
    height = np.full(images, 768, np.int32)
    short = np.clip(rng.lognormal(np.log(70), 0.7, faces), 16, 700).astype(np.float32)
    x1 = (rng.random(faces) * (1024 - np.minimum(short, 1000))).astype(np.float32)
    y1 = (rng.random(faces) * (768 - np.minimum(short, 760))).astype(np.float32)
    bbox = np.stack([x1, y1, x1 + short, y1 + short * 1.25], axis=1).astype(np.float32)
    table = FaceTable(image_of_face, rng.integers(0, 2**62, faces, dtype=np.int64), bbox,
                      np.zeros((faces, 5, 2), np.float32),
                      rng.uniform(0.5, 0.95, faces).astype(np.float32))
    small_count = faces // 3
    small_images = np.sort(rng.choice(np.flatnonzero(~failed), small_count)).astype(np.int32)
    small = BoxTable(small_images, np.tile(np.array([[5, 5, 15, 18]], np.float32),
                                           (small_count, 1)))

    # People: a Zipf-like number of faces each, so a few are in very many photos.
    identities = max(1, faces // 6)
    identity = ((rng.zipf(1.4, faces) - 1) % identities).astype(np.int64)
    centres = rng.standard_normal((identities, DIMENSION)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors_path = folder.parent / f".{folder.name}.vectors.npy"
    vectors = np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float16,
                                        shape=(faces, DIMENSION))
    for start in range(0, faces, CHUNK):
        chunk = centres[identity[start:start + CHUNK]] + 0.045 * rng.standard_normal(
            (len(identity[start:start + CHUNK]), DIMENSION)).astype(np.float32)
        vectors[start:start + CHUNK] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    vectors.flush()

    uploaders = max(1, images // 15)
    uploader = (rng.zipf(1.5, images) - 1) % uploaders
    choice = rng.choice(len(LICENCES), images, p=np.array([p for *_, p in LICENCES])
                        / sum(p for *_, p in LICENCES))
    status = np.where(failed, STATUS_FAILED, np.where(per_image > 0, STATUS_OK,
                                                      STATUS_NO_FACE))
    keys = [f"synthetic:{i:09d}" for i in range(images)]
    columns = {
        "key": keys, "ref": [f"{i:09d}.jpg" for i in range(images)], "status": status,
        "width": width, "height": height, "faces": per_image.astype(np.int32),
        "error": np.where(failed, "corrupt: decoding it failed (OSError: truncated)", None),
        "dataset": ["synthetic"] * images, "photo_id": [f"{i}" for i in range(images)],
        "uploader_id": [f"{u}@N0{u % 10}" for u in uploader],
        "uploader_name": [f"user{u}" for u in uploader],
        "licence_name": [LICENCES[c][0] for c in choice],
        "licence_url": [LICENCES[c][1] for c in choice],
        "sha256": [rng.bytes(32).hex() for _ in range(images)],
    }
    records = pa.table({name: pa.array(columns.get(name, [None] * images), field.type)
                        for name, field in zip(IMAGE_SCHEMA.names, IMAGE_SCHEMA, strict=True)})
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created": "synthetic",
        "model_pack": {"name": "synthetic", "files": {}},
        "embedding": {"dimension": DIMENSION, "metric": "cosine", "normalised": True},
        "index": {}, "dataset": {"name": "synthetic", "root": str(folder), "kind": "synthetic"},
        "coverage": {"rows": images + images // 50, "downloaded": images,
                     "not_downloaded": {"HTTP 404": images // 50}, "malformed": 0,
                     "indexed": int(images - failed.sum()), "failed": int(failed.sum()),
                     "duplicates": 0},
        "counts": {"images": images, "faces": faces, "small_faces": small_count},
        "failure_reasons": {"corrupt: decoding it failed (OSError: truncated)":
                            int(failed.sum())},
    }
    staging = folder.parent / f".{folder.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_index_files(staging, vectors=np.load(vectors_path, mmap_mode="r"), faces=table,
                      small_faces=small, images=records, manifest=manifest)
    np.save(staging / "synthetic_identity.npy", identity)
    vectors_path.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def given_identities(index: IndexFiles) -> Clustering:
    """The synthetic ground truth, as a clustering would give it."""
    labels = np.load(index.folder / "synthetic_identity.npy")
    sizes = np.bincount(labels)
    return Clustering(labels=labels, identities=int(np.count_nonzero(sizes)), sizes=sizes,
                      threshold=0.375, method="synthetic ground truth (benchmark)", k=0,
                      min_link=0.0, edges=0, seconds=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/faceaudit-report-scale"))
    parser.add_argument("--fresh", action="store_true", help="rebuild the synthetic index")
    args = parser.parse_args()
    folder = args.folder / f"index-{args.faces}"
    if args.fresh or not (folder / "manifest.json").is_file():
        started = time.perf_counter()
        synthetic_index(folder, args.faces)
        print(f"synthetic index written in {time.perf_counter() - started:.1f} s: {folder}")

    started = time.perf_counter()
    photos = sum(1 for _ in ImageTable(folder / IMAGES_FILE))
    naive = time.perf_counter() - started

    started = time.perf_counter()
    report = make_report([folder], cluster=given_identities)
    json_path, html_path = write_report(report, args.folder / "report")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"faces {report['faces']:,}  photos {report['images']:,}  identities "
          f"{report['identities_estimated']:,}  uploaders {report['uploaders']:,}  "
          f"withheld {len(report['suppressed'])}")
    print(f"report (figures + JSON + HTML, clustering given): {seconds:.2f} s; "
          f"peak RSS {peak:,.0f} MiB")
    print("stages (s): " + ", ".join(f"{name} {value:.2f}" for name, value
                                     in report["report"]["stage_seconds"].items()))
    print(f"baseline, one ImageRecord per photo ({photos:,}), nothing computed: {naive:.2f} s; "
          f"report / baseline {seconds / naive:.2f}x")
    print(f"written: {json_path} ({json_path.stat().st_size:,} bytes), {html_path} "
          f"({html_path.stat().st_size:,} bytes)")
    print(json.dumps({k: report[k] for k in ("images", "faces", "identities_estimated",
                                             "uploaders", "non_commercial_photos",
                                             "people_photographed_by_others")}))


if __name__ == "__main__":
    main()
