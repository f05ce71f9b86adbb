"""What every source reader yields: one ``SourceItem`` per image, in a stable order.

A reader turns a dataset as it is distributed (a folder, a manifest, img2dataset shards) into
items: where the image's bytes are, the provenance the source gives for it, and where that
row came from. The build pipeline never knows which kind of source it reads.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote_plus

from faceaudit.errors import FaceAuditError

# The provenance of one image, exactly these keys, in this order, in every search hit. A field
# the source does not give is None, never guessed.
PROVENANCE_FIELDS = (
    "dataset", "photo_id", "page_url", "image_url", "uploader_id", "uploader_name", "title",
    "licence_name", "licence_url", "date_taken", "date_uploaded", "sha256", "source_record",
)
# The fields a source row may give (the others are set by faceaudit: dataset, sha256 of the
# bytes indexed, source_record).
GIVEN_FIELDS = tuple(f for f in PROVENANCE_FIELDS if f not in ("dataset", "sha256",
                                                                  "source_record"))
IMAGE_FIELD = "image"  # the column naming the image's local file (manifests)

# Column names recognised without --map, compared case-insensitively. Only these are ever read
# from a source: nothing else (locations, EXIF, biometric measures, labels, names of people
# pictured) can reach an index.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    IMAGE_FIELD: ("image", "file", "path", "filename", "file_name", "image_path", "filepath",
                  "local_path"),
    "photo_id": ("photo_id", "photoid", "flickr_id", "flickr_photo_id"),
    "image_url": ("image_url", "url", "photo_url", "downloadurl", "download_url", "img_url"),
    "page_url": ("page_url", "page", "photo_page", "pageurl", "photo_page_url", "source_page"),
    "uploader_id": ("uploader_id", "uid", "owner", "nsid", "user_id", "owner_id"),
    "uploader_name": ("uploader_name", "author", "photographer", "uploader", "unickname",
                      "owner_name", "username", "user_name", "creator"),
    "title": ("title",),
    "licence_name": ("licence_name", "license_name", "license", "licence", "licensename"),
    "licence_url": ("licence_url", "license_url", "licenseurl", "licenceurl"),
    "date_taken": ("date_taken", "datetaken", "taken"),
    "date_uploaded": ("date_uploaded", "dateuploaded", "uploaded", "upload_date"),
}
# YFCC100M (and the img2dataset downloads that carry its columns) URL-encodes these.
YFCC_ENCODED_COLUMNS = frozenset({"unickname", "title", "usertags", "description"})

# Bytes read from one file at most: larger "images" are refused before they fill memory.
MAX_IMAGE_BYTES = 256 * 1024 * 1024


class SourceError(FaceAuditError):
    """A source cannot be read at all (a missing manifest, an unknown layout, a bad --map)."""

    code = "bad_source"


@dataclass(frozen=True)
class ByteLocation:
    """Where an image's bytes are: ``path`` relative to the source root (POSIX), and for a
    member of an uncompressed tar its ``offset`` and ``size`` within that file."""

    path: str
    offset: int | None = None
    size: int | None = None


@dataclass
class SourceItem:
    """One image of a source.

    ``ref``: how people and error messages name it (``a/b.jpg``, ``00000.tar/000000042.jpg``).
    ``fields``: provenance the source gives (keys of GIVEN_FIELDS, values str or None).
    ``source_record``: where the row came from (``photos.csv:17``, ``00000.tar/000000042``).
    ``data``: the bytes when the reader already has them (tar streaming); else they are read
    from ``location`` by the pipeline's reader threads.
    ``error``: the source itself makes the item unusable (a FIFO named like a photo); it is
    recorded as failed with this reason and never read.
    """

    ref: str
    location: ByteLocation | None
    fields: dict[str, str | None] = field(default_factory=dict)
    source_record: str = ""
    data: bytes | None = None
    error: str | None = None


@dataclass
class Coverage:
    """How much of a source became items: counted while the reader is iterated.

    ``rows``: images the source lists (manifest rows, img2dataset rows including failed
    downloads, files found). ``downloaded``: rows whose bytes are present. ``not_downloaded``:
    reason -> rows whose bytes were never fetched (img2dataset's failed downloads, a manifest
    naming a missing file). ``malformed``: rows that could not be parsed at all."""

    rows: int = 0
    downloaded: int = 0
    not_downloaded: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)

    def add_malformed(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < 20:
            self.malformed_examples.append(f"{where}: {why}")

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "downloaded": self.downloaded,
                "not_downloaded": dict(self.not_downloaded), "malformed": self.malformed,
                "malformed_examples": list(self.malformed_examples)}


class Source(Protocol):
    kind: str  # "folder", "manifest", "webdataset", "img2dataset-files"
    root: Path  # ByteLocation paths are relative to it
    coverage: Coverage

    def items(self) -> Iterator[SourceItem]:
        """Every item, in a stable order; ``coverage`` is complete once exhausted."""
        ...

    def identity(self) -> dict[str, Any]:
        """What makes a resumed build the same build (kind, root, options)."""
        ...


def clean_value(value: Any) -> str | None:
    """A source's cell as text, None when empty or missing (NaN, None, blank)."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        if value.is_integer():
            value = int(value)  # ids read as floats by a CSV/Parquet writer: 123.0 -> "123"
    text = str(value).strip()
    return text or None


def resolve_columns(columns: list[str], field_map: Mapping[str, str]) -> dict[str, str]:
    """field -> column of ``columns`` to read it from: ``field_map`` (from --map) first, then
    the recognised aliases. A --map naming a missing column is an error."""
    lower = {c.lower(): c for c in columns}
    chosen: dict[str, str] = {}
    for name, column in field_map.items():
        if column not in columns and column.lower() not in lower:
            raise SourceError(
                f"--map {name}={column}: the source has no column {column!r}; its columns are "
                f"{', '.join(columns[:30])}.")
        chosen[name] = column if column in columns else lower[column.lower()]
    for name, aliases in COLUMN_ALIASES.items():
        if name in chosen:
            continue
        for alias in aliases:
            if alias in lower:
                chosen[name] = lower[alias]
                break
    return chosen


def fields_from_row(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, str | None]:
    """The provenance fields of one row, through ``columns`` (from resolve_columns). Columns
    with YFCC100M's names are URL-decoded as YFCC100M encodes them."""
    fields: dict[str, str | None] = {}
    for name, column in columns.items():
        if name == IMAGE_FIELD:
            continue
        value = clean_value(row.get(column))
        if value is not None and column.lower() in YFCC_ENCODED_COLUMNS:
            value = clean_value(unquote_plus(value))
        fields[name] = value
    return fields


def parse_field_map(pairs: list[str]) -> dict[str, str]:
    """``["uploader_name=owner", ...]`` (the --map flags) -> {field: column}."""
    allowed = (IMAGE_FIELD, *GIVEN_FIELDS)
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise SourceError(f"--map {pair!r}: write FIELD=COLUMN, e.g. uploader_name=owner.")
        if name not in allowed:
            raise SourceError(
                f"--map {pair!r}: {name!r} is not a provenance field. Fields: "
                f"{', '.join(allowed)}. (Location, biometric and other columns are never "
                "imported.)")
        result[name] = column
    return result


def safe_relative(path: str) -> str | None:
    """``path`` as a clean relative POSIX path, or None when it is absolute or leaves its
    root (``..``): a manifest must not make the indexer read /etc/shadow."""
    posix = PurePosixPath(path.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or not posix.parts:
        return None
    return posix.as_posix()


class UnreadableFile(Exception):
    """Reading an item's bytes failed; ``transient`` when a retry may succeed (I/O errors)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def read_location(root: Path, location: ByteLocation, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes at ``location`` under ``root``. Never blocks on a FIFO or a device: the file
    is opened non-blocking and must be a regular file. UnreadableFile says why not."""
    path = root / location.path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableFile("the file does not exist (moved or deleted?)",
                             transient=True) from None
    except PermissionError:
        raise UnreadableFile("permission denied: the file cannot be read", transient=True) from None
    except OSError as error:
        if error.errno == 40:  # ELOOP
            raise UnreadableFile("a symbolic link loop, not a photo", transient=False) from None
        raise UnreadableFile(f"cannot open: {error.strerror}", transient=True) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"not a regular file ({describe_mode(info.st_mode)})",
                                 transient=False)
        os.set_blocking(fd, True)
        offset = location.offset or 0
        size = location.size if location.size is not None else info.st_size - offset
        if size > max_bytes:
            raise UnreadableFile(f"{size:,} bytes, more than the limit of {max_bytes:,}",
                                 transient=False)
        if size == 0:
            raise UnreadableFile("an empty (zero-byte) file", transient=False)
        chunks = []
        remaining = size
        while remaining > 0:
            chunk = os.pread(fd, min(remaining, 1 << 24), offset + size - remaining)
            if not chunk:
                raise UnreadableFile("the file is shorter than expected (truncated while "
                                     "reading?)", transient=True)
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise UnreadableFile(f"read error: {error.strerror or error}", transient=True) from None
    finally:
        os.close(fd)


def describe_mode(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"
