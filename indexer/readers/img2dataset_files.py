"""img2dataset's ``files`` layout: the images of ``00000/`` shard folders, read in place."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from faceaudit.indexer.readers.base import (
    ByteLocation,
    Coverage,
    SourceError,
    SourceItem,
    describe_mode,
)
from faceaudit.indexer.readers.img2dataset import (
    IMAGE_EXTENSIONS,
    MAX_JSON_BYTES,
    SHARD_NAME,
    Img2DatasetSource,
    split_key,
)
from faceaudit.indexer.readers.img2dataset_coverage import add_shard_coverage


class Img2DatasetFilesSource(Img2DatasetSource):
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
