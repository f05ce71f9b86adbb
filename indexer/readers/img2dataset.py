"""img2dataset downloads: webdataset shards (``00000.tar``) or the ``files`` layout (``00000/``).

Each shard has a sibling ``00000.parquet`` holding every row of the input, failed downloads
included: it gives the coverage (what was listed, what was fetched, why the rest was not),
while the tar or folder gives the images and their ``.json`` metadata.

The tars are read with the standard library's ``tarfile``, not the ``webdataset`` package: no
dependency, each member's offset is known (items can point at their bytes), and a corrupt
member or a truncated shard is recorded and skipped instead of ending the whole read.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tarfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from faceaudit.imaging import IMAGE_SUFFIXES
from faceaudit.indexer.readers.base import (
    MAX_IMAGE_BYTES,
    ByteLocation,
    Coverage,
    SourceError,
    SourceItem,
    clean_value,
    describe_mode,
    fields_from_row,
    resolve_columns,
)

IMAGE_EXTENSIONS = frozenset(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
MAX_JSON_BYTES = 16 * 1024 * 1024  # img2dataset's metadata is a few kB; more is not metadata
SHARD_NAME = re.compile(r"\d{5,}")

_URL = re.compile(r"\b[a-zA-Z][\w+.-]*://\S+")
_HTTP_ERROR = re.compile(r"HTTP Error (\d{3})\b")
_LONG_NUMBER = re.compile(r"\d{4,}")


def detect_img2dataset(folder: Path) -> str | None:
    """The img2dataset layout in ``folder``: "webdataset" when it holds ``*.tar`` shards,
    "files" when it holds ``NNNNN/`` shard folders with their ``NNNNN.parquet`` or
    ``NNNNN_stats.json``, else None."""
    try:
        entries = {entry.name: entry.is_dir() for entry in os.scandir(folder)
                   if not entry.name.startswith(".")}
    except OSError:
        return None
    if any(_is_tar(name) and not is_dir for name, is_dir in entries.items()):
        return "webdataset"
    for name, is_dir in entries.items():
        if is_dir and SHARD_NAME.fullmatch(name) and (
                f"{name}.parquet" in entries or f"{name}_stats.json" in entries):
            return "files"
    return None


def split_key(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name by the webdataset convention: the key is the name up
    to the first "." of its basename, folders included (``a/b.seg.png`` -> ``a/b``,
    ``seg.png``); None for a name without one."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not stem or not dot:
        return None
    return (f"{folder}/{stem}" if folder else stem), extension


def failure_reason(status: Any, message: Any) -> str:
    """A failed row's reason, normalised so that rows failing the same way group together:
    ``failed_to_download: HTTP 404``."""
    reason = clean_value(status) or "unknown status"
    text = clean_value(message)
    if text is None:
        return reason
    http = _HTTP_ERROR.search(text)
    if http:
        text = f"HTTP {http.group(1)}"
    text = " ".join(_LONG_NUMBER.sub("N", _URL.sub("<url>", text)).split())
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{reason}: {text}"


def parquet_counts(path: Path) -> tuple[int, int, Counter[str]]:
    """(rows, successful rows, reason -> failed rows) of a shard's parquet, read in batches."""
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if "status" not in names:
        raise ValueError("it has no status column")
    columns = ["status", "error_message"] if "error_message" in names else ["status"]
    pairs: Counter[tuple[Any, Any]] = Counter()
    for batch in parquet.iter_batches(columns=columns, batch_size=65536):
        statuses = batch.column(0).to_pylist()
        messages = batch.column(1).to_pylist() if len(columns) == 2 else [None] * len(statuses)
        pairs.update(zip(statuses, messages, strict=True))
    rows = downloaded = 0
    failed: Counter[str] = Counter()
    for (status, message), count in pairs.items():
        rows += count
        if status == "success":
            downloaded += count
        else:
            failed[failure_reason(status, message)] += count
    return rows, downloaded, failed


def add_shard_coverage(coverage: Coverage, parquet: Path, seen: Coverage) -> None:
    """Add one shard's counts to ``coverage``: from its parquet (every row, failed downloads
    included) when it has a readable one, else ``seen`` (what the shard itself held)."""
    if parquet.is_file():
        try:
            rows, downloaded, failed = parquet_counts(parquet)
        except (OSError, ValueError, pa.ArrowException) as error:
            coverage.add_malformed(parquet.name, f"unreadable parquet: {error}")
        else:
            coverage.rows += rows
            coverage.downloaded += downloaded
            coverage.not_downloaded.update(failed)
            return
    coverage.rows += seen.rows
    coverage.downloaded += seen.downloaded
    coverage.not_downloaded.update(seen.not_downloaded)


class _Img2DatasetSource:
    """What both layouts share: the folder, the --map, coverage and the ``.json`` fields."""

    kind = ""

    def __init__(self, folder: Path, field_map: Mapping[str, str] | None = None) -> None:
        self.root = folder.resolve()
        if not self.root.is_dir():
            raise SourceError(f"{folder} does not exist or is not a folder.")
        self.field_map = dict(field_map or {})
        self.coverage = Coverage()
        self._columns: dict[tuple[str, ...], dict[str, str]] = {}

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.root), "field_map": dict(self.field_map)}

    def _fields(self, raw: bytes | None, where: str) -> dict[str, str | None]:
        """The provenance in a sample's ``.json`` (empty, and recorded as malformed, when it
        is not a JSON object). SourceError when --map names a column it lacks."""
        if raw is None:
            return {}
        try:
            row = json.loads(raw)
        except ValueError as error:
            self.coverage.add_malformed(where, f"invalid JSON: {error}")
            return {}
        if not isinstance(row, dict):
            self.coverage.add_malformed(where, "not a JSON object")
            return {}
        keys = tuple(row)
        columns = self._columns.get(keys)
        if columns is None:
            columns = resolve_columns(list(keys), self.field_map)
            if len(self._columns) < 64:  # img2dataset writes the same keys in every sample
                self._columns[keys] = columns
        return fields_from_row(row, columns)


@dataclass
class _Sample:
    """Consecutive tar members sharing one key."""

    key: str
    image: tarfile.TarInfo | None = None
    data: bytes | None = None
    error: str | None = None
    meta: bytes | None = None
    meta_error: str | None = None

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo, extension: str) -> None:
        extension = extension.lower()
        if extension in IMAGE_EXTENSIONS and self.image is None:
            if member.size > MAX_IMAGE_BYTES:
                self.error = f"{member.size:,} bytes, more than the limit of {MAX_IMAGE_BYTES:,}"
            elif member.size == 0:
                self.error = "an empty (zero-byte) file"
            else:
                self.data = _read_member(tar, member)
            self.image = member  # only once its bytes are read: a truncated member is no image
        elif extension == "json" and self.meta is None and self.meta_error is None:
            if member.size > MAX_JSON_BYTES:
                self.meta_error = f"{member.size:,} bytes, too large for metadata"
            else:
                self.meta = _read_member(tar, member)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise tarfile.ReadError(f"{member.name} cannot be read")
    with handle:
        return handle.read()


def _is_tar(name: str) -> bool:
    return name.lower().endswith(".tar") and not name.startswith(".")


def _ends_cleanly(tar: tarfile.TarFile) -> bool:
    """Whether the archive goes on to its end-of-archive block: tarfile stops silently at a
    header cut short, which is how a truncated shard usually ends."""
    assert tar.fileobj is not None
    tar.fileobj.seek(tar.offset)
    return tar.fileobj.read(tarfile.BLOCKSIZE) == tarfile.NUL * tarfile.BLOCKSIZE


class WebDatasetSource(_Img2DatasetSource):
    """The images of img2dataset's ``--output_format webdataset`` shards, streamed from the
    tars (never unpacked); coverage from each shard's parquet."""

    kind = "webdataset"

    def __init__(self, folder: Path, field_map: Mapping[str, str] | None = None) -> None:
        super().__init__(folder, field_map)
        self.shards = sorted((path for path in self.root.iterdir() if _is_tar(path.name)),
                             key=lambda path: path.name)
        if not self.shards:
            raise SourceError(f"{folder} holds no .tar shards.")

    def items(self) -> Iterator[SourceItem]:
        for path in self.shards:
            yield from self.shard_items(path)

    def shard_items(self, path: Path) -> Iterator[SourceItem]:
        """The items of one tar (a unit of a distributed build), its coverage added."""
        shard = path.name
        seen = Coverage()
        for sample in self._samples(path):
            seen.rows += 1
            if sample.image is None:
                seen.not_downloaded["no image in the sample"] += 1
                continue
            seen.downloaded += 1
            image, where = sample.image, f"{shard}/{sample.key}.json"
            if sample.meta_error:
                self.coverage.add_malformed(where, sample.meta_error)
            yield SourceItem(
                ref=f"{shard}/{image.name}",
                location=ByteLocation(shard, offset=image.offset_data, size=image.size),
                fields=self._fields(sample.meta, where),
                source_record=f"{shard}/{sample.key}", data=sample.data, error=sample.error)
        add_shard_coverage(self.coverage, path.with_suffix(".parquet"), seen)

    def _samples(self, path: Path) -> Iterator[_Sample]:
        """The samples of one tar, in order. A shard that cannot be read to its end is
        recorded as malformed; the samples read before the fault are kept."""
        shard = path.name
        try:
            mode = path.stat().st_mode
        except OSError as error:
            self.coverage.add_malformed(shard, f"cannot be examined: {error.strerror}")
            return
        if not stat.S_ISREG(mode):  # a FIFO would block the read forever
            self.coverage.add_malformed(shard, f"{describe_mode(mode)}, not a tar file")
            return
        current: _Sample | None = None
        try:
            with tarfile.open(path, mode="r:") as tar:
                while (member := tar.next()) is not None:
                    parts = split_key(member.name)
                    # Sparse members' stored bytes are not the file: no offset can point at them.
                    if parts is None or not member.isfile() or member.issparse():
                        continue
                    key, extension = parts
                    if current is None or current.key != key:
                        if current is not None:
                            yield current
                        current = _Sample(key)
                    current.add(tar, member, extension)
                if not _ends_cleanly(tar):
                    self.coverage.add_malformed(shard, "truncated: the tar ends before its "
                                                       "end-of-archive marker")
        except (tarfile.TarError, OSError, EOFError) as error:
            self.coverage.add_malformed(shard, f"corrupt or truncated tar: {error}")
        if current is not None:
            yield current


class Img2DatasetFilesSource(_Img2DatasetSource):
    """The images of img2dataset's ``--output_format files`` (``00000/000000001.jpg`` beside
    ``000000001.json``); coverage from each shard's parquet. The pipeline reads the files."""

    kind = "img2dataset-files"

    def __init__(self, folder: Path, field_map: Mapping[str, str] | None = None) -> None:
        super().__init__(folder, field_map)
        self.shards = sorted((path for path in self.root.iterdir()
                              if SHARD_NAME.fullmatch(path.name) and path.is_dir()),
                             key=lambda path: path.name)
        if not self.shards:
            raise SourceError(f"{folder} holds no img2dataset shard folders (00000/, ...).")

    def items(self) -> Iterator[SourceItem]:
        for folder in self.shards:
            seen = Coverage()
            for item in self._shard_items(folder):
                seen.rows += 1
                seen.downloaded += 1
                yield item
            add_shard_coverage(self.coverage, self.root / f"{folder.name}.parquet", seen)

    def _shard_items(self, folder: Path) -> Iterator[SourceItem]:
        shard = folder.name
        try:
            names = sorted(entry.name for entry in os.scandir(folder))
        except OSError as error:
            self.coverage.add_malformed(shard, f"cannot be listed: {error.strerror}")
            return
        present = set(names)
        for name in names:
            parts = split_key(name)
            if parts is None or parts[1].lower() not in IMAGE_EXTENSIONS:
                continue
            key = parts[0]
            ref = f"{shard}/{name}"
            item = SourceItem(ref=ref, location=ByteLocation(ref),
                              source_record=f"{shard}/{key}", error=_unusable(folder / name))
            if item.error is None and f"{key}.json" in present:
                where = f"{shard}/{key}.json"
                item.fields = self._fields(self._read_json(folder / f"{key}.json", where), where)
            yield item

    def _read_json(self, path: Path, where: str) -> bytes | None:
        try:
            info = path.stat()
            if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_JSON_BYTES:
                return path.read_bytes()
            why = (f"{info.st_size:,} bytes, too large for metadata"
                   if stat.S_ISREG(info.st_mode) else describe_mode(info.st_mode))
        except OSError as error:
            why = f"cannot be read: {error.strerror}"
        self.coverage.add_malformed(where, why)
        return None


def _unusable(path: Path) -> str | None:
    """Why the file at ``path`` cannot be an image (a FIFO, a broken link), or None."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"cannot be examined: {error.strerror}"
    return None if stat.S_ISREG(mode) else describe_mode(mode)
