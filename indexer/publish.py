"""Publish a finished index folder at its destination without ever exposing a half-written one."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path

from faceaudit.indexer.store import fsync_dir

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), f"cannot swap {a} and {b}")


def publish(staged: Path, destination: Path) -> None:
    """Move the complete index ``staged`` to ``destination`` (same file system).

    A new destination is a single rename. An existing one is swapped atomically where Linux
    allows it; elsewhere the old folder is renamed aside first, so at every instant the
    destination is either the old complete index, the new one, or (briefly) absent, never a
    mixture. The old index is deleted only after the new one is in place.
    """
    if not destination.exists():
        os.rename(staged, destination)
        fsync_dir(destination.parent)  # the rename is atomic; this makes it durable
        return
    if _exchange(staged, destination):
        fsync_dir(destination.parent)  # the rename is atomic; this makes it durable
        shutil.rmtree(staged)  # now holds the old index
        return
    retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    os.rename(destination, retired)
    os.rename(staged, destination)
    fsync_dir(destination.parent)  # the rename is atomic; this makes it durable
    shutil.rmtree(retired)

