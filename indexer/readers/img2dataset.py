"""img2dataset downloads: which layout a folder holds, and what its two layouts share."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceaudit.imaging import IMAGE_SUFFIXES
from faceaudit.indexer.readers.base import (
    Coverage,
    SourceError,
    fields_from_row,
    resolve_columns,
)

# The two layouts: webdataset shards (``00000.tar``, readers.webdataset) or the ``files``
# layout (``00000/``, readers.img2dataset_files), each shard beside its ``00000.parquet``
# (readers.img2dataset_coverage).

IMAGE_EXTENSIONS = frozenset(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
MAX_JSON_BYTES = 16 * 1024 * 1024  # img2dataset's metadata is a few kB; more is not metadata
SHARD_NAME = re.compile(r"\d{5,}")


def detect_img2dataset(folder: Path) -> str | None:
    """The img2dataset layout in ``folder``: "webdataset" when it holds ``*.tar`` shards,
    "files" when it holds ``NNNNN/`` shard folders with their ``NNNNN.parquet`` or
    ``NNNNN_stats.json``, else None."""
    try:
        entries = {entry.name: entry.is_dir() for entry in os.scandir(folder)
                   if not entry.name.startswith(".")}
    except OSError:
        return None
    if any(is_tar_name(name) and not is_dir for name, is_dir in entries.items()):
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


def is_tar_name(name: str) -> bool:
    """Whether a folder entry named ``name`` is a webdataset shard (``*.tar``, not hidden)."""
    return name.lower().endswith(".tar") and not name.startswith(".")


class Img2DatasetSource:
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
