"""The service under concurrent searches: engine replicas, vector searches outside any engine,
the bound on searches at once, and newly published indexes loaded off the request path.

No timing is asserted: barriers and events show what runs at the same time."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import faceaudit.service.catalog as catalog
from faceaudit.indexer.build import build_index
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.engine import FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings
from tests.photos import photos_of

WAIT_S = 30  # only ever reached when a test fails


def search(client: TestClient, data: bytes) -> httpx.Response:
    return client.post("/api/search", files={"selfie": ("selfie.jpg", data, "image/jpeg")})


def searches_at_once(client: TestClient, data: bytes, n: int) -> list[httpx.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: search(client, data), range(n)))


def images(response: httpx.Response) -> set[str]:
    """The keys of the photos found (a result names a photo by its key, never its path)."""
    assert response.status_code == 200, response.text
    return {m["image_key"] for m in response.json()["matches"]}


def wrap(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str,
         before: Callable[[Any], None]) -> None:
    """``owner.name`` calls ``before(self)`` first."""
    real = getattr(owner, name)

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        before(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


def test_vector_searches_run_side_by_side_without_holding_the_engine(
        settings: ServiceSettings, engine: FaceEngine, yao: bytes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One engine, and two searches that must both be in their vector search at once to get
    # past the barrier: only possible if neither holds the engine while it searches.
    barrier = threading.Barrier(2, timeout=WAIT_S)
    wrap(monkeypatch, FaceIndex, "search", lambda _: barrier.wait())
    with TestClient(create_app(settings.model_copy(update={"replicas": 1}),
                               engine=engine)) as client:
        assert client.app.state.services.engines.size == 1  # type: ignore[attr-defined]
        responses = searches_at_once(client, yao, 2)
    assert [len(images(r)) for r in responses] == [4, 4]


def test_replicas_detect_side_by_side_each_used_by_one_search_at_a_time(
        settings: ServiceSettings, engine: FaceEngine, yao: bytes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    barrier = threading.Barrier(2, timeout=WAIT_S)
    guard = threading.Lock()
    active: Counter[int] = Counter()
    most: Counter[int] = Counter()

    def enter(replica: FaceEngine) -> None:
        with guard:
            active[id(replica)] += 1
            most[id(replica)] = max(most[id(replica)], active[id(replica)])
        try:
            barrier.wait()  # two searches detect at once: on two replicas
        finally:
            with guard:
                active[id(replica)] -= 1

    wrap(monkeypatch, FaceEngine, "detect", enter)
    with TestClient(create_app(settings.model_copy(update={"replicas": 2}),
                               engine=engine)) as client:
        responses = searches_at_once(client, yao, 2)
    assert [len(images(r)) for r in responses] == [4, 4]
    assert len(most) == 2 and set(most.values()) == {1}


def test_a_search_beyond_the_bound_is_refused_with_retry_after(
        settings: ServiceSettings, engine: FaceEngine, yao: bytes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold(_: object) -> None:
        entered.set()
        release.wait(WAIT_S)

    wrap(monkeypatch, FaceIndex, "search", hold)
    bounded = settings.model_copy(update={"replicas": 1, "max_searches": 1})
    with TestClient(create_app(bounded, engine=engine)) as client, \
            ThreadPoolExecutor(1) as pool:
        first = pool.submit(search, client, yao)
        assert entered.wait(WAIT_S)  # the one search admitted is running
        refused = search(client, yao)
        release.set()
        assert len(images(first.result())) == 4
        assert len(images(search(client, yao))) == 4  # admitted again once it is done
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "busy"
    assert "busy" in error["message"] and "try again" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1


@pytest.fixture
def live_index(collection: tuple[Path, Path], engine: FaceEngine, tmp_path: Path) -> Path:
    out = tmp_path / "live"
    build_index(collection[0] / "portraits", out, engine, dataset="live")  # portraits only
    return out


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def test_a_newly_published_index_is_loaded_in_the_background_then_served(
        built_index: Path, live_index: Path, engine: FaceEngine, yao: bytes,
        collection: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    photos = collection[0]
    settings = ServiceSettings(index=[built_index, live_index],
                               dataset=[photos, photos / "portraits"], device="cpu",
                               rate_limit=None, daily_limit=None, reload_interval=0.05)
    with TestClient(create_app(settings, engine=engine)) as client:
        first = search(client, yao).json()["matches"]
        links = {m["dataset"]: m["thumbnail"] for m in first}
        assert set(photos_of([m for m in first if m["dataset"] == "live"], live_index)) == {
            "yao_flipped.jpg", "yao_bright_small.jpg"}

        # Loading the next index waits for the test's word.
        loading, go_on = threading.Event(), threading.Event()

        def slow_load(_: object) -> None:
            loading.set()
            go_on.wait(WAIT_S)

        wrap(monkeypatch, catalog, "FaceIndex", slow_load)
        build_index(photos / "team", live_index, engine, dataset="live")  # another is published
        assert loading.wait(WAIT_S)
        # Meanwhile every request is answered, from the old index.
        during = search(client, yao).json()["matches"]
        assert {(m["dataset"], m["image_key"]) for m in during} == {
            (m["dataset"], m["image_key"]) for m in first}
        assert client.get(links["live"]).status_code == 200
        go_on.set()

        wait_for(lambda: client.get("/api/info").json()["indexes"][1]["index_images"] == 1)
        after = search(client, yao).json()["matches"]
        assert photos_of([m for m in after if m["dataset"] == "live"], live_index) == [
            "players.jpg"]
        # The old index's links stop working; the other index's links are untouched.
        assert client.get(links["live"]).status_code == 404
        assert client.get(links["faceaudit-demo"]).status_code == 200


def test_an_index_that_cannot_be_loaded_is_logged_and_the_old_one_kept(
        live_index: Path, engine: FaceEngine, yao: bytes, collection: tuple[Path, Path],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="faceaudit.service.catalog")
    settings = ServiceSettings(index=live_index, dataset=collection[0] / "portraits",
                               device="cpu", rate_limit=None, daily_limit=None,
                               reload_interval=0.05)
    manifest = live_index / "manifest.json"
    good = manifest.read_text()
    with TestClient(create_app(settings, engine=engine)) as client:
        before = images(search(client, yao))
        # A new index built with another model pack is published.
        manifest.write_text(good.replace('"sha256": "', '"sha256": "0'))
        wait_for(lambda: "not serving the index newly published" in caplog.text)
        assert "model pack" in caplog.text
        assert images(search(client, yao)) == before
        # The next publish is served again.
        manifest.write_text(good)
        wait_for(lambda: "now serving the index published" in caplog.text)
        assert images(search(client, yao)) == before
