"""A manifest: one row per image (CSV, TSV, JSON Lines or Parquet, plain or .gz/.bz2).

Each row names an image file relative to the manifest's folder and may give its provenance
through the recognised column names or ``--map``. Rows are streamed (Parquet in batches of
the needed columns only); a bad row is counted and skipped, never fatal.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import re
import zlib
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import IO, Any

from faceaudit.indexer.readers.base import (
    COLUMN_ALIASES,
    IMAGE_FIELD,
    ByteLocation,
    Coverage,
    SourceError,
    SourceItem,
    clean_value,
    fields_from_row,
    resolve_columns,
    safe_relative,
)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet"}
COMPRESSIONS: dict[str, Callable[..., IO[Any]]] = {".gz": gzip.open, ".bz2": bz2.open}
SUPPORTED = ", ".join(f"{suffix}[.gz|.bz2]" for suffix in FORMATS)

JSONL_SAMPLE_LINES = 1000  # JSON Lines keys are learnt from these lines (and later ones)
PARQUET_BATCH_ROWS = 4096
# Above csv's default of 128 KiB (long descriptions), yet bounded: an unbalanced quote must
# not make the rest of a large file one field held in memory.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
# Errors of a damaged or truncated .gz/.bz2 stream.
STREAM_ERRORS = (OSError, EOFError, zlib.error)
WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")  # C:\photos\a.jpg

Row = tuple[str, dict[str, Any] | None, str | None]  # (where, row or None, why malformed)


def manifest_format(path: Path) -> tuple[str, str | None]:
    """(format, compression suffix or None) from the file name: ``photos.csv.gz`` ->
    ``("csv", ".gz")``. SourceError for a name with no supported suffix."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else None
    if not suffixes or suffixes[-1] not in FORMATS:
        raise SourceError(f"{path.name}: not a recognised manifest. Supported: {SUPPORTED}.")
    return FORMATS[suffixes[-1]], compression


class ManifestSource:
    """The images a manifest lists, in file order, paths relative to its folder."""

    kind = "manifest"

    def __init__(self, path: Path, field_map: Mapping[str, str] | None = None) -> None:
        if not path.is_file():
            raise SourceError(f"The manifest {path} does not exist or is not a file.")
        self.path = path.resolve()
        self.format, self.compression = manifest_format(self.path)
        self.root = self.path.parent
        self.field_map = dict(field_map or {})
        self.coverage = Coverage()
        self._parquet_buffer: Any = None  # a compressed Parquet file, decompressed
        self._known_keys: list[str] = []  # JSON Lines: every key seen so far, in order
        self._known_set: set[str] = set()
        self.columns = self._resolve(self._column_names())

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "field_map": dict(self.field_map)}

    def items(self) -> Iterator[SourceItem]:
        rows = {"csv": self._delimited_rows, "tsv": self._delimited_rows,
                "jsonl": self._jsonl_rows, "parquet": self._parquet_rows}[self.format]()
        try:
            for where, row, why in rows:
                self.coverage.rows += 1
                relative = None
                if row is not None:
                    relative, why = self._image_path(row)
                if relative is None:
                    self.coverage.add_malformed(where, why or "unreadable row")
                    continue
                self.coverage.downloaded += 1
                yield SourceItem(ref=relative, location=ByteLocation(relative),
                                 fields=fields_from_row(row or {}, self.columns),
                                 source_record=where)
        except STREAM_ERRORS as error:
            raise SourceError(
                f"{self.path.name}: reading stopped after {self.coverage.rows:,} rows: {error}. "
                "The file is damaged or truncated; download or decompress it again.") from None
        finally:
            self._parquet_buffer = None

    # Columns

    def _column_names(self) -> list[str]:
        try:
            if self.format == "parquet":
                with self._parquet_file() as parquet:
                    return list(parquet.schema_arrow.names)
            if self.format == "jsonl":
                return self._sample_jsonl_keys()
            with self._open_text() as handle:
                header = next(csv.reader(handle, delimiter=self._delimiter()), None)
        except STREAM_ERRORS as error:
            hint = f" Is it really {self.compression}-compressed?" if self.compression else ""
            raise SourceError(f"{self.path.name} cannot be read: {error}.{hint}") from None
        except csv.Error as error:
            raise SourceError(f"{self.path.name}: its header cannot be parsed: {error}.") from None
        if not header:
            raise SourceError(f"{self.path.name} is empty: a manifest needs a header line and "
                              "one row per image.")
        return [name.strip() for name in header]

    def _resolve(self, names: list[str]) -> dict[str, str]:
        try:
            columns = resolve_columns(names, self.field_map)
        except SourceError as error:
            if self.format != "jsonl":
                raise
            raise SourceError(f"{error.message} (JSON Lines keys are read from the first "
                              f"{JSONL_SAMPLE_LINES} lines.)") from None
        if IMAGE_FIELD not in columns:
            raise SourceError(
                f"{self.path.name} has no image column: none of its columns "
                f"({', '.join(names[:30]) or 'none'}) is one of the recognised names "
                f"({', '.join(COLUMN_ALIASES[IMAGE_FIELD])}). Name the column holding each "
                "image's file path (relative to the manifest's folder) with --map image=COLUMN.")
        return columns

    def _learn_keys(self, row: Mapping[str, Any]) -> None:
        """Adds a JSON Lines row's new keys; a field found only now is read from then on (a
        field already resolved keeps its column, so every row reads it from the same key)."""
        new = [key for key in row if key not in self._known_set]
        if not new:
            return
        self._known_keys.extend(new)
        self._known_set.update(new)
        for name, column in resolve_columns(self._known_keys, self.field_map).items():
            self.columns.setdefault(name, column)

    def _image_path(self, row: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(path relative to the root, None) or (None, why the row names no usable file)."""
        column = self.columns[IMAGE_FIELD]
        value = row.get(column)
        if isinstance(value, (bytes, bytearray, dict, list)):
            return None, f"the {column!r} cell holds {type(value).__name__}, not a file path"
        text = clean_value(value)
        if text is None:
            return None, f"empty {column!r} cell"
        if "://" in text:
            return None, (f"{column!r} is a URL ({text[:100]}), not a file: download the "
                          "images first and name their local files")
        relative = None if WINDOWS_ABSOLUTE.match(text) else safe_relative(text)
        if relative is None:
            return None, (f"{text[:200]!r} is not a path inside the manifest's folder "
                          "(absolute, or leaving it with ..)")
        return relative, None

    # Formats

    def _open_text(self) -> IO[str]:
        opener = COMPRESSIONS.get(self.compression or "", open)
        # utf-8-sig drops a byte-order mark; bytes that are not UTF-8 become U+FFFD.
        return opener(self.path, "rt", encoding="utf-8-sig", errors="replace", newline="")

    def _delimiter(self) -> str:
        return "\t" if self.format == "tsv" else ","

    def _delimited_rows(self) -> Iterator[Row]:
        csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
        with self._open_text() as handle:
            reader = csv.reader(handle, delimiter=self._delimiter())
            header = [name.strip() for name in next(reader, [])]
            while True:
                line = reader.line_num + 1  # where the next row starts (header = line 1)
                where = f"{self.path.name}:{line}"
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:
                    if reader.line_num < line:  # nothing consumed: stop rather than loop
                        raise SourceError(f"{where}: cannot be parsed: {error}.") from None
                    yield where, None, f"cannot be parsed: {error}"
                    continue
                if not cells:
                    continue  # a blank line is no row
                if len(cells) != len(header):
                    yield where, None, f"{len(cells)} cells, the header has {len(header)}"
                    continue
                yield where, dict(zip(header, cells, strict=True)), None

    def _jsonl_lines(self) -> Generator[tuple[int, dict[str, Any] | None, str | None]]:
        """(line number, object or None, why not) of every non-blank line."""
        with self._open_text() as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as error:
                    yield number, None, f"not valid JSON ({error})"
                    continue
                if not isinstance(row, dict):
                    yield number, None, f"a JSON {type(row).__name__}, not an object"
                    continue
                yield number, row, None

    def _sample_jsonl_keys(self) -> list[str]:
        seen = 0
        with closing(self._jsonl_lines()) as lines:
            for number, row, _ in lines:
                if number > JSONL_SAMPLE_LINES:
                    break
                if row is not None:
                    seen += 1
                    new = [key for key in row if key not in self._known_set]
                    self._known_keys.extend(new)
                    self._known_set.update(new)
        if not seen:
            raise SourceError(f"{self.path.name} has no JSON object in its first "
                              f"{JSONL_SAMPLE_LINES} lines: JSON Lines is one object per line, "
                              "e.g. {\"file\": \"a.jpg\", \"author\": \"...\"}.")
        return list(self._known_keys)

    def _jsonl_rows(self) -> Iterator[Row]:
        for number, row, why in self._jsonl_lines():
            if row is not None:
                self._learn_keys(row)
            yield f"{self.path.name}:{number}", row, why

    def _parquet_file(self) -> Any:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SourceError("Reading a Parquet manifest needs pyarrow: pip install pyarrow "
                              "(or convert the manifest to CSV).") from None
        try:
            if self.compression is None:
                return pq.ParquetFile(self.path)
            if self._parquet_buffer is None:
                with COMPRESSIONS[self.compression](self.path, "rb") as handle:
                    self._parquet_buffer = pa.py_buffer(handle.read())
            return pq.ParquetFile(pa.BufferReader(self._parquet_buffer))
        except pa.ArrowException as error:
            raise SourceError(
                f"{self.path.name} is not a readable Parquet file: {error}.") from None

    def _parquet_rows(self) -> Iterator[Row]:
        import pyarrow as pa

        needed = list(dict.fromkeys(self.columns.values()))
        image_column = self.columns[IMAGE_FIELD]
        number = 0
        with self._parquet_file() as parquet:
            batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=needed)
            try:
                for batch in batches:
                    for row in batch.to_pylist():
                        number += 1
                        yield f"{self.path.name}:row {number}", {
                            column: value.decode("utf-8", "replace")
                            if isinstance(value, bytes) and column != image_column else value
                            for column, value in row.items()}, None
            except pa.ArrowException as error:
                raise SourceError(f"{self.path.name}: reading stopped after row {number:,}: "
                                  f"{error}. The file is damaged; write it again.") from None
