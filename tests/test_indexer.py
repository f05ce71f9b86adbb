"""Building indexes: contents, bad files, atomic publishing and resuming."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceaudit.demo import insightface_image, vectron_image
from faceaudit.errors import IncompatibleIndex, IndexNotFound
from faceaudit.indexer.build import build_index
from faceaudit.indexer.search import FaceIndex
from faceaudit.indexer.store import ImageTable
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import buffalo_s, pack_from_folder


def test_manifest_describes_the_index(built_index: Path, engine: FaceEngine) -> None:
    manifest = json.loads((built_index / "manifest.json").read_text())
    assert manifest["format"] == "faceaudit-index" and manifest["format_version"] == 3
    assert manifest["model_pack"]["name"] == "buffalo_s"
    files = manifest["model_pack"]["files"]
    assert files["scrfd_500m_bnkps.onnx"]["sha256"] == buffalo_s().detector.sha256
    assert files["w600k_mbf.onnx"]["sha256"] == buffalo_s().recognizer.sha256
    assert manifest["embedding"] == {"dimension": 512, "metric": "cosine", "normalised": True}
    assert manifest["index"]["type"] == "flat" and manifest["index"]["exact"]
    assert manifest["detection"] == engine.detection.as_dict()
    counts = manifest["counts"]
    assert counts["images"] == 10 and counts["no_face"] == 2 and counts["failed"] == 0
    assert counts["images_with_faces"] == 8
    assert counts["faces"] >= 8 + 15  # the team photo alone has more than 15 faces
    assert manifest["created"] and manifest["faceaudit_version"]


def test_every_face_is_stored_with_its_photo(built_index: Path) -> None:
    index = FaceIndex(built_index)
    assert index.size == len(index.faces) == index.manifest["counts"]["faces"]
    keys = [record.key for record in index.images]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    paths = [record.path for record in index.images]
    for image_id, record in enumerate(index.images):
        rows = np.flatnonzero(index.faces.image_id == image_id)
        assert len(rows) == record.faces
        for row in rows:
            x1, y1, x2, y2 = index.faces.bbox[row]
            assert 0 <= x1 < x2 <= record.width and 0 <= y1 < y2 <= record.height
    team = index.images[paths.index("team/players.jpg")]
    assert team.faces >= 15 and team.status == "ok" and len(team.sha256 or "") == 64
    assert index.images[paths.index("street/sky.png")].status == "no_face"
    vectors = np.asarray(index.vectors, np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)  # float16 store


@pytest.fixture()
def small_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    shutil.copy(vectron_image("yaoming.jpg"), root / "a" / "yao.jpg")
    shutil.copy(insightface_image("Tom_Hanks_54745.png"), root / "a" / "hanks.png")
    shutil.copy(vectron_image("gdp.jpg"), root / "gdp.jpg")
    data = vectron_image("players.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "notes.jpg").write_text("not a photo")
    (root / "README.txt").write_text("ignored: not an image suffix")
    return root


def test_bad_files_are_recorded_and_skipped(small_dataset: Path, engine: FaceEngine,
                                            tmp_path: Path) -> None:
    summary = build_index(small_dataset, tmp_path / "index", engine)
    assert (summary.images, summary.failed, summary.images_with_faces) == (5, 2, 3)
    failed = dict(summary.failures)
    assert "not an image" in failed["notes.jpg"]
    assert "truncated" in failed["truncated.jpg"]
    records = {r.path: r for r in ImageTable(tmp_path / "index" / "images.parquet")}
    assert records["truncated.jpg"].status == "failed" and records["a/yao.jpg"].faces == 1


class _Interrupt(Exception):
    pass


def test_interrupted_build_keeps_old_index_and_resumes(small_dataset: Path, engine: FaceEngine,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "index"
    build_index(small_dataset, out, engine)
    before = (out / "manifest.json").read_text()
    shutil.copy(vectron_image("players.jpg"), small_dataset / "players.jpg")

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        build_index(small_dataset, out, engine, shard_size=2, progress=stop_after_three,
                    fresh=True)
    assert (out / "manifest.json").read_text() == before  # old index untouched and usable
    assert FaceIndex(out).manifest["counts"]["images"] == 5
    staging = tmp_path / ".index.building"
    assert len(list((staging / "shards").iterdir())) == 1  # one finished shard of 2 images

    resumed = build_index(small_dataset, out, engine, shard_size=2)
    # 2 from the finished shard, the 5 others unchanged since the previous index: only the
    # new photo is processed.
    assert resumed.reused_images == 5 and resumed.processed == 1 and resumed.images == 6
    assert not staging.exists()
    rebuilt = FaceIndex(out)
    fresh = build_index(small_dataset, tmp_path / "fresh", engine)
    assert rebuilt.manifest["counts"] == json.loads(
        (tmp_path / "fresh" / "manifest.json").read_text())["counts"]
    assert fresh.reused_images == 0 and fresh.processed == 6
    reference = FaceIndex(tmp_path / "fresh")
    assert [r.key for r in rebuilt.images] == [r.key for r in reference.images]
    assert np.array_equal(rebuilt.faces.image_id, reference.faces.image_id)
    assert np.array_equal(rebuilt.faces.face_id, reference.faces.face_id)
    assert np.allclose(rebuilt.vectors,
                       reference.vectors, atol=1e-3)


def test_a_folder_without_manifest_is_not_an_index(tmp_path: Path) -> None:
    (tmp_path / "faces.faiss").write_bytes(b"half written")
    with pytest.raises(IndexNotFound, match="no manifest.json"):
        FaceIndex(tmp_path)


def test_other_model_pack_is_refused(built_index: Path, tmp_path: Path) -> None:
    folder = tmp_path / "buffalo_other"
    folder.mkdir()
    shutil.copy(buffalo_s().detector.path, folder / "det_500m.onnx")
    data = bytearray(buffalo_s().recognizer.path.read_bytes())
    data[-1] ^= 1  # a different file: different digest, still a loadable model
    (folder / "w600k_mbf.onnx").write_bytes(bytes(data))
    other = FaceEngine(pack_from_folder(folder), device="cpu")
    with pytest.raises(IncompatibleIndex, match="buffalo_s.*buffalo_other"):
        FaceIndex(built_index).check_engine(other)


def test_large_photos_are_decoded_reduced_with_boxes_in_full_size_pixels(
        engine: FaceEngine, tmp_path: Path) -> None:
    from PIL import Image

    from faceaudit.indexer.pipeline import process_images

    small = Image.open(vectron_image("yaoming.jpg")).convert("RGB")
    (tmp_path / "a").mkdir()
    small.save(tmp_path / "a" / "small.jpg", quality=95)
    large = small.resize((small.width * 10, small.height * 10), Image.Resampling.BICUBIC)
    large.save(tmp_path / "a" / "large.jpg", quality=95)  # 2330 x 2870: beyond 2 x det_size
    assert max(large.size) > engine.detection.decode_max_side
    found = {item.record.path: item for item in
             process_images(engine, tmp_path, ["a/large.jpg", "a/small.jpg"])}
    big, little = found["a/large.jpg"], found["a/small.jpg"]
    assert (big.record.width, big.record.height) == large.size
    assert np.allclose(np.array(big.faces[0].bbox) / 10, little.faces[0].bbox, atol=3)
    assert float(big.vectors[0] @ little.vectors[0]) > 0.9
