"""img2dataset readers: webdataset tars and the files layout, provenance and coverage."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from img2dataset_fixtures import (
    compute_key,
    jpeg_bytes,
    write_files_shard,
    write_webdataset_shard,
)

from faceaudit.indexer.readers import webdataset
from faceaudit.indexer.readers.base import GIVEN_FIELDS, SourceError, read_location
from faceaudit.indexer.readers.img2dataset import detect_img2dataset
from faceaudit.indexer.readers.img2dataset_coverage import failure_reason
from faceaudit.indexer.readers.img2dataset_files import Img2DatasetFilesSource
from faceaudit.indexer.readers.webdataset import WebDatasetSource

URL = "https://farm1.staticflickr.com/2/{}_abcdef.jpg"


def sample(n: int, **extra: object) -> tuple[str, bytes, dict[str, object]]:
    return URL.format(n), jpeg_bytes(color=(n * 20 % 256, 80, 120)), extra


def test_compute_key_as_img2dataset() -> None:
    assert compute_key(5, 1) == "000010005"
    assert compute_key(0, 0) == "000000000"


def test_items_and_provenance(tmp_path: Path) -> None:
    samples = [sample(1, photoid=111, title="Beach+day%21", unickname="jane+doe"),
               sample(2, photoid=222, caption="a caption")]
    write_webdataset_shard(tmp_path, 0, samples)
    source = WebDatasetSource(tmp_path)
    items = list(source.items())

    assert [item.ref for item in items] == ["00000.tar/000000000.jpg", "00000.tar/000000001.jpg"]
    assert [item.source_record for item in items] == ["00000.tar/000000000",
                                                      "00000.tar/000000001"]
    assert [item.data for item in items] == [samples[0][1], samples[1][1]]
    assert all(item.error is None and item.location.path == "00000.tar" for item in items)
    assert items[0].fields == {"photo_id": "111", "image_url": URL.format(1),
                               "uploader_name": "jane doe", "title": "Beach day!"}
    assert items[1].fields == {"photo_id": "222", "image_url": URL.format(2)}
    assert source.kind == "webdataset" and source.root == tmp_path.resolve()
    assert source.identity() == {"kind": "webdataset", "path": str(tmp_path.resolve()),
                                 "field_map": {}}
    assert source.coverage.as_dict() == {"rows": 2, "downloaded": 2, "not_downloaded": {},
                                         "malformed": 0, "malformed_examples": []}


def test_byte_location_points_at_the_member(tmp_path: Path) -> None:
    write_webdataset_shard(tmp_path, 3, [sample(1), sample(2), sample(3)])
    source = WebDatasetSource(tmp_path)
    tar_bytes = (tmp_path / "00003.tar").read_bytes()
    items = list(source.items())
    assert len(items) == 3
    for item in items:
        location = item.location
        assert location.path == "00003.tar" and location.size == len(item.data)
        assert tar_bytes[location.offset:location.offset + location.size] == item.data
        assert read_location(source.root, location) == item.data


def test_failed_downloads_are_counted_never_yielded(tmp_path: Path) -> None:
    failed = [("https://a.example/x.jpg", "HTTP Error 404: Not Found"),
              ("https://b.example/y.jpg", "HTTP Error 404: Not Found"),
              ("https://c.example/z.jpg",
               "<urlopen error [Errno -2] Name or service not known> https://c.example/z.jpg"),
              ("https://d.example/w.jpg", None)]
    write_webdataset_shard(tmp_path, 0, [sample(1)], failed=failed)
    write_webdataset_shard(tmp_path, 1, [sample(2), sample(3)],
                           failed=[("https://e.example/v.jpg", "HTTP Error 404: Not Found")])
    source = WebDatasetSource(tmp_path)
    items = list(source.items())

    assert len(items) == 3
    assert not {item.fields["image_url"] for item in items} & {url for url, _ in failed}
    assert source.coverage.rows == 8 and source.coverage.downloaded == 3
    assert source.coverage.not_downloaded == {
        "failed_to_download: HTTP 404": 3,
        "failed_to_download: <urlopen error [Errno -2] Name or service not known> <url>": 1,
        "failed_to_download": 1}


def test_failure_reasons_group() -> None:
    assert failure_reason("failed_to_download", "HTTP Error 403: Forbidden") == \
        "failed_to_download: HTTP 403"
    assert (failure_reason("failed_to_resize", "image 123456 too big for http://x/1.jpg")
            == failure_reason("failed_to_resize", "image 987654 too big for http://y/22.jpg"))
    assert len(failure_reason("failed_to_download", "x" * 500)) < 120
    assert failure_reason(None, None) == "unknown status"


def cut(path: Path, at: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(at)


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {member.name: member for member in tar.getmembers()}


@pytest.mark.parametrize("where", ["image data", "text data", "header", "end marker"])
def test_truncated_tar_keeps_what_precedes_and_goes_on(tmp_path: Path, where: str) -> None:
    first = write_webdataset_shard(tmp_path, 0, [sample(1), sample(2), sample(3)])
    write_webdataset_shard(tmp_path, 1, [sample(4)])
    info = members(first)
    second_jpg = info["000000001.jpg"]
    at = {"image data": second_jpg.offset_data + second_jpg.size // 2,
          "text data": info["000000001.txt"].offset_data + 1,
          "header": second_jpg.offset + 100,
          "end marker": info["000000002.txt"].offset_data + 100}[where]
    cut(first, at)
    source = WebDatasetSource(tmp_path)
    items = list(source.items())  # never raises

    expected = {"image data": ["000000000"], "text data": ["000000000", "000000001"],
                "header": ["000000000"],
                "end marker": ["000000000", "000000001", "000000002"]}[where]
    assert [item.source_record for item in items] == \
        [f"00000.tar/{key}" for key in expected] + ["00001.tar/000010000"]
    assert all(item.data and item.error is None for item in items)
    assert source.coverage.malformed == 1
    assert source.coverage.malformed_examples[0].startswith("00000.tar: ")
    # The parquet still says what img2dataset downloaded: 3 + 1 rows.
    assert source.coverage.rows == 4


def test_not_a_tar_and_fifo_shards_are_recorded(tmp_path: Path) -> None:
    (tmp_path / "00000.tar").write_bytes(b"this is not a tar archive" * 40)
    os.mkfifo(tmp_path / "00001.tar")
    write_webdataset_shard(tmp_path, 2, [sample(1)])
    source = WebDatasetSource(tmp_path)
    assert [item.source_record for item in source.items()] == ["00002.tar/000020000"]
    assert source.coverage.malformed == 2
    assert "a FIFO" in source.coverage.malformed_examples[1]


def test_non_image_bytes_are_still_yielded(tmp_path: Path) -> None:
    write_webdataset_shard(tmp_path, 0, [("https://x.example/a.jpg", b"<html>nope</html>", {})])
    (item,) = WebDatasetSource(tmp_path).items()
    assert item.data == b"<html>nope</html>" and item.error is None
    assert item.fields == {"image_url": "https://x.example/a.jpg"}


def write_tar(path: Path, files: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_invalid_json_yields_the_image_with_no_fields(tmp_path: Path) -> None:
    image = jpeg_bytes()
    write_tar(tmp_path / "00000.tar", [("a.jpg", image), ("a.json", b"{not json"),
                                       ("b.jpg", image), ("b.json", b"[1, 2]"),
                                       ("c.jpg", image), ("c.json", b'{"url": "u"}')])
    source = WebDatasetSource(tmp_path)
    items = list(source.items())
    assert [(item.source_record, item.fields) for item in items] == [
        ("00000.tar/a", {}), ("00000.tar/b", {}), ("00000.tar/c", {"image_url": "u"})]
    assert all(item.data == image for item in items)
    assert source.coverage.malformed == 2
    assert source.coverage.malformed_examples[0].startswith("00000.tar/a.json: invalid JSON")
    # No parquet: counted from the samples themselves.
    assert (source.coverage.rows, source.coverage.downloaded) == (3, 3)


def test_grouping_members_and_samples_without_image(tmp_path: Path) -> None:
    image = jpeg_bytes()
    path = tmp_path / "shard.tar"
    with tarfile.open(path, mode="w") as tar:
        directory = tarfile.TarInfo("sub")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        link = tarfile.TarInfo("sub/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        for name, data in [("sub/x.JPEG", image), ("sub/x.json", b'{"title": "T"}'),
                           ("only.json", b'{"url": "u"}'), ("only.txt", b"caption"),
                           ("noextension", b"?"), ("y.seg.png", b"mask"), ("y.png", image)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    source = WebDatasetSource(tmp_path)
    items = list(source.items())
    assert [(item.ref, item.source_record, item.fields) for item in items] == [
        ("shard.tar/sub/x.JPEG", "shard.tar/sub/x", {"title": "T"}),
        ("shard.tar/y.png", "shard.tar/y", {})]
    assert source.coverage.rows == 3 and source.coverage.downloaded == 2
    assert source.coverage.not_downloaded == {"no image in the sample": 1}


def test_oversized_member_is_an_error_item(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    write_webdataset_shard(tmp_path, 0, [sample(1)])
    monkeypatch.setattr(webdataset, "MAX_IMAGE_BYTES", 100)
    (item,) = WebDatasetSource(tmp_path).items()
    assert item.data is None and "more than the limit" in item.error
    assert item.location.size > 100 and item.fields["image_url"] == URL.format(1)


def test_location_and_exif_never_reach_fields(tmp_path: Path) -> None:
    exif = json.dumps({"GPS GPSLatitude": "[48, 51, 2436/100]", "GPS GPSLongitude": "[2, 21, 0]"})
    write_webdataset_shard(tmp_path, 0, [sample(1, latitude=48.858844, longitude=2.294351,
                                                accuracy=16, exif=exif, Latitude="48.85")])
    write_files_shard(tmp_path / "files", 0, [sample(2, latitude=48.858844, longitude=2.2943)])
    items = [*WebDatasetSource(tmp_path).items(), *Img2DatasetFilesSource(tmp_path / "files")
             .items()]
    assert len(items) == 2
    for item in items:
        assert set(item.fields) <= set(GIVEN_FIELDS)
        assert not any(value and ("48." in value or "2.29" in value or "GPS" in value)
                       for value in item.fields.values())


def test_field_map(tmp_path: Path) -> None:
    write_webdataset_shard(tmp_path, 0, [sample(1, flickr_owner="12345@N00")])
    source = WebDatasetSource(tmp_path, {"uploader_id": "flickr_owner"})
    (item,) = source.items()
    assert item.fields["uploader_id"] == "12345@N00"
    assert source.identity()["field_map"] == {"uploader_id": "flickr_owner"}
    with pytest.raises(SourceError, match="no column"):
        list(WebDatasetSource(tmp_path, {"uploader_id": "missing"}).items())


def test_files_layout(tmp_path: Path) -> None:
    samples = [sample(1, photoid=7), sample(2)]
    write_files_shard(tmp_path, 0, samples, failed=[("https://x.example/q.jpg",
                                                     "HTTP Error 410: Gone")])
    write_files_shard(tmp_path, 1, [sample(3)])
    (tmp_path / "00001" / "notes.md").write_text("not an image")
    (tmp_path / "00000" / "000000001.json").write_text("{broken")
    source = Img2DatasetFilesSource(tmp_path)
    items = list(source.items())

    assert [item.ref for item in items] == ["00000/000000000.jpg", "00000/000000001.jpg",
                                            "00001/000010000.jpg"]
    assert [item.source_record for item in items] == ["00000/000000000", "00000/000000001",
                                                      "00001/000010000"]
    assert items[0].fields == {"photo_id": "7", "image_url": URL.format(1)}
    assert items[1].fields == {}
    assert all(item.data is None and item.error is None for item in items)
    assert read_location(source.root, items[0].location) == samples[0][1]
    assert items[0].location.offset is None and items[0].location.size is None
    assert source.coverage.rows == 4 and source.coverage.downloaded == 3
    assert source.coverage.not_downloaded == {"failed_to_download: HTTP 410": 1}
    assert source.coverage.malformed == 1
    assert source.kind == "img2dataset-files"
    assert source.identity() == {"kind": "img2dataset-files", "path": str(tmp_path.resolve()),
                                 "field_map": {}}


def test_files_layout_without_parquet_counts_the_images(tmp_path: Path) -> None:
    write_files_shard(tmp_path, 0, [sample(1), sample(2)], failed=[("u", "HTTP Error 404")])
    (tmp_path / "00000.parquet").unlink()
    os.mkfifo(tmp_path / "00000" / "fifo.jpg")
    source = Img2DatasetFilesSource(tmp_path)
    items = list(source.items())
    assert [item.error for item in items] == [None, None, "a FIFO"]
    assert (source.coverage.rows, source.coverage.downloaded) == (3, 3)


def test_detect(tmp_path: Path) -> None:
    web = tmp_path / "web"
    write_webdataset_shard(web, 0, [sample(1)])
    assert detect_img2dataset(web) == "webdataset"

    files = tmp_path / "files"
    write_files_shard(files, 0, [sample(1)])
    assert detect_img2dataset(files) == "files"
    (files / "00000.parquet").unlink()
    assert detect_img2dataset(files) == "files"  # NNNNN_stats.json is enough
    (files / "00000_stats.json").unlink()
    assert detect_img2dataset(files) is None

    other = tmp_path / "other"
    other.mkdir()
    (other / "photos.tar").write_bytes(b"")
    assert detect_img2dataset(other) == "webdataset"

    plain = tmp_path / "plain"
    (plain / "00000").mkdir(parents=True)
    (plain / "00000" / "a.jpg").write_bytes(jpeg_bytes())
    assert detect_img2dataset(plain) is None
    assert detect_img2dataset(tmp_path / "missing") is None


def test_missing_or_empty_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        WebDatasetSource(tmp_path / "missing")
    with pytest.raises(SourceError, match="no .tar shards"):
        WebDatasetSource(tmp_path)
    with pytest.raises(SourceError, match="no img2dataset shard folders"):
        Img2DatasetFilesSource(tmp_path)
