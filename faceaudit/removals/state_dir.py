"""Where the state folder is: one default for every command, so that a removal asked on the
page is honoured by the next build and by every researcher tool on the same host."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from faceaudit.errors import FaceAuditError

APP_NAME = "faceaudit"


class StateDirError(FaceAuditError):
    code = "state_dir"


def default_state_dir() -> Path:
    """``FACEAUDIT_STATE_DIR``, else ``$XDG_STATE_HOME/faceaudit``, else
    ``~/.local/state/faceaudit`` (the XDG base directory rule: a relative XDG_STATE_HOME is
    ignored). Only the path: the store creates the folder, mode 0700, on first use."""
    chosen = os.environ.get("FACEAUDIT_STATE_DIR", "").strip()
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP_NAME
    return Path.home() / ".local" / "state" / APP_NAME


def resolve_state_dir(state_dir: Path | None) -> Path:
    """The state folder a command works with: ``state_dir`` as given, which must exist (a
    mistyped path must not silently mean "nothing was ever removed"), or, when None, the
    default one, created (mode 0700) when missing."""
    if state_dir is not None:
        if not state_dir.is_dir():
            raise StateDirError(f"The state folder {state_dir} does not exist: give the "
                                "FACEAUDIT_STATE_DIR the service runs with, or leave it out "
                                f"to use the default, {default_state_dir()}.")
        return state_dir
    folder = default_state_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise StateDirError(f"The state folder {folder} cannot be created ({error}): set "
                            "FACEAUDIT_STATE_DIR to a writable folder of your own.") from error
    return folder


def check_state_dir(state_dir: Path, index_dir: Path) -> None:
    """StateDirError when the state folder would be lost with the index folder (inside it)."""
    state, index = state_dir.resolve(), index_dir.resolve()
    if state == index or index in state.parents:
        raise StateDirError(
            f"The state folder {state_dir} is inside the index folder {index_dir}, which is "
            "replaced whole whenever a new index is published: removal requests kept there "
            f"would be lost. Use a folder outside it, e.g. {index_dir}.state."
        )


def secret_file(path: Path, *, damaged: str) -> bytes:
    """The 32-byte key kept at ``path`` in the state folder (mode 0600), made on first use so
    that it survives restarts and every process sharing the folder uses the same one: it is
    written to a staged name and linked into place, so that of two processes starting
    together one makes it and the other reads it. ``damaged``: what to do when it is shorter
    (said after the path)."""
    if not path.exists():
        staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staged, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            staged.unlink()
    secret = path.read_bytes()
    if len(secret) < 32:
        raise StateDirError(f"{path} is damaged (shorter than 32 bytes): {damaged}")
    return secret
