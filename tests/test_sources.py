"""Indexing datasets as they come: img2dataset shards and manifests end to end, provenance on
every hit, incremental rebuilds by key and SHA-256, and one build at a time."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.demo import insightface_image, vectron_image
from faceaudit.indexer.build import build_index
from faceaudit.indexer.lock import BuildInProgress, build_lock
from faceaudit.indexer.readers import open_source
from faceaudit.indexer.readers.base import PROVENANCE_FIELDS
from faceaudit.indexer.search import FaceIndex
from faceaudit.indexer.store import ImageTable
from faceaudit.models.engine import FaceEngine
from faceaudit.service.thumbnails import photo_bytes
from tests.img2dataset_fixtures import write_webdataset_shard

runner = CliRunner()
# A place no photo of a person may lead to: it must never reach an index.
SECRET_LATITUDE, SECRET_LONGITUDE = "48.858370", "2.294481"


def jpeg(path: Path, **resize: int) -> bytes:
    image = Image.open(path).convert("RGB")
    if resize:
        image = image.resize((resize["width"], resize["height"]))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def flickr_url(photo_id: int) -> str:
    return f"https://farm6.staticflickr.com/5{photo_id % 1000}/{photo_id}_a1b2c3d4e5_z.jpg"


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An img2dataset webdataset download of three Flickr photos (one of Yao Ming) and two
    failed downloads, with location columns the indexer must not import."""
    folder = tmp_path_factory.mktemp("shards")
    samples = [
        (flickr_url(5001), jpeg(vectron_image("players.jpg")),
         {"license": "Attribution License", "author": "example user",
          "latitude": SECRET_LATITUDE, "longitude": SECRET_LONGITUDE}),
        (flickr_url(5002), jpeg(vectron_image("yaoming.jpg")),
         {"license": "Attribution-NonCommercial License", "author": "another user",
          "latitude": SECRET_LATITUDE, "longitude": SECRET_LONGITUDE}),
        (flickr_url(5003), jpeg(insightface_image("Tom_Hanks_54745.png")),
         {"license": None, "author": None, "latitude": None, "longitude": None}),
    ]
    failed = [(flickr_url(5004), "HTTP Error 404: Not Found"),
              (flickr_url(5005), "HTTP Error 410: Gone")]
    write_webdataset_shard(folder, 0, samples, failed)
    return folder


@pytest.fixture(scope="module")
def shard_index(shards: Path, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory
                ) -> Path:
    out = tmp_path_factory.mktemp("indexes") / "flickr-index"
    result = runner.invoke(app, ["index", str(shards), "--out", str(out), "--dataset",
                                 "flickr-faces", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "source: 5 rows, 3 downloaded, 2 not downloaded\n" in result.stdout
    assert "\n3 images: 3 with faces (" in result.stdout
    return out


def test_a_webdataset_download_is_indexed_with_its_coverage(shard_index: Path) -> None:
    manifest = json.loads((shard_index / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == "flickr-faces"
    assert manifest["source"]["kind"] == "webdataset"
    coverage = manifest["coverage"]
    assert (coverage["rows"], coverage["downloaded"], coverage["indexed"]) == (5, 3, 3)
    assert sum(coverage["not_downloaded"].values()) == 2
    assert manifest["counts"]["images"] == 3 and manifest["counts"]["faces"] >= 17


def test_hits_carry_the_provenance_of_the_shard(shard_index: Path, engine: FaceEngine) -> None:
    result = runner.invoke(app, ["search", str(vectron_image("yaoming.jpg")), "--index",
                                 str(shard_index), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    matches = json.loads(result.stdout)["matches"]
    by_photo = {m["provenance"]["photo_id"]: m for m in matches}
    assert set(by_photo) == {"5001", "5002"}  # the portrait and the team photo
    portrait = by_photo["5002"]
    assert tuple(portrait["provenance"]) == PROVENANCE_FIELDS
    assert portrait["provenance"] | {"sha256": None, "source_record": None} == {
        "dataset": "flickr-faces", "photo_id": "5002", "page_url": None,
        "image_url": flickr_url(5002), "uploader_id": None, "uploader_name": "another user",
        "title": None, "licence_name": "Attribution-NonCommercial License",
        "licence_url": None, "date_taken": None, "date_uploaded": None, "sha256": None,
        "source_record": None}
    assert portrait["provenance"]["source_record"] == "00000.tar/000000001"
    assert portrait["image_key"] == "flickr-faces:5002"
    assert portrait["image"] == "00000.tar/000000001.jpg"

    text = runner.invoke(app, ["search", str(vectron_image("yaoming.jpg")), "--index",
                               str(shard_index), "--device", "cpu"]).stdout
    assert "uploaded by another user" in text and "Attribution-NonCommercial License" in text


def test_location_never_reaches_the_index(shard_index: Path) -> None:
    table = ImageTable(shard_index / "images.parquet")
    assert not {"latitude", "longitude"} & set(table._file.schema_arrow.names)
    for record in table:
        assert SECRET_LATITUDE not in repr(record) and SECRET_LONGITUDE not in repr(record)
    for path in shard_index.rglob("*"):
        if path.is_file():
            assert SECRET_LATITUDE.encode() not in path.read_bytes()


def test_the_service_reads_photos_back_from_the_tar(shard_index: Path, shards: Path) -> None:
    index = FaceIndex(shard_index)
    for record in index.images:
        data = photo_bytes(index.dataset_root, record)
        assert len(data) == record.bytes
        assert Image.open(io.BytesIO(data)).size == (record.width, record.height)


# --- incremental builds ------------------------------------------------------------------

@pytest.fixture()
def three_photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "yao.jpg").write_bytes(jpeg(vectron_image("yaoming.jpg")))
    (root / "hanks.jpg").write_bytes(jpeg(insightface_image("Tom_Hanks_54745.png")))
    (root / "gdp.jpg").write_bytes(jpeg(vectron_image("gdp.jpg")))
    return root


def face_ids_by_key(index: FaceIndex) -> dict[str, list[int]]:
    result: dict[str, list[int]] = {}
    for face in range(index.size):
        key = index.images[int(index.faces.image_id[face])].key
        result.setdefault(key, []).append(int(index.faces.face_id[face]))
    return result


def test_a_rebuild_processes_only_new_and_changed_photos(three_photos: Path,
                                                         engine: FaceEngine,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "index"
    first = build_index(three_photos, out, engine)
    assert (first.processed, first.reused_images) == (3, 0)
    before = FaceIndex(out)
    yao_key = next(r.key for r in before.images if r.ref == "yao.jpg")
    yao_faces = face_ids_by_key(before)[yao_key]

    (three_photos / "gdp.jpg").unlink()  # gone from the source
    (three_photos / "hanks.jpg").write_bytes(jpeg(insightface_image("Tom_Hanks_54745.png"),
                                                  width=200, height=200))  # edited
    shutil.copy(vectron_image("players.jpg"), three_photos / "team.jpg")  # new
    second = build_index(three_photos, out, engine)
    assert (second.processed, second.reused_images, second.removed_images) == (2, 1, 2)
    after = FaceIndex(out)
    assert sorted(r.ref for r in after.images) == ["hanks.jpg", "team.jpg", "yao.jpg"]
    # The unchanged photo keeps its key and its faces their ids and vectors.
    assert face_ids_by_key(after)[yao_key] == yao_faces
    reference = build_index(three_photos, tmp_path / "fresh", engine)
    assert reference.processed == 3
    fresh = FaceIndex(tmp_path / "fresh")
    assert [r.key for r in after.images] == [r.key for r in fresh.images]
    assert np.array_equal(after.faces.face_id, fresh.faces.face_id)
    assert np.allclose(after.vectors,
                       fresh.vectors, atol=1e-3)

    third = build_index(three_photos, out, engine)
    assert (third.processed, third.reused_images, third.removed_images) == (0, 3, 0)


def test_a_changed_photo_keeps_its_key_when_the_dataset_gives_an_id(
        three_photos: Path, engine: FaceEngine, tmp_path: Path) -> None:
    manifest = three_photos / "photos.csv"
    manifest.write_text("photo_id,file,license\n1,yao.jpg,CC BY\n2,hanks.jpg,CC BY-NC\n")
    out = tmp_path / "index"
    build_index(open_source(manifest), out, engine, dataset="mine")
    before = {r.key: r.sha256 for r in FaceIndex(out).images}
    assert set(before) == {"mine:1", "mine:2"}
    (three_photos / "hanks.jpg").write_bytes(jpeg(vectron_image("gdp.jpg")))  # replaced
    summary = build_index(open_source(manifest), out, engine, dataset="mine")
    assert (summary.processed, summary.reused_images) == (1, 1)
    after = {r.key: r for r in FaceIndex(out).images}
    assert after["mine:2"].sha256 != before["mine:2"] and after["mine:2"].faces >= 2
    assert after["mine:1"].licence_name == "CC BY"


def test_duplicate_rows_are_indexed_once(three_photos: Path, engine: FaceEngine,
                                         tmp_path: Path) -> None:
    manifest = three_photos / "photos.tsv"
    manifest.write_text("path\tauthor\nyao.jpg\ta\nyao.jpg\ta\ngdp.jpg\tb\n")
    summary = build_index(open_source(manifest), tmp_path / "index", engine)
    assert (summary.images, summary.duplicates) == (2, 1)


def test_a_second_build_on_the_same_output_is_refused(three_photos: Path, engine: FaceEngine,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "index"
    build_index(three_photos, out, engine)
    before = (out / "manifest.json").read_text()
    with build_lock(out.resolve()):  # as another `faceaudit index` holding it
        with pytest.raises(BuildInProgress, match="already building"):
            build_index(three_photos, out, engine, fresh=True)
        result = runner.invoke(app, ["index", str(three_photos), "--out", str(out),
                                     "--device", "cpu"])
        assert result.exit_code == 2 and "already building" in result.output
    assert (out / "manifest.json").read_text() == before  # untouched
    assert build_index(three_photos, out, engine).reused_images == 3  # free again


def test_map_names_other_columns(three_photos: Path, engine: FaceEngine,
                                 tmp_path: Path) -> None:
    manifest = three_photos / "photos.csv"
    manifest.write_text("picture,owner_handle,rights,lat\nyao.jpg,someone,CC0,48.85\n")
    out = tmp_path / "index"
    result = runner.invoke(app, ["index", str(manifest), "--out", str(out), "--device", "cpu",
                                 "--map", "image=picture", "--map", "uploader_name=owner_handle",
                                 "--map", "licence_name=rights"])
    assert result.exit_code == 0, result.output
    record = next(iter(FaceIndex(out).images))
    assert (record.uploader_name, record.licence_name) == ("someone", "CC0")
    bad = runner.invoke(app, ["index", str(manifest), "--out", str(out), "--device", "cpu",
                              "--map", "latitude=lat"])
    assert bad.exit_code == 2 and "not a provenance field" in bad.output


# --- YFCC100M enrichment -----------------------------------------------------------------

def yfcc_line(photo_id: str, *, nickname: str, licence: str, marker: str = "0",
              layout: int = 25) -> str:
    """One row of the YFCC100M metadata file (made-up identities), in either layout."""
    columns = [photo_id, "12345678@N00", nickname, "2006-05-31 21:07:00.0", "1149429753",
               "Canon+IXY", "At+the+bar", "a+description", "food", "", SECRET_LONGITUDE,
               SECRET_LATITUDE, "16", f"http://www.flickr.com/photos/12345678@N00/{photo_id}/",
               flickr_url(int(photo_id)), licence,
               "http://creativecommons.org/licenses/by-nc/2.0/", "59", "6", "a1b2c3d4e5",
               "a1b2c3d4e5", "jpg", marker]
    if layout == 25:
        columns = ["7", photo_id, "0123abc", *columns[1:]]
    return "\t".join(columns)


def test_enrich_joins_yfcc100m_on_the_photo_id_from_the_url(
        three_photos: Path, engine: FaceEngine, tmp_path: Path) -> None:
    import bz2

    manifest = three_photos / "urls.csv"
    manifest.write_text(f"file,url\nyao.jpg,{flickr_url(777001)}\ngdp.jpg,{flickr_url(777002)}\n"
                        f"hanks.jpg,https://example.org/hanks.jpg\n")
    yfcc = tmp_path / "yfcc100m_dataset.bz2"
    lines = [yfcc_line("777001", nickname="example+user%21", licence="Attribution-NonCommercial "
                       "License"),
             yfcc_line("777002", nickname="second", licence="Attribution License", layout=23),
             yfcc_line("777003", nickname="video", licence="x", marker="1"),
             "not\ta\tyfcc\tline", yfcc_line("999999", nickname="other", licence="y")]
    yfcc.write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    out = tmp_path / "index"
    result = runner.invoke(app, ["index", str(manifest), "--out", str(out), "--dataset", "dif",
                                 "--enrich", f"yfcc100m={yfcc}", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "yfcc100m: 2 of 2 photo ids found" in result.stdout
    records = {r.ref: r for r in FaceIndex(out).images}
    yao = records["yao.jpg"]
    assert yao.key == "dif:777001"
    assert yao.provenance() | {"sha256": None} == {
        "dataset": "dif", "photo_id": "777001",
        "page_url": "http://www.flickr.com/photos/12345678@N00/777001/",
        "image_url": flickr_url(777001), "uploader_id": "12345678@N00",
        "uploader_name": "example user!", "title": "At the bar",
        "licence_name": "Attribution-NonCommercial License",
        "licence_url": "http://creativecommons.org/licenses/by-nc/2.0/",
        "date_taken": "2006-05-31 21:07:00.0", "date_uploaded": "2006-06-04T14:02:33+00:00",
        "sha256": None, "source_record": "urls.csv:2"}
    assert records["gdp.jpg"].uploader_name == "second"
    assert records["hanks.jpg"].photo_id is None and records["hanks.jpg"].uploader_id is None
    manifest_json = json.loads((out / "manifest.json").read_text())
    joined = manifest_json["enrichment"]["yfcc100m"]
    assert (joined["matched"], joined["videos"], joined["malformed"]) == (2, 1, 1)
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET_LATITUDE.encode() not in path.read_bytes()
            assert b"a description" not in path.read_bytes()

    # A rebuild joins nothing again: the images keep what was joined.
    again = build_index(open_source(manifest), out, engine, dataset="dif",
                        enrich={"yfcc100m": yfcc})
    assert again.enrichment["yfcc100m"]["needed"] == 0
    assert next(r for r in FaceIndex(out).images if r.ref == "yao.jpg").uploader_id


def test_faces_too_small_to_embed_are_kept_for_blurring(engine: FaceEngine,
                                                        tmp_path: Path) -> None:
    # The team photo reduced so that some faces fall under --min-face: they are not embedded
    # (not searchable), but their boxes are in the index so the service can blur them.
    root = tmp_path / "photos"
    root.mkdir()
    team = Image.open(vectron_image("players.jpg")).convert("RGB")
    team.resize((team.width // 3, team.height // 3)).save(root / "team_small.jpg", quality=95)
    summary = build_index(root, tmp_path / "index", engine)
    index = FaceIndex(tmp_path / "index")
    assert summary.small_faces == len(index.small_faces) > 0
    assert index.manifest["counts"]["small_faces"] == summary.small_faces
    small_sides = np.minimum(index.small_faces.bbox[:, 2] - index.small_faces.bbox[:, 0],
                             index.small_faces.bbox[:, 3] - index.small_faces.bbox[:, 1])
    assert (small_sides < engine.detection.min_face).all()
    assert set(index.small_faces.image_id.tolist()) == {0}


def test_faces_whose_removal_was_asked_are_left_out_of_the_next_build(
        three_photos: Path, engine: FaceEngine, tmp_path: Path) -> None:
    from faceaudit.imaging import decode_image
    from faceaudit.indexer.search import search_selfie

    out = tmp_path / "index"
    build_index(three_photos, out, engine)
    before = FaceIndex(out)
    selfie = decode_image(vectron_image("yaoming.jpg"))
    found = search_selfie(engine, before, selfie)
    assert [m.image for m in found] == ["yao.jpg"]
    summary = build_index(three_photos, out, engine, removed_face_ids={found[0].face_id})
    after = FaceIndex(out)
    assert summary.removed_faces == 1 and after.size == before.size - 1
    assert search_selfie(engine, after, selfie) == []
    # Still blurred wherever the photo is shown: its box is kept with the small faces.
    yao_id = next(i for i, r in enumerate(after.images) if r.ref == "yao.jpg")
    assert yao_id in after.small_faces.image_id.tolist()
    assert after.images[yao_id].faces == 0


def test_the_index_is_flushed_to_disk_before_it_is_published(
        three_photos: Path, engine: FaceEngine, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import faceaudit.indexer.from_embeddings as publishing_module
    import faceaudit.indexer.store as store_module

    events: list[str] = []
    real_fsync, real_publish = os.fsync, publishing_module.publish

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def publish(staged: Path, destination: Path) -> None:
        events.append("publish")
        real_publish(staged, destination)

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    monkeypatch.setattr(publishing_module, "publish", publish)
    build_index(three_photos, tmp_path / "index", engine)
    published = events.index("publish")
    flushed = {Path(e.split(" ", 1)[1]).name for e in events[:published] if e.startswith("fsync")}
    assert {"manifest.json", "faces.faiss", "images.parquet", "face_id.npy"} <= flushed
    assert ".index.publish" in flushed  # the folder itself
