"""What the serving process does so that a selfie leaves no trace outside its memory: no core
dump, and no exception message in a log.

A core dump of a process that crashed in a native decoder would write the selfie (and every
upload in memory then) to disk; ``disable_core_dumps`` turns them off for the process and its
children. An exception's message can quote what the request held (``align_face``'s names the
selfie's five landmark coordinates; h11's can quote header bytes): ``describe_exception`` and
``SafeFormatter`` write an exception as its type and the places it passed through, never its
message, so a traceback logged by the app, by uvicorn or by anything else says where, not what.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import DefaultFormatter

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4  # <linux/prctl.h>
MAX_FRAMES = 12  # the innermost ones: where it happened, not how the event loop got there

def disable_core_dumps() -> None:
    """No core dump, whatever the system's ``ulimit -c`` or core pattern: the soft and hard
    limits go to 0 (inherited by child processes), and on Linux the process is made
    non-dumpable, which also keeps other processes of the same user from reading its memory
    (ptrace, /proc/PID/mem). Logged, not raised, where the system refuses."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as error:
        log.warning("could not turn core dumps off (RLIMIT_CORE): %s", error)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            log.warning("could not make the process non-dumpable: errno %d", ctypes.get_errno())


def _places(tb: TracebackType | None) -> str:
    frames = traceback.extract_tb(tb)[-MAX_FRAMES:]
    return " <- ".join(f"{_short(frame.filename)}:{frame.lineno} in {frame.name}"
                       for frame in reversed(frames)) or "no traceback"


def _short(filename: str) -> str:
    """The file's path from its package on (``anyio/to_thread.py``, ``models/engine.py``), not
    the machine's."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:])
    return "/".join(parts[-2:])


def describe_exception(error: BaseException) -> str:
    """The exception's type and the places it was raised through, innermost first, then the
    same for the exceptions it was raised from or while handling; never a message."""
    lines, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        line = f"{_type_name(current)} at {_places(current.__traceback__)}"
        grouped = getattr(current, "exceptions", None)  # an ExceptionGroup: what it holds
        if isinstance(grouped, tuple):
            line += " holding " + ", ".join(_type_name(inner) for inner in grouped)
        lines.append(line)
        current = current.__cause__ or (None if current.__suppress_context__
                                         else current.__context__)
    return "; raised while handling ".join(lines)


def _type_name(error: BaseException) -> str:
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"


class SafeFormatter(DefaultFormatter):
    """uvicorn's formatter, except that an exception is written by ``describe_exception``:
    its type and places, not its message. A traceback already formatted by another formatter
    for the same record (``record.exc_text``) is not reused."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        error = ei[1] if isinstance(ei, tuple) else None
        if error is None:
            return "an exception (no details)"
        return describe_exception(error)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return "(stack not logged)"

    def format(self, record: logging.LogRecord) -> str:
        record.exc_text = None
        try:
            return super().format(record)
        finally:
            record.exc_text = None


def safe_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with its formatters made safe (``SafeFormatter``)."""
    config: dict[str, Any] = {**LOGGING_CONFIG, "formatters": {}}
    for name, formatter in LOGGING_CONFIG["formatters"].items():
        safe = dict(formatter)
        if name == "default":
            safe["()"] = f"{__name__}.SafeFormatter"
        config["formatters"][name] = safe
    return config


def protect_logs() -> None:
    """Every handler of the root logger (the CLI's, or one set up around it) writes exceptions
    by type and place: records of other libraries' loggers reach the stream through them. So
    do Python's last words on an exception nobody caught, in a thread or in the process."""
    for handler in logging.getLogger().handlers:
        current = handler.formatter
        fmt = current._fmt if current is not None else None  # noqa: SLF001
        handler.setFormatter(SafeFormatter(fmt, use_colors=False))

    def uncaught(kind: type[BaseException], error: BaseException,
                 tb: TracebackType | None) -> None:
        sys.stderr.write(f"uncaught {describe_exception(error.with_traceback(tb))}\n")

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            name = args.thread.name if args.thread is not None else "a thread"
            sys.stderr.write(f"uncaught in {name}: {describe_exception(args.exc_value)}\n")

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
