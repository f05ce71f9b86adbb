"""Shared fixtures: the models are loaded once per test session, the collection built once.

The collection is made only of photos that ship inside installed packages (see
faceaudit.demo), so the tests run on any machine with the package installed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from faceaudit.demo import build_demo_collection
from faceaudit.indexer.build import build_index
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import resolve_pack
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings

# Removals are on by default, in the user's state folder (~/.local/state/faceaudit): no test
# may write there. Every process of the run, subprocesses included, gets a folder of its own
# instead, before anything runs; tests that need a state of their own pass --state-dir.
os.environ.pop("FACEAUDIT_STATE_DIR", None)
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="faceaudit-test-state-")
atexit.register(shutil.rmtree, os.environ["XDG_STATE_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    return FaceEngine(resolve_pack(), device="cpu")


@pytest.fixture(scope="session")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photos folder, selfies folder) of the demo collection."""
    root = tmp_path_factory.mktemp("collection")
    return build_demo_collection(root / "photos", root / "selfies")


@pytest.fixture(scope="session")
def built_index(collection: tuple[Path, Path], engine: FaceEngine,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published index of the demo collection. Tests must not modify it."""
    out = tmp_path_factory.mktemp("indexes") / "demo-index"
    build_index(collection[0] / "manifest.csv", out, engine, dataset="faceaudit-demo")
    return out


@pytest.fixture(scope="module")
def settings(built_index: Path) -> ServiceSettings:
    """Service settings over the demo index (no rate limit). Modules may override it."""
    return ServiceSettings(index=built_index, device="cpu", rate_limit=None, daily_limit=None)


@pytest.fixture(scope="module")
def client(settings: ServiceSettings, engine: FaceEngine) -> Iterator[TestClient]:
    """The app through its lifespan, one per test module."""
    with TestClient(create_app(settings, engine=engine)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def yao(collection: tuple[Path, Path]) -> bytes:
    """The demo's selfie of Yao Ming, who is in four of its photos."""
    return (collection[1] / "yaoming.jpg").read_bytes()
