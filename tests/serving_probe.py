"""A real `faceaudit serve` in its own process on 127.0.0.1, everything it prints kept, for the
tests of what the serving process leaks (logs, core dumps).

Run as ``python -m tests.serving_probe serve ...`` it is the child: the CLI's own entry point,
with the root logger at DEBUG (so that whatever any library logs is printed) and two test
hooks: it prints whether the process is dumpable as the server starts, and a selfie holding
``FAULT_TRIGGER`` makes the engine's real ``align_face`` raise its ValueError, whose message
quotes landmark coordinates (``FAULT_LANDMARKS``), as a degenerate face would.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
FAULT_TRIGGER = b"RAISE-IN-ALIGN-FACE"
FAULT_LANDMARKS = [[4093.6875, 2741.3125]] * 5  # exact in float32: printed as written
PR_GET_DUMPABLE = 3


@dataclass
class Served:
    base: str
    pid: int
    log: Path

    def output(self) -> str:
        """All the process printed so far (stdout and stderr)."""
        return self.log.read_text(encoding="utf-8", errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_process(args: list[str], log: Path, *, env: dict[str, str] | None = None,
                  start_timeout_s: float = 120.0) -> Iterator[Served]:
    """``faceaudit serve ARGS`` on a free port of 127.0.0.1, its output in ``log``; yields once
    /healthz answers 200, and stops the process on exit."""
    port = _free_port()
    command = [sys.executable, "-m", "tests.serving_probe", "serve", *args,
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as stream:
        process = subprocess.Popen(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    served = Served(f"http://127.0.0.1:{port}", process.pid, log)
    try:
        deadline = time.monotonic() + start_timeout_s
        with httpx.Client(base_url=served.base, timeout=5) as http:
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"faceaudit serve did not come up:\n{served.output()}")
                time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def parser_messages(body: bytes, boundary: bytes) -> list[str]:
    """What python_multipart's parser logs about ``body``, through a logger of our own: what
    the service would print, were the logger it gives the parser switched on."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser

    from faceaudit.service.uploads import MAX_HEADER_BYTES

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    probe = logging.Logger("probe", logging.DEBUG)
    probe.addHandler(Keep())
    parser = MultipartParser(boundary, {}, max_header_size=MAX_HEADER_BYTES)
    parser.logger = probe
    with suppress(MultipartParseError):
        parser.write(body)
    return messages


def _install_test_hooks() -> None:
    import numpy as np
    import uvicorn

    import faceaudit.service.searching as searching
    from faceaudit.models.engine import align_face

    embed_selfie = searching.embed_selfie

    def faulty_embed_selfie(engine: Any, selfie: bytes, settings: Any) -> Any:
        if FAULT_TRIGGER in selfie:
            align_face(np.zeros((8, 8, 3), np.uint8), np.array(FAULT_LANDMARKS, np.float32))
        return embed_selfie(engine, selfie, settings)

    searching.embed_selfie = faulty_embed_selfie  # type: ignore[assignment]
    run = uvicorn.run

    def reporting_run(*args: Any, **kwargs: Any) -> None:
        # serve has made its settings by now (and set faceaudit's loggers to INFO): DEBUG again.
        logging.getLogger("faceaudit").setLevel(logging.DEBUG)
        libc = ctypes.CDLL(None)
        print(f"test hook: dumpable={libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)}", flush=True)
        run(*args, **kwargs)

    uvicorn.run = reporting_run


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    _install_test_hooks()
    from faceaudit.cli import app

    app(sys.argv[1:], prog_name="faceaudit")
