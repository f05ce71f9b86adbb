"""ManifestSource: CSV, TSV, JSON Lines and Parquet manifests, plain or compressed."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from faceaudit.indexer.readers import manifest as manifest_module
from faceaudit.indexer.readers.base import GIVEN_FIELDS, ByteLocation, SourceError
from faceaudit.indexer.readers.manifest import ManifestSource, manifest_format

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FORMATS = ("csv", "tsv", "jsonl", "parquet")
COMPRESSIONS = ("", ".gz", ".bz2")

ROWS: list[dict[str, Any]] = [
    {"file": "a/one.jpg", "url": "https://img.example/1.jpg", "author": "Ann",
     "licence": "CC BY 2.0", "latitude": "48.85", "longitude": "2.35", "age": "34"},
    {"file": "two.jpg", "url": "https://img.example/2.jpg", "author": "Bob",
     "licence": "CC0", "latitude": "51.5", "longitude": "-0.12", "age": "51"},
]


def encode(rows: list[dict[str, Any]], fmt: str) -> bytes:
    """``rows`` as a manifest of format ``fmt`` (header = the union of keys, in order)."""
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        return sink.getvalue()
    header = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writerow(header)
    writer.writerows([row.get(key, "") for key in header] for row in rows)
    return text.getvalue().encode()


def write(folder: Path, name: str, data: bytes) -> Path:
    if name.lower().endswith(".gz"):
        data = gzip.compress(data)
    elif name.lower().endswith(".bz2"):
        data = bz2.compress(data)
    path = folder / name
    path.write_bytes(data)
    return path


def manifest(folder: Path, rows: list[dict[str, Any]], fmt: str = "csv",
             compression: str = "") -> Path:
    return write(folder, f"photos.{fmt}{compression}", encode(rows, fmt))


def read(path: Path, field_map: dict[str, str] | None = None) -> tuple[ManifestSource, list]:
    source = ManifestSource(path, field_map)
    return source, list(source.items())


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_every_format(tmp_path: Path, fmt: str, compression: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.jpg").write_bytes(b"fake jpeg")
    path = manifest(tmp_path, ROWS, fmt, compression)
    source, items = read(path)
    assert source.kind == "manifest"
    assert source.root == tmp_path.resolve()
    assert [item.ref for item in items] == ["a/one.jpg", "two.jpg"]
    assert items[0].location == ByteLocation("a/one.jpg")
    assert items[0].data is None and items[0].error is None
    assert items[0].fields == {"image_url": "https://img.example/1.jpg", "uploader_name": "Ann",
                               "licence_name": "CC BY 2.0"}
    name = path.name
    expected = ([f"{name}:row 1", f"{name}:row 2"] if fmt == "parquet" else
                [f"{name}:2", f"{name}:3"] if fmt != "jsonl" else [f"{name}:1", f"{name}:2"])
    assert [item.source_record for item in items] == expected
    assert source.coverage.as_dict() == {"rows": 2, "downloaded": 2, "not_downloaded": {},
                                         "malformed": 0, "malformed_examples": []}


@pytest.mark.parametrize("name", ["photos.tab", "photos.ndjson", "PHOTOS.CSV.GZ"])
def test_other_suffixes(tmp_path: Path, name: str) -> None:
    fmt = {"photos.tab": "tsv", "photos.ndjson": "jsonl", "PHOTOS.CSV.GZ": "csv"}[name]
    source, items = read(write(tmp_path, name, encode(ROWS, fmt)))
    assert [item.ref for item in items] == ["a/one.jpg", "two.jpg"]
    assert items[1].source_record.startswith(f"{name}:")


def test_manifest_format() -> None:
    assert manifest_format(Path("x/photos.csv.gz")) == ("csv", ".gz")
    assert manifest_format(Path("photos.v2.parquet.bz2")) == ("parquet", ".bz2")
    assert manifest_format(Path("p.NDJSON")) == ("jsonl", None)


@pytest.mark.parametrize("name", ["photos.xlsx", "photos.gz", "photos", "photos.csv.zip"])
def test_unknown_suffix_names_the_supported_ones(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"file\na.jpg\n")
    with pytest.raises(SourceError, match=r"\.csv.*\.tsv.*\.jsonl.*\.parquet"):
        ManifestSource(tmp_path / name)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        ManifestSource(tmp_path / "nope.csv")


@pytest.mark.parametrize(("column", "field"), [
    ("file", "image"), ("path", "image"), ("image", "image"), ("FileName", "image"),
    ("url", "image_url"), ("image_url", "image_url"), ("Photo_URL", "image_url"),
    ("page", "page_url"), ("page_url", "page_url"), ("PHOTO_PAGE", "page_url"),
    ("author", "uploader_name"), ("Photographer", "uploader_name"),
    ("uploader", "uploader_name"), ("license", "licence_name"), ("Licence", "licence_name"),
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_column_aliases(tmp_path: Path, fmt: str, column: str, field: str) -> None:
    image = "pic" if field != "image" else column
    row = {image: "x.jpg"} if field == "image" else {"pic": "x.jpg", column: "value"}
    _, items = read(manifest(tmp_path, [row], fmt), {"image": "pic"} if image == "pic" else None)
    assert items[0].ref == "x.jpg"
    if field != "image":
        assert items[0].fields == {field: "value"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_field_map_overrides_aliases(tmp_path: Path, fmt: str) -> None:
    rows = [{"file": "wrong.jpg", "Picture": "right.jpg", "author": "alias", "Credit": "mapped",
             "owner_name": "Eve"}]
    _, items = read(manifest(tmp_path, rows, fmt),
                    {"image": "picture", "uploader_name": "Credit"})  # case-insensitive
    assert items[0].ref == "right.jpg"
    assert items[0].fields["uploader_name"] == "mapped"


@pytest.mark.parametrize("fmt", FORMATS)
def test_field_map_naming_a_missing_column(tmp_path: Path, fmt: str) -> None:
    path = manifest(tmp_path, ROWS, fmt)
    with pytest.raises(SourceError, match="no column 'creditline'"):
        ManifestSource(path, {"uploader_name": "creditline"})


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_image_column(tmp_path: Path, fmt: str) -> None:
    path = manifest(tmp_path, [{"picture": "a.jpg", "author": "Ann"}], fmt)
    with pytest.raises(SourceError) as raised:
        ManifestSource(path)
    message = str(raised.value)
    assert "no image column" in message and "picture" in message
    assert "file, path" in message and "--map image=COLUMN" in message


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_location_and_biometric_columns_never_read(tmp_path: Path, fmt: str,
                                                   compression: str) -> None:
    rows = [{**row, "lat": "1.5", "lon": "2.5", "gender": "f", "person_name": "Zoe"}
            for row in ROWS]
    _, items = read(manifest(tmp_path, rows, fmt, compression))
    for item in items:
        assert set(item.fields) <= set(GIVEN_FIELDS)
        values = set(item.fields.values())
        assert not values & {"48.85", "2.35", "34", "51.5", "-0.12", "51", "1.5", "2.5", "f",
                             "Zoe"}


def test_parquet_reads_only_the_needed_columns(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    original = pq.ParquetFile.iter_batches

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(list(kwargs["columns"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    read(manifest(tmp_path, ROWS, "parquet", ".gz"))
    assert sorted(asked[0]) == ["author", "file", "licence", "url"]


def test_parquet_rows_numbered_across_batches(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "PARQUET_BATCH_ROWS", 2)
    rows = [{"file": f"{n}.jpg"} for n in range(1, 6)]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, row_group_size=3)
    _, items = read(write(tmp_path, "p.parquet", sink.getvalue()))
    assert [item.ref for item in items] == [f"{n}.jpg" for n in range(1, 6)]
    assert [item.source_record for item in items] == [f"p.parquet:row {n}" for n in range(1, 6)]


def test_numeric_ids_are_not_floats(tmp_path: Path) -> None:
    table = pa.table({"file": ["a.jpg", "b.jpg"], "photo_id": pa.array([123.0, None]),
                      "owner_id": pa.array([7, 8], pa.int64()), "title": [b"caf\xc3\xa9", None]})
    pq.write_table(table, tmp_path / "p.parquet")
    _, items = read(tmp_path / "p.parquet", {"uploader_id": "owner_id"})
    assert items[0].fields == {"photo_id": "123", "uploader_id": "7", "title": "café"}
    assert items[1].fields == {"photo_id": None, "uploader_id": "8", "title": None}
    _, items = read(manifest(tmp_path, [{"file": "a.jpg", "photo_id": 123}], "csv"))
    assert items[0].fields["photo_id"] == "123"
    _, items = read(manifest(tmp_path, [{"file": "a.jpg", "photo_id": 123.0}], "jsonl"))
    assert items[0].fields["photo_id"] == "123"


def test_csv_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    text = ('file,title\n'
            'a.jpg,"a title\nover two lines"\n'
            '\n'
            'b.jpg,plain\n')
    _, items = read(write(tmp_path, "m.csv", text.encode()))
    assert [(item.ref, item.source_record) for item in items] == [("a.jpg", "m.csv:2"),
                                                                  ("b.jpg", "m.csv:5")]
    assert items[0].fields["title"] == "a title\nover two lines"


def test_long_cells_are_read(tmp_path: Path) -> None:
    long_title = "x" * 500_000  # over csv's default field limit of 128 KiB
    _, items = read(manifest(tmp_path, [{"file": "a.jpg", "title": long_title}], "csv"))
    assert items[0].fields["title"] == long_title


def test_malformed_csv_rows_are_counted_and_skipped(tmp_path: Path) -> None:
    text = ("\ufeffFile,author\n"  # a byte-order mark before the header
            "a.jpg,Ann\n"
            "b.jpg,Bob,extra\n"
            "only-one-cell\n"
            ",Nobody\n"
            "c.jpg,Caf").encode() + b"\xe9\n"  # Latin-1, not UTF-8
    source, items = read(write(tmp_path, "m.csv.gz", text))
    assert [item.ref for item in items] == ["a.jpg", "c.jpg"]
    assert items[1].fields["uploader_name"] == "Caf\ufffd"  # not UTF-8: replaced, not fatal
    coverage = source.coverage
    assert (coverage.rows, coverage.downloaded, coverage.malformed) == (5, 2, 3)
    assert coverage.malformed_examples[0] == "m.csv.gz:3: 3 cells, the header has 2"
    assert coverage.malformed_examples[2].startswith("m.csv.gz:5: empty 'File' cell")


def test_malformed_jsonl_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    lines = ['{"path": "a.jpg", "author": "Ann"}', "{not json", "", '["b.jpg"]', "42",
             '{"author": "no image"}', '{"path": null}', '{"path": "c.jpg"}']
    source, items = read(write(tmp_path, "m.jsonl.bz2", "\n".join(lines).encode()))
    assert [(item.ref, item.source_record) for item in items] == [("a.jpg", "m.jsonl.bz2:1"),
                                                                  ("c.jpg", "m.jsonl.bz2:8")]
    assert (source.coverage.rows, source.coverage.downloaded, source.coverage.malformed) == (
        7, 2, 5)
    examples = source.coverage.malformed_examples
    assert examples[0].startswith("m.jsonl.bz2:2: not valid JSON")
    assert examples[1] == "m.jsonl.bz2:4: a JSON list, not an object"
    assert examples[3] == "m.jsonl.bz2:6: empty 'path' cell"


def test_jsonl_keys_first_seen_late_are_read(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "JSONL_SAMPLE_LINES", 1)
    rows = [{"file": "a.jpg"}, {"file": "b.jpg", "author": "Bob", "lat": 1.0}]
    _, items = read(manifest(tmp_path, rows, "jsonl"))
    assert items[0].fields == {}
    assert items[1].fields == {"uploader_name": "Bob"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", ["../outside.jpg", "a/../../x.jpg", "/etc/shadow",
                                 "C:\\photos\\a.jpg", "https://img.example/a.jpg"])
def test_paths_outside_the_folder_are_refused(tmp_path: Path, fmt: str, bad: str) -> None:
    source, items = read(manifest(tmp_path, [{"file": bad}, {"file": "ok.jpg"}], fmt))
    assert [item.ref for item in items] == ["ok.jpg"]
    assert source.coverage.rows == 2 and source.coverage.malformed == 1


def test_paths_are_normalised(tmp_path: Path) -> None:
    rows = [{"file": "./a//b.jpg"}, {"file": "sub\\c.jpg"}, {"file": " d.jpg "}]
    _, items = read(manifest(tmp_path, rows, "csv"))
    assert [item.ref for item in items] == ["a/b.jpg", "sub/c.jpg", "d.jpg"]


def test_missing_files_and_duplicates_are_still_yielded(tmp_path: Path) -> None:
    rows = [{"file": "gone.jpg"}, {"file": "gone.jpg"}]
    source, items = read(manifest(tmp_path, rows, "csv"))
    assert [item.ref for item in items] == ["gone.jpg", "gone.jpg"]
    assert source.coverage.downloaded == 2 and not source.coverage.not_downloaded


def test_identity(tmp_path: Path) -> None:
    path = manifest(tmp_path, ROWS, "csv")
    source = ManifestSource(path, {"uploader_name": "author"})
    identity = source.identity()
    assert identity == {"kind": "manifest", "path": str(path.resolve()),
                        "field_map": {"uploader_name": "author"}}
    assert json.loads(json.dumps(identity)) == identity


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.tsv.gz"])
def test_empty_manifest(tmp_path: Path, name: str) -> None:
    with pytest.raises(SourceError, match="empty|no JSON object"):
        ManifestSource(write(tmp_path, name, b""))


def test_not_really_compressed(tmp_path: Path) -> None:
    (tmp_path / "m.csv.gz").write_bytes(b"file\na.jpg\n")
    with pytest.raises(SourceError, match="cannot be read"):
        ManifestSource(tmp_path / "m.csv.gz")


def test_not_really_parquet(tmp_path: Path) -> None:
    (tmp_path / "m.parquet").write_bytes(b"file\na.jpg\n")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        ManifestSource(tmp_path / "m.parquet")


def test_truncated_stream_is_an_error(tmp_path: Path) -> None:
    data = gzip.compress(encode([{"file": f"{n}.jpg"} for n in range(5000)], "csv"))
    (tmp_path / "m.csv.gz").write_bytes(data[: len(data) // 2])
    source = ManifestSource(tmp_path / "m.csv.gz")
    with pytest.raises(SourceError, match="damaged or truncated"):
        list(source.items())
    assert source.coverage.downloaded > 0
