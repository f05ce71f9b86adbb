"""Find the images of a dataset: every file under a folder, recursively, in a stable order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from faceaudit.imaging import IMAGE_SUFFIXES


def scan_dataset(root: Path) -> Iterator[str]:
    """Paths relative to ``root`` (POSIX separators), sorted, of files with an image suffix.

    Files are chosen by suffix so that a README or a CSV beside the photos is not reported as a
    failed image; a file with an image suffix that does not decode is recorded as failed.
    Hidden files and folders (``.git``, ``.DS_Store``, ...) are skipped.
    """
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            yield Path(folder, name).relative_to(root).as_posix()
