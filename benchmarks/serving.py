"""Helpers of the service benchmarks (load.py, service_start.py): the demo collection's index,
a synthetic index of many faces around it, a real `faceaudit serve` process on 127.0.0.1, and
its resident memory."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceaudit.demo import DEMO_DATASET, MANIFEST_NAME, build_demo_collection
from faceaudit.indexer.publish import publish
from faceaudit.indexer.store import (
    FACES_DIR,
    IMAGE_SCHEMA,
    IMAGES_FILE,
    MANIFEST,
    SMALL_FACES_DIR,
    BoxTable,
    FaceTable,
    read_image_table,
    read_manifest,
    write_index_files,
)

CHUNK = 65_536
SYNTHETIC_FACE_IDS = 1 << 62


def demo_index(work: Path) -> tuple[Path, Path]:
    """(index folder, selfies folder) of the demo collection, built under ``work`` once."""
    photos, selfies = build_demo_collection(work / "photos", work / "selfies")
    index = work / "demo-index"
    if not (index / MANIFEST).is_file():
        from faceaudit.indexer.build import build_index
        from faceaudit.models.engine import FaceEngine
        from faceaudit.models.packs import resolve_pack

        build_index(photos / MANIFEST_NAME, index, FaceEngine(resolve_pack(), device="cpu"),
                    dataset=DEMO_DATASET)
    return index, selfies


def _synthetic_images(dataset: str, count: int) -> pa.Table:
    """One record per synthetic photo: a key after every real one (in row order: numbers
    zero-padded), one face, no file. Built column-wise, without a Python object per row."""
    numbers = pc.utf8_lpad(pc.cast(pa.array(np.arange(count)), pa.string()), 10, "0")
    columns = {
        "key": pc.binary_join_element_wise(f"{dataset}:synthetic:", numbers, ""),
        "ref": pc.binary_join_element_wise("synthetic/", numbers, ".jpg", ""),
        "status": pa.repeat("ok", count),
        "faces": pa.array(np.ones(count, np.int32)),
        "retry": pa.array(np.zeros(count, bool)),
        "dataset": pa.repeat(dataset, count),
    }
    return pa.Table.from_arrays(
        [columns.get(f.name, pa.nulls(count, f.type)) for f in IMAGE_SCHEMA],
        schema=IMAGE_SCHEMA)


def synthetic_index(base: Path, out: Path, faces: int, *, index_type: str = "auto",
                    seed: int = 0) -> float:
    """Publish at ``out`` the index ``base`` plus ``faces`` distractor faces: random unit
    vectors (float16), each the one face of a synthetic photo record without a file (they score
    about 0 against any real face: a search never returns one). Seconds taken."""
    started = time.perf_counter()
    manifest = read_manifest(base)
    dataset = str(manifest["dataset"]["name"])
    images = read_image_table(base / IMAGES_FILE)
    extra = _synthetic_images(dataset, faces)
    if images.num_rows and max(images.column("key").to_pylist()) >= extra["key"][0].as_py():
        raise SystemExit(f"{base}: its image keys do not all sort before the synthetic ones")
    base_vectors = np.load(base / "vectors.npy", mmap_mode="r")
    base_faces = FaceTable.load(base / FACES_DIR)
    total, dimension = len(base_vectors) + faces, base_vectors.shape[1]

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    scratch = out.with_name(f".{out.name}.vectors-{os.getpid()}.npy")
    vectors = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float16,
                                        shape=(total, dimension))
    vectors[: len(base_vectors)] = base_vectors
    rng = np.random.default_rng(seed)
    for start in range(len(base_vectors), total, CHUNK):
        block = rng.standard_normal((min(CHUNK, total - start), dimension), np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start:start + len(block)] = block
    first_image = images.num_rows
    face_table = FaceTable.concatenate([base_faces, FaceTable(
        image_id=np.arange(first_image, first_image + faces, dtype=np.int32),
        # Distinct, and apart from real faces' ids (63-bit hashes of their photo's key).
        face_id=np.arange(faces, dtype=np.int64) + SYNTHETIC_FACE_IDS,
        bbox=np.tile(np.array([10, 10, 110, 130], np.float32), (faces, 1)),
        landmarks=np.zeros((faces, 5, 2), np.float32),
        score=np.ones(faces, np.float32))])
    manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest["counts"] = {**manifest.get("counts", {}),
                          "images": first_image + faces, "faces": total}
    manifest["synthetic_distractors"] = faces
    try:
        write_index_files(staging, vectors=vectors, faces=face_table,
                          small_faces=BoxTable.load(base / SMALL_FACES_DIR),
                          images=pa.concat_tables([images, extra]), manifest=manifest,
                          index_type=index_type)
        del vectors
        publish(staging, out)
    finally:
        scratch.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return time.perf_counter() - started


def linked_copy(source: Path, out: Path, *, note: str | None = None) -> None:
    """``source`` at ``out`` with hard links (no data copied), and, with ``note``, a manifest
    of its own (a new file, so ``source``'s is untouched) that makes it another version."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out, copy_function=os.link)
    if note is not None:
        manifest = json.loads((out / MANIFEST).read_text())
        manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest["republished"] = note
        (out / MANIFEST).unlink()
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int, kind: str = "VmRSS") -> int:
    """Resident memory of a process (Linux): all of it (VmRSS), or its anonymous memory
    (RssAnon: what it allocated, without the pages of files it maps, which the system can drop
    and read again)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {kind} for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    ready_s: float  # from just before the process was started to the first 200 of /healthz

    def rss(self, kind: str = "VmRSS") -> int:
        return rss_bytes(self.process.pid, kind)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve(indexes: list[Path], log: Path, *, args: list[str] | None = None,
          env: dict[str, str] | None = None, timeout_s: float = 600) -> Iterator[Server]:
    """`faceaudit serve` over ``indexes`` in a process of its own on 127.0.0.1, its output in
    ``log``, per-client rate limits off, its state (removals, audit log) in a folder beside
    ``log`` rather than the user's own; stopped on exit."""
    base = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "faceaudit.cli", "serve", "--device", "cpu",
               "--port", base.rsplit(":", 1)[1], *(a for i in indexes for a in ("--index", str(i))),
               *(args or [])]
    state = log.with_name(f"{log.stem}-state")
    state.mkdir(mode=0o700, exist_ok=True)
    environment = {**os.environ, "FACEAUDIT_RATE_LIMIT": "", "FACEAUDIT_DAILY_LIMIT": "",
                   "FACEAUDIT_STATE_DIR": str(state), **(env or {})}
    with open(log, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   env=environment)
    try:
        ready_s = _wait_ready(base, process, started, timeout_s)
        yield Server(process, base, log, ready_s)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(base: str, process: subprocess.Popen[bytes], started: float,
                timeout_s: float) -> float:
    with httpx.Client(base_url=base, timeout=5) as http:
        while True:
            try:
                if http.get("/healthz").status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}")
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"the server did not answer /healthz within {timeout_s} s")
            time.sleep(0.01)
