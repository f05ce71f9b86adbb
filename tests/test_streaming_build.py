"""Building the index from embedding shards (`build_from_embeddings`, `faceaudit build-index`):
the streaming merge against a plain reference on seeded synthetic shards, and the public step
on a real scan."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.indexer.from_embeddings import build_from_embeddings
from faceaudit.indexer.merge import SELECTION_SCHEMA
from faceaudit.indexer.npy_rows import NpyFile, NpyWriter, gather_rows
from faceaudit.indexer.search import FaceIndex
from faceaudit.indexer.shards import write_shard
from faceaudit.indexer.staging import (
    MANIFEST_BASE,
    SHARDS_DIR,
    ScanRecord,
    finish_scan,
    manifest_digest,
    staging_folder,
    write_json,
)
from faceaudit.indexer.store import (
    STATUS_NO_FACE,
    STATUS_OK,
    BoxTable,
    FaceTable,
    ImageRecord,
    ImageTable,
    records_to_table,
    stable_face_id,
    write_index_files,
)
from faceaudit.models.engine import FaceEngine

runner = CliRunner()
DIMENSION = 8


def test_gather_rows_reads_any_rows_of_many_files_in_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((n, 4)).astype(dtype)
              for n, dtype in ((50, np.float32), (0, np.float16), (70, np.float16))]
    for number, array in enumerate(arrays):
        np.save(tmp_path / f"{number}.npy", array)
    files = [NpyFile(tmp_path / f"{number}.npy") for number in range(3)]
    wanted = [(0, r) for r in range(50)] + [(2, r) for r in range(70)]
    picks = [wanted[i] for i in rng.permutation(len(wanted))[:90]]
    file_of = np.array([f for f, _ in picks])
    row_of = np.array([r for _, r in picks])
    expected = np.stack([arrays[f][r] for f, r in picks]).astype(np.float16)
    for window_bytes in (64, 2**20):  # 4 rows a read (read again and again), or whole files
        with NpyWriter(tmp_path / "out.npy", (90, 4), np.float16) as out:
            gather_rows(files, file_of, row_of, out, chunk_rows=17, window_bytes=window_bytes)
        assert np.array_equal(np.load(tmp_path / "out.npy"), expected)
    with pytest.raises(ValueError, match="rows written"):
        with NpyWriter(tmp_path / "short.npy", (3, 4), np.float16) as short:
            short.append(np.zeros((2, 4)))


# Synthetic shards: images with 0-3 faces and some small faces, random unit vectors.

def _image(rng: np.random.Generator, key: str, faces: int, sha: str) -> dict:
    return {"record": ImageRecord(key=key, ref=f"{key}.jpg", path=f"{key}.jpg", sha256=sha,
                                  status=STATUS_OK if faces else STATUS_NO_FACE, faces=faces,
                                  width=640, height=480, dataset="synthetic",
                                  uploader_name=f"author of {key}"),
            "face_ids": [stable_face_id(key, i) for i in range(faces)],
            "bbox": rng.random((faces, 4)).astype(np.float32),
            "vectors": rng.standard_normal((faces, DIMENSION)).astype(np.float32),
            "small": rng.random((int(rng.integers(0, 2)), 4)).astype(np.float32)}


def _tables(images: list[dict]) -> tuple[pa.Table, FaceTable, BoxTable, np.ndarray]:
    counts = [len(i["face_ids"]) for i in images]
    total = sum(counts)
    faces = FaceTable(np.repeat(np.arange(len(images), dtype=np.int32), counts),
                      np.array([f for i in images for f in i["face_ids"]], np.int64),
                      np.concatenate([i["bbox"] for i in images]).reshape(-1, 4),
                      np.zeros((total, 5, 2), np.float32), np.ones(total, np.float32))
    small_counts = [len(i["small"]) for i in images]
    small = BoxTable(np.repeat(np.arange(len(images), dtype=np.int32), small_counts),
                     np.concatenate([i["small"] for i in images]).reshape(-1, 4))
    vectors = np.concatenate([i["vectors"] for i in images]).reshape(-1, DIMENSION)
    return records_to_table([i["record"] for i in images]), faces, small, vectors


def _manifest_base() -> dict:
    return {"format": "faceaudit-index", "format_version": 3, "created": None,
            "model_pack": {"name": "synthetic", "files": {}, "licence": None},
            "embedding": {"dimension": DIMENSION, "metric": "cosine", "normalised": True},
            "index": {}, "dataset": {"name": "synthetic"}, "coverage": {}, "enrichment": {},
            "counts": {}, "failure_reasons": {}}


def test_the_streaming_merge_matches_a_plain_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    out = tmp_path / "index"
    # The index being replaced: p0 and p1 are kept, p2 is gone from the source.
    previous = [_image(rng, f"p{i}", int(rng.integers(0, 4)), f"old{i}") for i in range(3)]
    previous[0] = _image(rng, "p0", 3, "old0")
    images, faces, small, vectors = _tables(sorted(previous, key=lambda i: i["record"].key))
    out.mkdir()
    write_index_files(out, vectors=vectors, faces=faces, small_faces=small, images=images,
                      manifest={**_manifest_base(), "created": "then"}, index_type="flat")
    # Two shards; "s1" is in both (an image that changed: the second version is chosen).
    first = [_image(rng, key, int(rng.integers(0, 4)), key) for key in ("s3", "s1", "s0")]
    second = [_image(rng, "s1", 2, "s1-new"), _image(rng, "s2", 1, "s2")]
    staging = staging_folder(out)
    (staging / SHARDS_DIR).mkdir(parents=True)
    for name, shard in (("000000", first), ("000001", second)):
        write_shard(staging / SHARDS_DIR / name, *_tables(shard))
    chosen = {"s3": first[0], "s0": first[2], "s1": second[0], "s2": second[1],
              "p0": previous[0], "p1": previous[1]}
    selection = pa.table({"key": ["s3", "s0", "s1", "s2", "p0", "p1"],
                          "shard": ["000000", "000000", "000001", "000001", None, None]},
                         schema=SELECTION_SCHEMA)
    finish_scan(staging, selection, ScanRecord(processed=5, reused_images=2,
                                               previous_manifest=manifest_digest(out)))
    write_json(staging / MANIFEST_BASE, _manifest_base())
    removed = {previous[0]["face_ids"][1], second[0]["face_ids"][0]}

    summary = build_from_embeddings(staging, out, removed_face_ids=removed, index_type="flat")

    assert not staging.exists()
    index = FaceIndex(out)
    keys = sorted(chosen)
    records = list(ImageTable(out / "images.parquet"))
    assert [r.key for r in records] == keys
    expected_faces, expected_vectors, expected_small = [], [], []
    for image_id, key in enumerate(keys):
        image = chosen[key]
        kept = [n for n, f in enumerate(image["face_ids"]) if f not in removed]
        gone = [n for n, f in enumerate(image["face_ids"]) if f in removed]
        assert records[image_id] == ImageRecord(**{**image["record"].__dict__,
                                                   "faces": len(kept)})
        expected_faces += [(image_id, image["face_ids"][n], *image["bbox"][n]) for n in kept]
        expected_vectors += [image["vectors"][n] for n in kept]
        expected_small += ([(image_id, *box) for box in image["small"]]
                           + [(image_id, *image["bbox"][n]) for n in gone])
    assert [(int(i), int(f), *map(float, b)) for i, f, b in zip(
        index.faces.image_id, index.faces.face_id, index.faces.bbox, strict=True)] == [
        (i, f, *map(float, b)) for i, f, *b in expected_faces]
    assert np.array_equal(np.asarray(index.vectors),
                          np.array(expected_vectors, np.float32).astype(np.float16))
    assert [(int(i), *map(float, b)) for i, b in zip(
        index.small_faces.image_id, index.small_faces.bbox, strict=True)] == [
        (i, *map(float, b)) for i, *b in expected_small]
    counts = index.manifest["counts"]
    assert counts["faces"] == summary.faces == len(expected_faces) == index.size
    assert counts["removed_faces"] == summary.removed_faces == 2
    assert (summary.images, summary.removed_images) == (6, 1)  # p2 is gone
    assert (summary.processed, summary.reused_images) == (5, 2)
    assert index.manifest["index"]["type"] == "flat"


def test_shard_folders_alone_give_each_key_its_newest_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    old, new = _image(rng, "a", 1, "a-old"), _image(rng, "a", 2, "a-new")
    other = _image(rng, "b", 1, "b")
    folders = [tmp_path / "000000", tmp_path / "000001"]
    write_shard(folders[0], *_tables([old, other]))
    write_shard(folders[1], *_tables([new]))
    summary = build_from_embeddings(folders, tmp_path / "index", manifest=_manifest_base())
    records = list(ImageTable(tmp_path / "index" / "images.parquet"))
    assert [(r.key, r.sha256) for r in records] == [("a", "a-new"), ("b", "b")]
    assert summary.faces == 3 and all(f.is_dir() for f in folders)  # shards are left alone


def test_build_index_publishes_a_scan_whose_publishing_failed(
        three_photos_folder: Path, engine: FaceEngine, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import faceaudit.indexer.from_embeddings as publishing

    out = tmp_path / "index"
    real = publishing.finish_index_files

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(publishing, "finish_index_files", disk_full)
    failed = runner.invoke(app, ["index", str(three_photos_folder), "--out", str(out),
                                 "--device", "cpu"])
    assert failed.exit_code != 0 and not out.exists()
    assert (staging_folder(out.resolve()) / "scan.json").is_file()  # the scan is kept
    monkeypatch.setattr(publishing, "finish_index_files", real)

    result = runner.invoke(app, ["build-index", "--out", str(out), "--index-type", "flat"])
    assert result.exit_code == 0, result.output
    assert "3 images: 2 with faces" in result.output and not staging_folder(out.resolve()).exists()
    reference = tmp_path / "reference"
    runner.invoke(app, ["index", str(three_photos_folder), "--out", str(reference),
                        "--device", "cpu"])
    built, expected = FaceIndex(out), FaceIndex(reference)
    assert [r.key for r in built.images] == [r.key for r in expected.images]
    assert np.array_equal(built.faces.face_id, expected.faces.face_id)
    assert np.allclose(np.asarray(built.vectors, np.float32),
                       np.asarray(expected.vectors, np.float32), atol=1e-3)
    assert json.loads((out / "manifest.json").read_text())["counts"] == json.loads(
        (reference / "manifest.json").read_text())["counts"]

    again = runner.invoke(app, ["build-index", "--out", str(out)])
    assert again.exit_code == 2 and "holds no finished scan" in again.output


@pytest.fixture()
def three_photos_folder(tmp_path: Path, collection: tuple[Path, Path]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("portraits/hanks.jpg", "portraits/yao_flipped.jpg", "street/sky.png"):
        shutil.copy(collection[0] / name, folder / Path(name).name)
    return folder
