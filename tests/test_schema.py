"""The OpenAPI document tells the truth: every documented route, fed what Schemathesis makes of
its schema (valid and invalid data, every check it has), answers only the status codes,
content types and bodies the document gives, and never a 5xx. Seeded and bounded; the server
listens on 127.0.0.1. benchmarks/README.md has the longer run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from faceaudit.models.engine import FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings
from tests.live_server import serve

ADMIN_TOKEN = "schema-test-admin-token-0123456789"
EXAMPLES = 25  # per route and phase: about 15 s on two cores for every route
CONFIG = Path(__file__).with_name("schemathesis.toml")  # why a search may answer 400 and 422


def schemathesis(base: str, folder: Path, *options: str) -> tuple[str, list[str]]:
    """Schemathesis's report, and the operations it tested (``POST /api/search``, ...)."""
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    run = subprocess.run(
        [st, "--config-file", str(CONFIG), "run", f"{base}/openapi.json", "--checks", "all",
         "--max-examples", str(EXAMPLES), "--generation-deterministic", "--workers", "1",
         "--no-color", "--report", "ndjson", "--report-dir", str(folder), *options],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    events = "\n".join(path.read_text() for path in folder.glob("*.ndjson"))
    return run.stdout, sorted(set(re.findall(r'"label": ?"([A-Z]+ /[^"]*)"', events)))


def test_every_route_answers_as_documented(built_index: Path, engine: FaceEngine,
                                           tmp_path: Path) -> None:
    settings = ServiceSettings(index=built_index, device="cpu", rate_limit=None,
                               daily_limit=None, admin_token=ADMIN_TOKEN,
                               state_dir=tmp_path / "state")
    with serve(create_app(settings, engine=engine)) as base:
        # The operator's token, so that the admin routes are tried past their 401.
        _, tested = schemathesis(base, tmp_path, "--header",
                                 f"Authorization: Bearer {ADMIN_TOKEN}")
    assert {"POST /api/search", "GET /api/thumbnails/{token}", "POST /api/removals",
            "GET /api/admin/removals"} <= set(tested)


def test_without_removals_or_admin_token_too(built_index: Path, engine: FaceEngine,
                                            tmp_path: Path) -> None:
    settings = ServiceSettings(index=built_index, device="cpu", rate_limit=None,
                               daily_limit=None, removals=False, state_dir=tmp_path / "state")
    with serve(create_app(settings, engine=engine)) as base:
        _, tested = schemathesis(base, tmp_path, "--phases", "coverage,fuzzing")
    assert "POST /api/search" in tested
    assert not [label for label in tested if "/api/admin" in label]  # not in the document
