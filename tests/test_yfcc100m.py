"""Joining the YFCC100M metadata file: both layouts, compression, split folders, bad lines."""

from __future__ import annotations

import bz2
import gzip
import hashlib
from pathlib import Path

import pytest

from faceaudit.indexer.readers.base import GIVEN_FIELDS, SourceError
from faceaudit.indexer.readers.yfcc100m import YFCC23, YfccJoin, join_yfcc100m, yfcc_key

FIELDS = ("photo_id", "uploader_id", "uploader_name", "title", "page_url", "image_url",
          "licence_name", "licence_url", "date_taken", "date_uploaded")
# Values of columns that must never be returned (location, text, tags, camera).
SECRET = {"capturedevice": "Canon+IXY+DIGITAL+L", "description": "At+home+on+Elm+Street",
          "usertags": "kitchen,family", "machinetags": "geo:locality=springfield",
          "longitude": "106.917057", "latitude": "47.91939", "accuracy": "16"}


def row(photo_id: str, marker: str = "0", **values: str) -> list[str]:
    """A 23-column row (layout A) of a made-up uploader; ``values`` override columns."""
    cols = {
        "photoid": photo_id, "uid": "12345678@N00", "unickname": "example+user%21",
        "datetaken": "2006-05-31 21:07:00.0", "dateuploaded": "1149429753",
        "title": "Mongolian+plate+%C3%A9t%C3%A9", **SECRET,
        "pageurl": f"http://www.flickr.com/photos/12345678@N00/{photo_id}/",
        "downloadurl": f"http://farm1.staticflickr.com/59/{photo_id}_7b9dd1d7e5.jpg",
        "licensename": "Attribution-NonCommercial-ShareAlike License",
        "licenseurl": "http://creativecommons.org/licenses/by-nc-sa/2.0/",
        "serverid": "59", "farmid": "1", "secret": "7b9dd1d7e5", "secretoriginal": "7b9dd1d7e5",
        "ext": "jpg", "marker": marker}
    cols.update(values)
    return [cols[name] for name in YFCC23]


def as25(cols: list[str], number: int) -> list[str]:
    """Layout B: line number, photo id, hash, then the 23 columns without the photo id."""
    return [str(number), cols[0], "d1d7e57b9dd1d7e5", *cols[1:]]


def lines23() -> list[bytes]:
    return [
        "\t".join(row("101")).encode(),
        "\t".join(row("102", unickname="", title="", datetaken="")).encode(),
        "\t".join(row("103", marker="1")).encode(),  # a video with a requested id
        "\t".join(row("104", dateuploaded="not+a+date")).encode(),
        "\t".join(row("105")).encode(),  # not requested
        b"\t".join([b"106", *[b"x"] * 10]),  # 11 columns
        "\t".join(row("abc")).encode(),  # non-numeric id
        "\t".join(row("107", title="caf\udcff")).encode("utf-8", "surrogateescape"),  # bad byte
        b"",  # a blank line
        b"\xff\xfe\t" + b"\t".join([b"x"] * 22),  # undecodable id
        "\t".join(row("108", dateuploaded="0")).encode(),
    ]


WANTED = ["101", "102", "103", "104", "107", "108", "999"]


def write(path: Path, lines: list[bytes], newline: bytes = b"\n") -> Path:
    data = newline.join(lines) + newline
    if path.suffix == ".bz2":
        path.write_bytes(bz2.compress(data))
    elif path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def check(join_rows: dict[str, dict[str, str | None]]) -> None:
    assert sorted(join_rows) == ["101", "102", "104", "107", "108"]
    first = join_rows["101"]
    assert first == {
        "photo_id": "101", "uploader_id": "12345678@N00", "uploader_name": "example user!",
        "title": "Mongolian plate été", "page_url": "http://www.flickr.com/photos/12345678@N00/101/",
        "image_url": "http://farm1.staticflickr.com/59/101_7b9dd1d7e5.jpg",
        "licence_name": "Attribution-NonCommercial-ShareAlike License",
        "licence_url": "http://creativecommons.org/licenses/by-nc-sa/2.0/",
        "date_taken": "2006-05-31 21:07:00.0", "date_uploaded": "2006-06-04T14:02:33+00:00"}
    assert join_rows["102"]["uploader_name"] is None
    assert join_rows["102"]["title"] is None
    assert join_rows["102"]["date_taken"] is None
    assert join_rows["104"]["date_uploaded"] == "not+a+date"  # kept verbatim
    assert join_rows["107"]["title"] == "caf\ufffd"
    assert join_rows["108"]["date_uploaded"] == "1970-01-01T00:00:00+00:00"
    for fields in join_rows.values():
        assert tuple(fields) == FIELDS and set(fields) <= set(GIVEN_FIELDS)


def check_counts(join: YfccJoin) -> None:
    summary = join.as_dict()
    assert "rows" not in summary
    assert summary["lines"] == 11
    assert summary["photos"] == 6
    assert summary["videos"] == 1
    assert summary["malformed"] == 4
    assert summary["matched"] == 5
    assert summary["requested"] == 7
    examples = summary["malformed_examples"]
    assert any(":6: 11 tab-separated columns" in e for e in examples)
    assert any(":7: photo id 'abc' is not a number" in e for e in examples)
    assert any(":9: 1 tab-separated columns" in e for e in examples)
    assert any(":10: photo id '\ufffd\ufffd' is not a number" in e for e in examples)


@pytest.mark.parametrize("name", ["yfcc100m_dataset-0", "yfcc100m_dataset-0.bz2",
                                  "yfcc100m_dataset-0.gz", "photos.tsv"])
def test_layout_a(tmp_path: Path, name: str) -> None:
    join = join_yfcc100m(write(tmp_path / name, lines23()), WANTED)
    check(join.rows)
    check_counts(join)


@pytest.mark.parametrize("name", ["yfcc100m_dataset", "yfcc100m_dataset.bz2"])
def test_layout_b(tmp_path: Path, name: str) -> None:
    lines = []
    for number, line in enumerate(lines23()):
        cols = line.split(b"\t")
        if len(cols) == 23:
            cols = [str(number).encode(), cols[0], b"d1d7e57b9dd1d7e5", *cols[1:]]
        lines.append(b"\t".join(cols))
    join = join_yfcc100m(write(tmp_path / name, lines, b"\r\n"), WANTED)
    check(join.rows)
    check_counts(join)


def test_layouts_decided_per_line(tmp_path: Path) -> None:
    lines = ["\t".join(row("101")), "\t".join(as25(row("102"), 2)),
             "\t".join(as25(row("103", marker="1"), 3))]
    path = write(tmp_path / "mixed.tsv", [line.encode() for line in lines])
    join = join_yfcc100m(path, ["101", "102", "103"])
    assert sorted(join.rows) == ["101", "102"]
    assert join.rows["102"]["uploader_name"] == "example user!"
    assert (join.lines, join.photos, join.videos, join.malformed) == (3, 2, 1, 0)


def test_never_returns_location_or_text(tmp_path: Path) -> None:
    path = write(tmp_path / "yfcc100m_dataset-0", ["\t".join(row("101")).encode(),
                                                   "\t".join(as25(row("102"), 1)).encode()])
    join = join_yfcc100m(path, ["101", "102"])
    assert len(join.rows) == 2
    for fields in join.rows.values():
        assert tuple(fields) == FIELDS
        for secret in SECRET.values():
            decoded = secret.replace("+", " ")
            for value in fields.values():
                assert secret not in (value or "") and decoded not in (value or "")


def test_split_folder(tmp_path: Path) -> None:
    folder = tmp_path / "yfcc"
    folder.mkdir()
    parts = {0: ["101", "102"], 1: ["103"], 2: ["104"], 10: ["105"]}
    for index, ids in parts.items():
        lines = ["\t".join(row(i)).encode() for i in ids]
        suffix = ".bz2" if index % 2 else ""
        write(folder / f"yfcc100m_dataset-{index}{suffix}", lines)
    (folder / "yfcc100m_hash.bz2").write_bytes(bz2.compress(b"101\tabc\n"))  # not read
    (folder / "README").write_text("not read")
    seen: list[int] = []
    join = join_yfcc100m(folder, ["101", "103", "105"], progress=seen.append)
    assert sorted(join.rows) == ["101", "103", "105"]
    assert [Path(f).name for f in join.files] == [
        "yfcc100m_dataset-0", "yfcc100m_dataset-1.bz2", "yfcc100m_dataset-2",
        "yfcc100m_dataset-10"]
    assert (join.lines, join.photos, join.matched) == (5, 5, 3)
    assert seen == [5]


def test_folder_with_single_file(tmp_path: Path) -> None:
    write(tmp_path / "yfcc100m_dataset.bz2", ["\t".join(as25(row("101"), 0)).encode()])
    assert list(join_yfcc100m(tmp_path, ["101"]).rows) == ["101"]


def test_folder_with_a_part_twice(tmp_path: Path) -> None:
    write(tmp_path / "yfcc100m_dataset-0", [b""])
    write(tmp_path / "yfcc100m_dataset-0.bz2", [b""])
    with pytest.raises(SourceError, match="keep one of them"):
        join_yfcc100m(tmp_path, ["101"])


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        join_yfcc100m(tmp_path / "absent", ["101"])
    with pytest.raises(SourceError, match="no yfcc100m_dataset-N"):
        join_yfcc100m(tmp_path, ["101"])


def test_truncated_bz2_is_reported(tmp_path: Path) -> None:
    data = bz2.compress(("\t".join(row("101")) + "\n").encode() * 1000)
    path = tmp_path / "yfcc100m_dataset-0.bz2"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated or corrupt"):
        join_yfcc100m(path, ["101"])


def test_no_usable_ids_reads_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "yfcc100m_dataset-0", ["\t".join(row("101")).encode()])
    join = join_yfcc100m(path, ["", "abc", "12.5"])
    assert join.rows == {} and join.lines == 0 and join.requested == 0


def test_progress_every(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faceaudit.indexer.readers import yfcc100m

    monkeypatch.setattr(yfcc100m, "PROGRESS_EVERY", 2)
    path = write(tmp_path / "yfcc100m_dataset-0",
                 ["\t".join(row(str(i))).encode() for i in range(1, 6)])
    seen: list[int] = []
    join_yfcc100m(path, ["3"], progress=seen.append)
    assert seen == [2, 4, 5]


def test_yfcc_key() -> None:
    # jfolz/yfcc100m's formulation (reference 1.4): each "%02x" pair rewritten as "%x".
    short = {format(v, "02x"): format(v, "x") for v in range(256)}
    for url in ("http://farm1.staticflickr.com/59/123_7b9dd1d7e5.jpg", "x", ""):
        digest = hashlib.md5(url.encode()).hexdigest()
        assert yfcc_key(url) == "".join(short[digest[i:i + 2]] for i in range(0, 32, 2))
