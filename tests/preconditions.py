"""What some tests need from the machine, checked before they start.

Outside CI a test whose need is not met is skipped with one line naming what to install or how
to run it; in CI (``CI`` set, as ``.ci/run`` runs as root) it fails instead, so that a CI
machine lacking it cannot pass by skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

CHROMIUM = Path(os.environ.get("FACEAUDIT_CHROMIUM", "/usr/bin/chromium"))

# Run in a child process, so that this one is left as it was: a private network namespace
# (unshare), its loopback interface brought up, and the way back (setns), as test_ray does.
_NETNS_PROBE = """
import ctypes, fcntl, os, socket, struct
NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
if libc.unshare(NEWNET) != 0:
    raise SystemExit("unshare(CLONE_NEWNET): " + os.strerror(ctypes.get_errno()))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
    fcntl.ioctl(probe, 0x8914, struct.pack("16sH14x", b"lo", 0x1 | 0x8 | 0x40))
if libc.setns(original, NEWNET) != 0:
    raise SystemExit("setns back: " + os.strerror(ctypes.get_errno()))
"""


def unmet(need: str) -> NoReturn:
    """Skip the test (fail it in CI): ``need`` is one line saying what to do."""
    if os.environ.get("CI"):
        pytest.fail(f"{need} (CI is set, so this test must run)", pytrace=False)
    pytest.skip(need)


def network_namespace_problem() -> str | None:
    """Why this process cannot make a private network namespace, or None when it can."""
    try:
        probe = subprocess.run([sys.executable, "-c", _NETNS_PROBE], capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if probe.returncode == 0:
        return None
    lines = (probe.stderr or probe.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {probe.returncode}"


def require_network_namespace() -> None:
    problem = network_namespace_problem()
    if problem is not None:
        unmet(f"needs a private network namespace ({problem}): run the tests as root, or "
              "under `unshare --user --map-root-user --net`")


def require_browser() -> object:
    """Playwright's sync API, once Playwright for Python and Chromium are both there."""
    if os.environ.get("FACEAUDIT_BROWSER_TESTS") == "0" and not os.environ.get("CI"):
        pytest.skip("FACEAUDIT_BROWSER_TESTS=0")
    try:
        from playwright import sync_api
    except ImportError:
        unmet("needs Playwright for Python: .venv/bin/pip install -e '.[test]'")
    if not CHROMIUM.exists():
        unmet(f"needs Chromium at {CHROMIUM}: apt-get install chromium (Debian's package), "
              "or set FACEAUDIT_CHROMIUM to a Chromium binary")
    return sync_api
