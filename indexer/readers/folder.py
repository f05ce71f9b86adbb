"""A folder of images, read recursively, with optional provenance sidecars.

A sidecar is a JSON object beside the image, named ``<image>.json`` (``photo.jpg.json``, as
MegaFace ships them) or ``<stem>.json`` (``photo.json``); its keys are read through the same
column names and ``--map`` as a manifest's.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from faceaudit.imaging import IMAGE_SUFFIXES
from faceaudit.indexer.readers.base import (
    ByteLocation,
    Coverage,
    SourceError,
    SourceItem,
    describe_mode,
    fields_from_row,
    resolve_columns,
)


def scan_folder(root: Path) -> Iterator[tuple[str, str | None]]:
    """(path relative to ``root``, why it is unusable or None) of every file with an image
    suffix, sorted. Hidden files and folders are skipped; symbolic links to folders are not
    followed (no loops). A FIFO, socket or device named like a photo, a dangling link or a
    link loop is reported, never opened."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            try:
                mode = path.stat().st_mode  # follows a link to a file, as reading will
            except OSError as error:
                yield relative, ("a symbolic link loop" if error.errno == 40 else
                                 "a broken symbolic link" if path.is_symlink() else
                                 f"cannot be examined: {error.strerror}")
                continue
            yield relative, (None if stat.S_ISREG(mode)
                             else f"not a regular file ({describe_mode(mode)})")


def read_sidecar(image: Path) -> tuple[str, dict[str, Any]] | None:
    """(file name, JSON object) of the sidecar beside ``image`` (``photo.jpg.json`` or
    ``photo.json``), if any; ValueError when it is not a JSON object."""
    for candidate in (image.with_name(image.name + ".json"), image.with_suffix(".json")):
        try:
            if not candidate.is_file():
                continue
            data = json.loads(candidate.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{candidate.name} is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{candidate.name} is not a JSON object")
        return candidate.name, data
    return None


class FolderSource:
    """Every image under ``root``; provenance from sidecars when present."""

    kind = "folder"

    def __init__(self, root: Path, field_map: Mapping[str, str] | None = None) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise SourceError(f"{root} does not exist or is not a folder.")
        self.field_map = dict(field_map or {})
        self.coverage = Coverage()

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.root), "field_map": self.field_map}

    def items(self) -> Iterator[SourceItem]:
        for relative, unusable in scan_folder(self.root):
            self.coverage.rows += 1
            self.coverage.downloaded += 1  # present; whether it decodes is the pipeline's to say
            item = SourceItem(ref=relative, location=ByteLocation(relative),
                              source_record=relative, error=unusable)
            if unusable is None:
                try:
                    sidecar = read_sidecar(self.root / relative)
                except ValueError as error:
                    self.coverage.add_malformed(relative, str(error))
                    sidecar = None
                if sidecar:
                    name, data = sidecar
                    item.fields = fields_from_row(data, resolve_columns(list(data),
                                                                        self.field_map))
                    item.source_record = str(Path(relative).with_name(name).as_posix())
            yield item
