"""Join the YFCC100M metadata file, as distributed, to the photo ids of a source (--enrich).

The file (99M rows, tab-separated, no header) is streamed once and only the rows of the ids
asked for are kept. Two layouts: the 2014 split files (23 columns, photo id first) and the
single file (25 columns: line number, photo id, hash, then the 23 without the photo id). Only
the provenance fields below are read; location, description, tags and camera never leave here.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_plus

from faceaudit.indexer.readers.base import SourceError, clean_value

YFCC23 = ("photoid", "uid", "unickname", "datetaken", "dateuploaded", "capturedevice", "title",
          "description", "usertags", "machinetags", "longitude", "latitude", "accuracy",
          "pageurl", "downloadurl", "licensename", "licenseurl", "serverid", "farmid", "secret",
          "secretoriginal", "ext", "marker")
YFCC25 = ("line", "photoid", "hash", *YFCC23[1:])

# provenance field -> YFCC100M column. Nothing else is read.
_FIELD_COLUMNS = {
    "photo_id": "photoid", "uploader_id": "uid", "uploader_name": "unickname", "title": "title",
    "page_url": "pageurl", "image_url": "downloadurl", "licence_name": "licensename",
    "licence_url": "licenseurl", "date_taken": "datetaken", "date_uploaded": "dateuploaded",
}
_ENCODED = frozenset({"unickname", "title"})  # URL-encoded in the file ("+" = space, %XX)
_INDEXES = {
    23: {f: YFCC23.index(c) for f, c in _FIELD_COLUMNS.items()},
    25: {f: YFCC25.index(c) for f, c in _FIELD_COLUMNS.items()},
}
_SPLIT_FILE = re.compile(r"yfcc100m_dataset-(\d+)(\.bz2|\.gz)?", re.ASCII)
_SINGLE_FILE = re.compile(r"yfcc100m_dataset(\.bz2|\.gz)?")
PROGRESS_EVERY = 1_000_000  # lines between progress calls
MAX_EXAMPLES = 20
_PHOTO_ENDS = (b"\t0\n", b"\t0\r\n", b"\t0")  # a line whose marker is 0, with its end


@dataclass
class YfccJoin:
    """The rows of the requested photos (photo id -> provenance fields) and what was read."""

    rows: dict[str, dict[str, str | None]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    requested: int = 0
    lines: int = 0
    photos: int = 0
    videos: int = 0
    malformed: int = 0
    matched: int = 0
    malformed_examples: list[str] = field(default_factory=list)

    def add_malformed(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < MAX_EXAMPLES:
            self.malformed_examples.append(f"{where}: {why}")

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary, without the rows."""
        return {"files": list(self.files), "requested": self.requested, "lines": self.lines,
                "photos": self.photos, "videos": self.videos, "malformed": self.malformed,
                "matched": self.matched, "malformed_examples": list(self.malformed_examples)}


def yfcc_files(path: Path) -> list[Path]:
    """The files to read for ``path``: the file itself, or in a folder the split files
    ``yfcc100m_dataset-0`` ... ``-9`` (plain, .bz2 or .gz) in order, else the single
    ``yfcc100m_dataset``."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"--enrich yfcc100m={path}: no such file or folder. Give the YFCC100M "
                          "metadata file (yfcc100m_dataset[.bz2]) or the folder of its split "
                          "files (yfcc100m_dataset-0 ... -9).")
    split: dict[int, list[Path]] = {}
    single: list[Path] = []
    for child in path.iterdir():
        if not child.is_file():
            continue
        if match := _SPLIT_FILE.fullmatch(child.name):
            split.setdefault(int(match[1]), []).append(child)
        elif _SINGLE_FILE.fullmatch(child.name):
            single.append(child)
    chosen = split or ({0: single} if single else {})
    if not chosen:
        raise SourceError(f"--enrich yfcc100m={path}: the folder has no yfcc100m_dataset-N or "
                          "yfcc100m_dataset file (plain, .bz2 or .gz). Point at the file itself "
                          "if it has another name.")
    for files in chosen.values():
        if len(files) > 1:
            names = ", ".join(sorted(f.name for f in files))
            raise SourceError(f"--enrich yfcc100m={path}: {names} are the same part of the file "
                              "twice (compressed and decompressed?); keep one of them.")
    return [files[0] for _, files in sorted(chosen.items())]


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _iso_utc(value: str | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC; anything else verbatim (never dropped, never guessed)."""
    if value is None or not (value.isascii() and value.isdecimal()):
        return value  # int() would also take "-5", "+5" and "1_000"
    try:
        return datetime.fromtimestamp(int(value), tz=timezone.utc).isoformat()
    except (ValueError, OverflowError, OSError):
        return value


def _fields(columns: list[str]) -> dict[str, str | None]:
    indexes = _INDEXES[len(columns)]
    fields: dict[str, str | None] = {}
    for name, column in _FIELD_COLUMNS.items():
        value = clean_value(columns[indexes[name]])
        if value is not None and column in _ENCODED:
            value = clean_value(unquote_plus(value))
        fields[name] = value
    fields["date_uploaded"] = _iso_utc(fields["date_uploaded"])
    return fields


def _scan(stream: IO[bytes], name: str, wanted: set[bytes], result: YfccJoin,
          progress: Callable[[int], None] | None) -> None:
    """Read one file into ``result``. The hot loop: most lines are someone else's photo, so a
    line is only counted, its id and marker sliced out, and the id tested, undecoded."""
    rows, lines, photos, videos = result.rows, result.lines, result.photos, result.videos
    number = 0
    for line in stream:
        number += 1
        if progress is not None and (lines + number) % PROGRESS_EVERY == 0:
            progress(lines + number)
        tabs = line.count(b"\t")
        if tabs == 22:
            photo_id = line[:line.find(b"\t")]
        elif tabs == 24:
            photo_id = line.split(b"\t", 2)[1]
        else:
            result.add_malformed(f"{name}:{number}",
                                 f"{tabs + 1} tab-separated columns, not 23 or 25")
            continue
        if not photo_id.isdigit():
            shown = photo_id[:40].decode("utf-8", "replace")
            result.add_malformed(f"{name}:{number}", f"photo id {shown!r} is not a number")
            continue
        if not line.endswith(_PHOTO_ENDS):  # marker, the last column: 0 photo, 1 video
            videos += 1
            continue
        photos += 1
        if photo_id in wanted:
            key = photo_id.decode("ascii")
            if key not in rows:  # the first row of an id wins; the file has no duplicates
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                rows[key] = _fields(text.split("\t"))
    result.lines, result.photos, result.videos = lines + number, photos, videos


def join_yfcc100m(path: Path, photo_ids: Collection[str],
                  progress: Callable[[int], None] | None = None) -> YfccJoin:
    """Stream the YFCC100M file(s) at ``path`` and keep the photo rows whose id is in
    ``photo_ids`` (decimal text). Video rows are skipped; malformed lines are counted, never
    fatal. ``progress`` is called with the number of lines read so far, every PROGRESS_EVERY
    lines and at the end."""
    files = yfcc_files(path)
    # Bytes, so that the ~99M lines that do not match are never decoded.
    wanted = {i.strip().encode("ascii") for i in photo_ids
              if isinstance(i, str) and i.strip().isascii() and i.strip().isdecimal()}
    # File names only: the summary may be published with an index, host paths must not be.
    result = YfccJoin(files=[f.name for f in files], requested=len(wanted))
    if not wanted:
        return result  # nothing can match: do not read 15 GB to find out
    for file in files:
        try:
            stream = _open_binary(file)
        except OSError as error:
            raise SourceError(f"--enrich yfcc100m: cannot open {file}: "
                              f"{error.strerror or error}.") from None
        try:
            with stream:
                _scan(stream, file.name, wanted, result, progress)
        except (EOFError, OSError) as error:  # a truncated or corrupt .bz2/.gz, a disk error
            raise SourceError(
                f"--enrich yfcc100m: {file} cannot be read to the end ({error}). It is probably "
                "truncated or corrupt: check it (bzip2 -t / gzip -t) or download it again."
            ) from None
    result.matched = len(result.rows)
    if progress is not None:
        progress(result.lines)
    return result


def yfcc_key(download_url: str) -> str:
    """The YFCC "key" of a row: MD5 of ``downloadurl``, each byte as hex without a leading
    zero (jfolz/yfcc100m's scheme; names the multimedia-commons S3 objects)."""
    return "".join(f"{byte:x}" for byte in hashlib.md5(download_url.encode()).digest())
