"""Memory and time of building an index from embedding shards (`build_from_embeddings`), at
1M or 10M faces, beside the in-memory merge faceaudit used before (same shards, same run).

    python benchmarks/build_scale.py --faces 1000000 [--index-type flat] [--no-baseline]
    nice python benchmarks/build_scale.py --faces 10000000 --index-type auto --no-baseline

Synthetic staging folder, as a scan leaves it: shards of 1,000 images (records with Flickr-
style provenance, 0-4 faces each, ~2 on average, 1 % failed, some small faces) with random
unit vectors (float16). Each build runs in a child process and, as faceaudit's builds do,
deletes the staging folder once the index is written; reported: wall time, peak RSS
(the child's ru_maxrss, which counts resident file-backed pages of memory maps too, and the
peaks of RssAnon and RssFile sampled every 0.1 s), the final index's bytes on disk, and peak
RSS / index bytes. Everything written is deleted at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from faceaudit.indexer.ann import VECTOR_STORE
from faceaudit.indexer.from_embeddings import build_from_embeddings
from faceaudit.indexer.merge import SELECTION_SCHEMA
from faceaudit.indexer.shards import VECTORS_FILE, shard_name, write_shard
from faceaudit.indexer.staging import (
    BUILD_FILE,
    MANIFEST_BASE,
    SHARDS_DIR,
    ScanRecord,
    finish_scan,
    write_json,
)
from faceaudit.indexer.store import (
    FACES_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_SCHEMA,
    IMAGES_FILE,
    SMALL_FACES_DIR,
    BoxTable,
    FaceTable,
    read_image_table,
    write_index_files,
)

DATASET = "synthetic"


def _records(rng: np.random.Generator, first: int, faces: np.ndarray) -> pa.Table:
    count = len(faces)
    # Unique photo ids in no relation to the shards' order, as real keys are (a bijection of
    # the image number modulo 10^10).
    ids = [str(10**10 + (first + i) * 2_654_435_761 % 10**10) for i in range(count)]
    users = [f"{rng.integers(10**7, 10**8)}@N0{rng.integers(0, 9)}" for _ in range(count)]
    failed = rng.random(count) < 0.01
    status = np.where(failed, "failed", np.where(faces > 0, "ok", "no_face"))
    digests = [rng.bytes(32).hex() for _ in range(count)]
    columns = {
        "key": [f"{DATASET}:{i}" for i in ids],
        "ref": [f"{(first + i) // 10_000:05d}.tar/{first + i:09d}.jpg" for i in range(count)],
        "status": status.tolist(),
        "path": [f"{(first + i) // 10_000:05d}.tar" for i in range(count)],
        "offset": rng.integers(0, 2**30, count).tolist(),
        "size": rng.integers(20_000, 400_000, count).tolist(),
        "width": rng.integers(320, 2048, count).tolist(),
        "height": rng.integers(240, 1536, count).tolist(),
        "bytes": rng.integers(20_000, 400_000, count).tolist(),
        "faces": np.where(failed, 0, faces).tolist(),
        "error": [("example.jpg is corrupt: the decoder failed" if f else None) for f in failed],
        "retry": [False] * count,
        "enriched": [None] * count,
        "dataset": [DATASET] * count,
        "photo_id": ids,
        "page_url": [f"https://www.flickr.com/photos/{u}/{i}/" for u, i in zip(users, ids,
                                                                                strict=True)],
        "image_url": [f"https://farm{int(i) % 9 + 1}.staticflickr.com/{int(i) % 9000}/{i}_"
                      f"{d[:10]}_b.jpg" for i, d in zip(ids, digests, strict=True)],
        "uploader_id": users,
        "uploader_name": [f"photographer {u[:5]}" for u in users],
        "title": [f"Holiday picture {i[-4:]}" for i in ids],
        "licence_name": ["Attribution-NonCommercial-ShareAlike License"] * count,
        "licence_url": ["http://creativecommons.org/licenses/by-nc-sa/2.0/"] * count,
        "date_taken": ["2009-07-14 18:23:05.0"] * count,
        "date_uploaded": ["2009-07-20T11:02:41+00:00"] * count,
        "sha256": digests,
        "source_record": [f"{(first + i) // 10_000:05d}.tar/{first + i:09d}" for i in range(count)],
    }
    return pa.table(columns).cast(IMAGE_SCHEMA)


def write_staging(staging: Path, faces_wanted: int, dimension: int, shard_images: int,
                  seed: int = 0) -> int:
    """A staging folder whose scan is complete, holding about ``faces_wanted`` faces."""
    rng = np.random.default_rng(seed)
    (staging / SHARDS_DIR).mkdir(parents=True)
    images = faces = number = 0
    keys, shards = [], []
    while faces < faces_wanted:
        counts = rng.integers(0, 5, shard_images)  # 0..4 faces, 2 on average
        counts = counts[: max(1, int(np.searchsorted(np.cumsum(counts), faces_wanted - faces,
                                                     side="left")) + 1)]
        table = _records(rng, images, counts)
        counts = np.asarray(table.column("faces").to_numpy(), np.int64)
        total = int(counts.sum())
        vectors = rng.standard_normal((total, dimension), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        image_id = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        face_table = FaceTable(image_id, rng.integers(0, 2**63 - 1, total, dtype=np.int64),
                               rng.random((total, 4), np.float32) * 500,
                               rng.random((total, 5, 2), np.float32) * 500,
                               rng.random(total, np.float32))
        small_image = np.flatnonzero(rng.random(len(counts)) < 0.1).astype(np.int32)
        small = BoxTable(small_image, rng.random((len(small_image), 4), np.float32) * 500)
        name = shard_name(number)
        write_shard(staging / SHARDS_DIR / name, table, face_table, small, vectors)
        keys.append(table.column("key"))
        shards.append(pa.array([name] * len(counts), pa.string()))
        images, faces, number = images + len(counts), faces + total, number + 1
    selection = pa.table({"key": pa.chunked_array(keys), "shard": pa.chunked_array(shards)},
                         schema=SELECTION_SCHEMA)
    finish_scan(staging, selection, ScanRecord(coverage={"rows": images, "downloaded": images,
                                                         "not_downloaded": {}, "malformed": 0,
                                                         "malformed_examples": []}))
    write_json(staging / BUILD_FILE, {"synthetic": True})
    write_json(staging / MANIFEST_BASE, {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created": None,
        "model_pack": {"name": "synthetic", "files": {}, "licence": None},
        "embedding": {"dimension": dimension, "metric": "cosine", "normalised": True},
        "index": {}, "detection": {}, "dataset": {"name": DATASET, "root": "/nowhere",
                                                  "kind": "webdataset"},
        "source": {}, "coverage": {}, "enrichment": {}, "counts": {}, "failure_reasons": {}})
    return faces


def build_in_memory(staging: Path, out: Path, index_type: str) -> None:
    """The merge as faceaudit did it before the streaming build: every shard's images, faces
    and float32 vectors concatenated in memory, a Python dict of keys, whole arrays written."""
    shards = sorted(p for p in (staging / SHARDS_DIR).iterdir() if not p.name.startswith("."))
    tables, face_tables, small_tables, vectors = [], [], [], []
    offset = 0
    for shard in shards:
        table = read_image_table(shard / IMAGES_FILE)
        faces = FaceTable.load(shard / FACES_DIR)
        small = BoxTable.load(shard / SMALL_FACES_DIR)
        faces.image_id = faces.image_id.astype(np.int64) + offset
        small.image_id = small.image_id.astype(np.int64) + offset
        offset += table.num_rows
        tables.append(table)
        face_tables.append(faces)
        small_tables.append(small)
        vectors.append(np.load(shard / VECTORS_FILE).astype(np.float32))
    images = pa.concat_tables(tables)
    faces, small = FaceTable.concatenate(face_tables), BoxTable.concatenate(small_tables)
    all_vectors = np.concatenate(vectors).astype(np.float32, copy=False)
    del vectors
    last_row = {key: row for row, key in enumerate(images.column("key").to_pylist())}
    rows = np.array(list(last_row.values()), np.int64)
    keys = np.array(images.column("key").to_pylist(), dtype=object)
    rows = rows[np.argsort(keys[rows], kind="stable")]
    new_id = np.full(images.num_rows, -1, np.int64)
    new_id[rows] = np.arange(len(rows))

    def kept(table: FaceTable | BoxTable) -> tuple[np.ndarray, np.ndarray]:
        image = new_id[table.image_id]
        order = np.flatnonzero(image >= 0)
        order = order[np.argsort(image[order], kind="stable")]
        return order, image[order]

    face_rows, face_image = kept(faces)
    small_rows, small_image = kept(small)
    new_faces, new_small = faces.take(face_rows), small.take(small_rows)
    new_faces.image_id, new_small.image_id = face_image.astype(np.int32), \
        small_image.astype(np.int32)
    manifest = json.loads((staging / MANIFEST_BASE).read_text())
    out.mkdir()
    write_index_files(out, vectors=all_vectors[face_rows], faces=new_faces,
                      small_faces=new_small, images=images.take(pa.array(rows)),
                      manifest=manifest, index_type=index_type)
    shutil.rmtree(staging)  # as the build did once published


def same_index(a: Path, b: Path, sample: int = 10_000) -> bool:
    """Same images (every column), faces, small faces; vectors equal on a sample of rows."""
    if not read_image_table(a / IMAGES_FILE).equals(read_image_table(b / IMAGES_FILE)):
        return False
    for folder, table in ((FACES_DIR, FaceTable), (SMALL_FACES_DIR, BoxTable)):
        left, right = table.load(a / folder, mmap=True), table.load(b / folder, mmap=True)
        if not all(np.array_equal(getattr(left, name), getattr(right, name))
                   for name in left.__dataclass_fields__):
            return False
    left, right = (np.load(x / VECTOR_STORE, mmap_mode="r") for x in (a, b))
    rows = np.random.default_rng(1).integers(0, len(left), min(sample, len(left)))
    return left.shape == right.shape and bool(np.array_equal(left[np.sort(rows)],
                                                             right[np.sort(rows)]))


def child(mode: str, staging: Path, out: Path, index_type: str) -> None:
    started = time.perf_counter()
    if mode == "streaming":
        build_from_embeddings(staging, out, index_type=index_type)
    else:
        build_in_memory(staging, out, index_type)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds,
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def _status(pid: int) -> dict[str, int]:
    values = {}
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "RssAnon", "RssFile"):
                    values[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return values


def measure(mode: str, staging: Path, out: Path, index_type: str) -> dict[str, float]:
    process = subprocess.Popen([sys.executable, __file__, "--child", mode, "--staging",
                                str(staging), "--out", str(out), "--index-type", index_type],
                               stdout=subprocess.PIPE, text=True)
    peaks = {"RssAnon": 0, "RssFile": 0}

    def sample() -> None:
        while process.poll() is None:
            for name, value in _status(process.pid).items():
                if name in peaks:
                    peaks[name] = max(peaks[name], value)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{mode} build failed ({process.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {**result, "anon": peaks["RssAnon"], "file": peaks["RssFile"], "index": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--dimension", type=int, default=512)
    parser.add_argument("--shard-images", type=int, default=1000)
    parser.add_argument("--index-type", default=None,
                        help="default: flat up to 2M faces, auto above")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the in-memory merge (it needs ~7x the vectors' float16 bytes)")
    parser.add_argument("--work", type=Path, default=None, help="where to write (default: /tmp)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", choices=("streaming", "in-memory"))
    parser.add_argument("--staging", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    index_type = args.index_type or ("flat" if args.faces <= 2_000_000 else "auto")
    if args.child:
        child(args.child, args.staging, args.out, index_type)
        return
    work = Path(tempfile.mkdtemp(prefix="faceaudit-build-scale-", dir=args.work))
    try:
        clock = time.perf_counter()
        staging = work / ".index.building"
        faces = write_staging(staging, args.faces, args.dimension, args.shard_images)
        shard_bytes = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        print(f"{faces:,} faces in {len(list((staging / SHARDS_DIR).iterdir())):,} shards "
              f"({shard_bytes / 2**30:.2f} GiB), written in {time.perf_counter() - clock:.0f} s; "
              f"index type {index_type}; {os.cpu_count()} cores")
        rows = []
        if not args.no_baseline:  # on a copy of the staging made of hard links: it deletes it
            linked = work / ".before.building"
            shutil.copytree(staging, linked, copy_function=os.link)
            rows.append(("in-memory (before)", measure("in-memory", linked, work / "before",
                                                       index_type)))
        rows.append(("streaming", measure("streaming", staging, work / "index", index_type)))
        if not args.no_baseline:
            print("same index as the in-memory merge:", same_index(work / "before",
                                                                   work / "index"))
            shutil.rmtree(work / "before")
        vectors = (work / "index" / VECTOR_STORE).stat().st_size
        built = json.loads((work / "index" / "manifest.json").read_text())["index"]
        print(f"index: {built['type']} ({built['faiss']}), "
              f"{built.get('resident_bytes_per_face')} bytes/face in RAM, "
              f"{ {k: v for k, v in built.items() if k.startswith('kept')} }")
        print(f"{'build':<20} {'seconds':>8} {'peak RSS':>9} {'anon':>8} {'file':>8} "
              f"{'index':>8} {'peak/index':>10}")
        for name, row in rows:
            print(f"{name:<20} {row['seconds']:8.1f} {row['maxrss'] / 2**30:8.2f}G "
                  f"{row['anon'] / 2**30:7.2f}G {row['file'] / 2**30:7.2f}G "
                  f"{row['index'] / 2**30:7.2f}G {row['maxrss'] / row['index']:10.2f}")
        if len(rows) == 2:
            before, after = rows[0][1], rows[1][1]
            print(f"streaming / in-memory: time {after['seconds'] / before['seconds']:.2f}x, "
                  f"peak RSS {after['maxrss'] / before['maxrss']:.2f}x")
        print(f"(vectors.npy {vectors / 2**30:.2f} GiB; RSS peaks sampled every 0.1 s)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
