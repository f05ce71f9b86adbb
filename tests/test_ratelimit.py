"""The per-client search limits: one budget per client for every process serving from one state
folder, an IPv6 client counted by its /64, a moving window."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.models.engine import FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.ratelimit import RateLimited, SearchRateLimit
from faceaudit.service.settings import ServiceSettings
from tests.serving_probe import serve_process


@contextmanager
def served(settings: ServiceSettings, engine: FaceEngine,
           address: str = "198.51.100.7") -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine=engine), client=(address, 50000)) as client:
        yield client


def searched(client: TestClient) -> int:
    """The status of a search with no body: 415 once counted, 429 when refused first."""
    return client.post("/api/search").status_code


@pytest.fixture
def limited(built_index: Path, tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(index=built_index, device="cpu", rate_limit="3/minute",
                           daily_limit="100/day", state_dir=tmp_path / "state")


def test_two_services_sharing_a_state_folder_share_one_budget(
        limited: ServiceSettings, engine: FaceEngine, tmp_path: Path) -> None:
    with served(limited, engine) as first, served(limited, engine) as second:
        assert [searched(first), searched(second), searched(first)] == [415, 415, 415]
        assert searched(second) == 429
        assert searched(first) == 429
    # Another state folder is another service: its own budget.
    apart = limited.model_copy(update={"state_dir": tmp_path / "other-state"})
    with served(apart, engine) as other:
        assert searched(other) == 415


def test_a_serve_process_and_another_process_share_one_budget(
        limited: ServiceSettings, engine: FaceEngine, built_index: Path,
        tmp_path: Path) -> None:
    with serve_process(["--index", str(built_index), "--device", "cpu", "--replicas", "1",
                        "--state-dir", str(limited.state_dir)], tmp_path / "serve.log",
                       env={"FACEAUDIT_RATE_LIMIT": "3/minute",
                            "FACEAUDIT_DAILY_LIMIT": "100/day"}) as server, \
            served(limited, engine, address="127.0.0.1") as here:
        with httpx.Client(base_url=server.base) as there:
            assert [there.post("/api/search").status_code, searched(here),
                    there.post("/api/search").status_code] == [415, 415, 415]
            assert there.post("/api/search").status_code == 429
            assert searched(here) == 429


def test_an_ipv6_client_is_counted_by_its_64(limited: ServiceSettings,
                                            engine: FaceEngine) -> None:
    one = limited.model_copy(update={"rate_limit": "1/minute"})
    with served(one, engine, "2001:db8:1:2::1") as host, \
            served(one, engine, "2001:db8:1:2:ffff:ffff:ffff:fffe") as same_64, \
            served(one, engine, "2001:db8:1:3::1") as next_64:
        assert searched(host) == 415
        assert searched(same_64) == 429  # another address of the same /64
        assert searched(next_64) == 415
    with served(one, engine, "203.0.113.9") as v4, \
            served(one, engine, "::ffff:203.0.113.9") as mapped, \
            served(one, engine, "203.0.113.10") as neighbour:
        assert searched(v4) == 415
        assert searched(mapped) == 429  # the same IPv4 client
        assert searched(neighbour) == 415  # IPv4: the full address


def test_the_window_moves(tmp_path: Path) -> None:
    now = [1_000_000.0]
    limit = SearchRateLimit(["2/minute"], tmp_path, clock=lambda: now[0])
    for at in (0.0, 10.0):
        now[0] = 1_000_000.0 + at
        limit.hit("192.0.2.1")
    now[0] = 1_000_020.0
    with pytest.raises(RateLimited) as refused:
        limit.hit("192.0.2.1")
    assert refused.value.retry_after == 40  # the hit at 0 leaves the window at 60
    assert "2 per 1 minute" in refused.value.message
    now[0] = 1_000_060.5
    limit.hit("192.0.2.1")  # one in the last minute (at 10)
    now[0] = 1_000_061.0
    with pytest.raises(RateLimited) as refused:
        limit.hit("192.0.2.1")
    assert refused.value.retry_after == 9  # the hit at 10 leaves at 70
    limit.hit("192.0.2.2")  # another client


def test_the_counts_keep_no_address(tmp_path: Path) -> None:
    limit = SearchRateLimit(["5/minute", "9/day"], tmp_path)
    limit.hit("198.51.100.23")
    limit.hit("2001:db8:aaaa:bbbb::1")
    del limit
    for name in os.listdir(tmp_path):
        path = tmp_path / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        data = path.read_bytes()
        for text in (b"198.51.100.23", b"2001:db8:aaaa:bbbb", bytes([198, 51, 100, 23])):
            assert text not in data, name
    with sqlite3.connect(tmp_path / "ratelimit.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM hits").fetchone() == (2,)


def test_a_limit_that_is_not_one_is_refused_before_serving(built_index: Path,
                                                          tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--index", str(built_index), "--state-dir",
                                      str(tmp_path / "state")],
                                env={"FACEAUDIT_RATE_LIMIT": "often"})
    assert result.exit_code == 2
    assert "'often' is not a rate limit: write it as 30/minute" in result.output
