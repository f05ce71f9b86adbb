"""Indexing on a Ray cluster (`faceaudit index SOURCE --out INDEX --ray`): a local cluster of
two worker processes gives the same index as the single-host build, and a resumed build
skips the units an earlier run finished.

Ray's services listen on every interface of their host; here the cluster runs in a private
network namespace holding only the loopback interface (made for this module's thread, and left
at the end), so nothing of it can be reached from outside 127.0.0.1. That needs
CAP_SYS_ADMIN, which the CI's root has; elsewhere the cluster's tests are skipped, saying so
(``tests.preconditions``).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.cli.index import bare_ray_flag
from faceaudit.indexer.build import build_index, scan_settings
from faceaudit.indexer.distributed import RayError, build_index_on_ray, plan_actors
from faceaudit.indexer.from_embeddings import manifest_base
from faceaudit.indexer.readers import open_source
from faceaudit.indexer.search import FaceIndex, search_selfie
from faceaudit.indexer.staging import prepare_staging, staging_folder
from faceaudit.indexer.units import UnitContext, process_unit, source_units
from faceaudit.models.engine import FaceEngine
from tests.img2dataset_fixtures import write_webdataset_shard
from tests.preconditions import require_network_namespace

runner = CliRunner()
DATASET = "raytest"
# Two units of two rows, then one: the Hanks portrait is listed again in the third unit.
ROWS = ["portraits/hanks.jpg", "portraits/yao_flipped.jpg", "street/sky.png", "street/gdp.jpg",
        "portraits/hanks.jpg", "portraits/astronaut.png", "portraits/yao_bright_small.jpg"]
_CLONE_NEWNET = 0x40000000
_SIOCSIFFLAGS = 0x8914
_IFF_UP, _IFF_LOOPBACK, _IFF_RUNNING = 0x1, 0x8, 0x40


@contextmanager
def loopback_only_network() -> Iterator[None]:
    """Move this thread (and every process it starts) into a new network namespace with only
    the loopback interface, up; move back at the end."""
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    if libc.unshare(_CLONE_NEWNET) != 0:  # checked up front (require_network_namespace)
        os.close(original)
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack(
                "16sH14x", b"lo", _IFF_UP | _IFF_LOOPBACK | _IFF_RUNNING))
        yield
    finally:
        if libc.setns(original, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
        os.close(original)


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    """Ray on 127.0.0.1 with two CPUs: the pool has two worker processes."""
    require_network_namespace()
    saved = {name: os.environ.get(name) for name in ("RAY_USAGE_STATS_ENABLED",)}
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    temp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must fit in 107 bytes
    try:
        with loopback_only_network():
            ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                     _temp_dir=temp, log_to_driver=False)
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture()
def photos(tmp_path: Path, collection: tuple[Path, Path]) -> Path:
    """A manifest of ROWS (with provenance) beside copies of those photos."""
    folder = tmp_path / "photos"
    for name in set(ROWS):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(collection[0] / name, folder / name)
    lines = ["file,author,license"] + [f"{name},person {n},CC BY" for n, name in enumerate(ROWS)]
    (folder / "photos.csv").write_text("\n".join(lines) + "\n")
    (folder / "before.csv").write_text("\n".join(lines[:3] + [lines[4]]) + "\n")
    return folder


def assert_same_index(built: Path, expected: Path) -> None:
    """The same images (every column), face ids and boxes; vectors within float16 rounding
    (the workers run their models on one thread, the single-host build on several)."""
    assert pq.read_table(built / "images.parquet").equals(
        pq.read_table(expected / "images.parquet"))
    a, b = FaceIndex(built), FaceIndex(expected)
    assert np.array_equal(a.faces.image_id, b.faces.image_id)
    assert np.array_equal(a.faces.face_id, b.faces.face_id)
    assert np.allclose(a.faces.bbox, b.faces.bbox, atol=0.05)
    assert np.array_equal(a.small_faces.image_id, b.small_faces.image_id)
    assert np.allclose(np.asarray(a.vectors, np.float32), np.asarray(b.vectors, np.float32),
                       atol=2e-3)
    assert a.manifest["counts"] == b.manifest["counts"]
    assert a.manifest["coverage"] == b.manifest["coverage"]


def test_a_bare_ray_flag_means_ray_as_it_is_found() -> None:
    assert bare_ray_flag(["photos", "--ray"]) == ["photos", "--ray="]
    assert bare_ray_flag(["--ray", "--out", "ix"]) == ["--ray=", "--out", "ix"]
    assert bare_ray_flag(["--ray", "photos", "--out", "ix"]) == ["--ray=", "photos", "--out",
                                                                   "ix"]
    assert bare_ray_flag(["--ray", "10.0.0.5:6379"]) == ["--ray", "10.0.0.5:6379"]
    assert bare_ray_flag(["--ray", "auto", "photos"]) == ["--ray", "auto", "photos"]


def test_one_worker_per_gpu_else_one_per_core() -> None:
    gpu = plan_actors({"CPU": 64, "GPU": 8}, "auto")
    assert (gpu.actors, gpu.num_gpus, gpu.threads) == (8, 1, None)
    cpu = plan_actors({"CPU": 2}, "auto")
    assert (cpu.actors, cpu.num_cpus, cpu.num_gpus, cpu.device, cpu.threads) == (2, 1, 0, "cpu",
                                                                                 1)
    assert plan_actors({"CPU": 4, "GPU": 1}, "cpu").num_gpus == 0
    with pytest.raises(RayError, match="no GPU"):
        plan_actors({"CPU": 4}, "cuda")


def test_the_ray_build_equals_the_single_host_build(
        local_cluster: None, photos: Path, engine: FaceEngine, tmp_path: Path) -> None:
    # Both replace the same index (three of the photos), reuse it, and leave out one face
    # whose removal was asked.
    before = tmp_path / "before"
    build_index(open_source(photos / "before.csv"), before, engine, dataset=DATASET)
    removed = {search_selfie(engine, FaceIndex(before), _yao(engine))[0].face_id}
    single, distributed = tmp_path / "single", tmp_path / "distributed"
    shutil.copytree(before, single)
    shutil.copytree(before, distributed)
    expected = build_index(open_source(photos / "photos.csv"), single, engine, dataset=DATASET,
                           removed_face_ids=removed)

    summary = build_index_on_ray(open_source(photos / "photos.csv"), distributed, engine,
                                 device="cpu", dataset=DATASET, unit_size=2,
                                 removed_face_ids=removed)

    assert summary.units == {"units": 4, "processed": 4, "resumed": 0}
    assert (summary.processed, summary.reused_images, summary.duplicates,
            summary.removed_faces) == (expected.processed, expected.reused_images,
                                       expected.duplicates, expected.removed_faces) == (3, 3, 1,
                                                                                         1)
    assert_same_index(distributed, single)
    assert not staging_folder(distributed).exists()


def test_each_img2dataset_tar_is_a_unit_read_by_a_worker(
        local_cluster: None, collection: tuple[Path, Path], engine: FaceEngine,
        tmp_path: Path) -> None:
    def sample(name: str, photo_id: int) -> tuple[str, bytes, dict[str, str]]:
        url = f"https://farm1.staticflickr.com/1/{photo_id}_a1b2c3d4e5_z.jpg"
        return url, (collection[0] / name).read_bytes(), {"author": f"user {photo_id}"}

    shards = tmp_path / "shards"
    shards.mkdir()
    write_webdataset_shard(shards, 0, [sample("portraits/hanks.jpg", 11),
                                       sample("street/gdp.jpg", 12)],
                           [("https://farm1.staticflickr.com/1/13_x_z.jpg", "HTTP Error 404")])
    write_webdataset_shard(shards, 1, [sample("portraits/yao_flipped.jpg", 14),
                                       sample("portraits/hanks.jpg", 11)], [])  # 11 again
    single = build_index(open_source(shards), tmp_path / "single", engine, dataset=DATASET)
    summary = build_index_on_ray(open_source(shards), tmp_path / "distributed", engine,
                                 device="cpu", dataset=DATASET)
    assert summary.units["units"] == 2 and summary.duplicates == single.duplicates == 1
    assert summary.coverage["not_downloaded"] == {"failed_to_download: HTTP 404": 1}
    assert_same_index(tmp_path / "distributed", tmp_path / "single")


def test_a_resumed_ray_build_skips_the_units_already_finished(
        local_cluster: None, photos: Path, engine: FaceEngine, tmp_path: Path) -> None:
    out = (tmp_path / "index").resolve()
    source = open_source(photos / "photos.csv")
    # What a worker of an interrupted run left: the first unit, finished.
    staging = staging_folder(out)
    prepare_staging(staging, {**scan_settings(engine, source, DATASET), "layout": "units",
                              "unit_size": 2}, manifest_base(engine, source, DATASET), False)
    first = next(source_units(source, 2))
    process_unit(first, UnitContext(photos / "photos.csv", {}, source.root, DATASET, staging,
                                    engine.dimension), engine, None)

    result = runner.invoke(app, ["index", str(photos / "photos.csv"), "--out", str(out),
                                 "--dataset", DATASET, "--device", "cpu", "--unit-size", "2",
                                 "--ray"])

    assert result.exit_code == 0, result.output
    assert "ray: 4 units, 3 processed, 1 finished by an earlier run" in result.output
    assert "4 processed, 2 unchanged" in result.output  # the first unit's two photos
    reference = tmp_path / "reference"
    build_index(open_source(photos / "photos.csv"), reference, engine, dataset=DATASET)
    assert_same_index(out, reference)


def test_workers_whose_model_files_differ_refuse_to_start(
        local_cluster: None, photos: Path, engine: FaceEngine, tmp_path: Path) -> None:
    driver = engine.replica()
    driver.sha256 = {name: "0" * 64 for name in driver.sha256}  # as if its files were others
    with pytest.raises(RayError, match="model files differ from the driver's"):
        build_index_on_ray(open_source(photos / "photos.csv"), tmp_path / "index", driver,
                           device="cpu", dataset=DATASET, unit_size=2)
    assert not (tmp_path / "index").exists()


def _yao(engine: FaceEngine):  # type: ignore[no-untyped-def]
    from faceaudit.demo import vectron_image
    from faceaudit.imaging import decode_image

    return decode_image(vectron_image("yaoming.jpg"))
