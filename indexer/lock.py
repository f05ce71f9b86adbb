"""One build at a time per index: a second `faceaudit index` on the same output is refused."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from faceaudit.errors import FaceAuditError


class BuildInProgress(FaceAuditError):
    code = "build_in_progress"


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for the duration of a build.

    An advisory ``flock`` on a file beside the index: the kernel releases it when the process
    dies, however it dies, so a crashed build never leaves a stale lock behind. The file is
    left in place (deleting it would let two builds lock two different files)."""
    path = lock_path(out)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise BuildInProgress(
                f"Another `faceaudit index` is already building {out} (process {holder}). "
                "Wait for it to finish, or stop it; its work is kept and a new run resumes it."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
