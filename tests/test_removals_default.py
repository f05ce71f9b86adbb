"""Removals on by default, through a real `faceaudit serve` and the CLI: the default state
folder, --no-removals, a removal killing the links already issued (in this process and in
another sharing the state), the same faces asked twice, the person's status link, and the admin
routes documented only where a token is set."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.removals import DATABASE, RemovalStore, RemovedPhoto, default_state_dir

DATASET = "faceaudit-demo"
ADMIN_TOKEN = "operator-token-5678"
MAINTAINERS = "takedown@example.org"
CONTACT = "yao-contact@example.com"
STATUS_FIELDS = {"request_id", "status", "meaning", "created", "status_changed", "photos"}
runner = CliRunner()


@dataclass
class Served:
    base: str
    log: Path  # the process's standard error: its start-up log

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60)


@contextmanager
def faceaudit_serve(args: list[str], env: dict[str, str | None], log: Path, *,
                    start_timeout_s: float = 180.0) -> Iterator[Served]:
    """The real command, ``faceaudit serve ARGS``, in a process of its own on a free port of
    127.0.0.1, with the environment changed by ``env`` (None: unset); yields once /healthz
    answers 200, stops it (SIGINT, as Ctrl-C) on exit."""
    environment = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for name in [k for k, v in env.items() if v is None]:
        environment.pop(name, None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "faceaudit.cli", "serve", *args, "--host", "127.0.0.1",
             "--port", str(port), "--device", "cpu", "--replicas", "1", "--threads", "1"],
            env=environment, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + start_timeout_s
            with httpx.Client(base_url=base, timeout=5) as http:
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"faceaudit serve exited with {process.returncode}:"
                                           f"\n{log.read_text(errors='replace')[-3000:]}")
                    try:
                        if http.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"faceaudit serve did not start in {start_timeout_s} s")
                    time.sleep(0.1)
            yield Served(base, log)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def search(http: httpx.Client, selfie: bytes) -> list[dict]:
    response = http.post("/api/search", files={"selfie": ("s.jpg", selfie, "image/jpeg")})
    assert response.status_code == 200, response.text
    matches: list[dict] = response.json()["matches"]
    return matches


def links(http: httpx.Client, match: dict) -> list[httpx.Response]:
    return [http.get(match["thumbnail"]), http.get(match["face_thumbnail"])]


def face(match: dict) -> tuple[str, str]:
    return match["image_key"], match["face_id"]


def assert_gone(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code == 410, (response.status_code, response.content[:200])
        assert response.json()["error"]["code"] == "removed"
        assert response.headers["content-type"].startswith("application/json")


# --- one state folder, two service processes -------------------------------------------------

@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared") / "state"


@pytest.fixture(scope="module")
def pair(built_index: Path, shared_state: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Served, Served]]:
    """Two `faceaudit serve` processes over the demo index sharing one state folder: the first
    with an admin token, the second without."""
    logs = tmp_path_factory.mktemp("logs")
    common = {"FACEAUDIT_RATE_LIMIT": "1000/minute", "FACEAUDIT_DAILY_LIMIT": "10000/day",
              "FACEAUDIT_DATASET_CONTACTS": json.dumps({DATASET: MAINTAINERS})}
    args = ["--index", str(built_index), "--state-dir", str(shared_state)]
    with faceaudit_serve(args, {**common, "FACEAUDIT_ADMIN_TOKEN": ADMIN_TOKEN},
                         logs / "a.log") as first, \
            faceaudit_serve(args, {**common, "FACEAUDIT_ADMIN_TOKEN": None},
                            logs / "b.log") as second:
        yield first, second


def test_admin_routes_are_documented_only_where_a_token_is_set(
        pair: tuple[Served, Served]) -> None:
    with pair[0].client() as first, pair[1].client() as second:
        documented = first.get("/openapi.json").json()["paths"]
        assert {"/api/admin/removals", "/api/admin/removals/{request_id}/status"} <= set(
            documented)
        assert "401" in documented["/api/admin/removals"]["get"]["responses"]
        assert first.get("/api/admin/removals").status_code == 401
        assert not [path for path in second.get("/openapi.json").json()["paths"]
                    if path.startswith("/api/admin/")]
        answer = second.get("/api/admin/removals",
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
        # The removal routes are documented in both, with no 5xx but "starting".
        for client in (first, second):
            paths = client.get("/openapi.json").json()["paths"]
            posted = paths["/api/removals"]["post"]["responses"]
            assert {"200", "201"} <= set(posted) and not {s for s in posted if s >= "500"} - {
                "503"}
            for route in ("/api/thumbnails/{token}", "/api/faces/{token}"):
                assert "410" in paths[route]["get"]["responses"]


def test_a_removal_kills_its_links_at_once_in_this_process_and_in_another(
        pair: tuple[Served, Served], yao: bytes) -> None:
    with pair[0].client() as first, pair[1].client() as second:
        in_first, in_second = search(first, yao), search(second, yao)
        target = in_first[0]
        [same_in_second] = [m for m in in_second if face(m) == face(target)]
        kept = [m for m in in_first if face(m) != face(target)]
        assert kept  # a photo not asked for, whose links must keep working
        for response in (links(first, target) + links(second, same_in_second)
                         + links(first, kept[0])):
            assert response.status_code == 200
            assert response.headers["content-type"] == "image/jpeg"

        answer = first.post("/api/removals", json={"matches": [target["match_id"]]})
        assert answer.status_code == 201, answer.text

        # At once, in the process that recorded it and in the other one, with no search in
        # between: the links issued before the request show nothing any more.
        assert_gone(links(first, target))
        assert_gone(links(second, same_in_second))
        assert all(r.status_code == 200 for r in links(first, kept[0]))
        assert face(target) not in {face(m) for m in search(second, yao)}


def test_the_same_faces_in_any_order_are_the_same_request_and_the_person_can_follow_it(
        pair: tuple[Served, Served], yao: bytes, shared_state: Path) -> None:
    with pair[0].client() as first, pair[1].client() as second:
        chosen = search(first, yao)[:2]
        assert len(chosen) == 2
        created = first.post("/api/removals", json={
            "matches": [m["match_id"] for m in chosen], "contact": CONTACT})
        assert created.status_code == 201, created.text
        receipt = created.json()
        assert CONTACT in receipt["datasets"][0]["letter"]

        # The same faces, from the other process, in the other order, without a contact.
        again_ids = {face(m): m["match_id"] for m in search(first, yao) + chosen}
        reordered = [again_ids[face(m)] for m in reversed(chosen)]
        again = second.post("/api/removals", json={"matches": reordered})
        assert again.status_code == 200, again.text
        repeated = again.json()
        assert repeated["request_id"] == receipt["request_id"]
        assert repeated["created"] == receipt["created"]
        assert CONTACT not in again.text  # whoever asks again never sees the address given
        assert repeated["status_url"] != receipt["status_url"]
        with sqlite3.connect(shared_state / DATABASE) as db:
            assert db.execute("SELECT COUNT(*) FROM removal_requests WHERE request_id = ?",
                              (receipt["request_id"],)).fetchone() == (1,)

        # The status link, from either process, with either token.
        url = receipt["status_url"]
        assert url.startswith(f"/api/removals/{receipt['request_id']}/status/")
        for client, link in ((first, url), (second, url), (second, repeated["status_url"])):
            shown = client.get(link)
            assert shown.status_code == 200, shown.text
            status = shown.json()
            assert set(status) == STATUS_FIELDS
            assert status["status"] == "received" and status["photos"] == 2
            assert status["created"] == receipt["created"] == status["status_changed"]
            assert shown.headers["cache-control"] == "no-store"
            for private in (CONTACT, *(m["image_key"] for m in chosen)):
                assert private not in shown.text

        # A wrong token, another request's token, an unknown request: the same 404.
        token = url.rsplit("/", 1)[1]
        wrong = url[: -len(token)] + ("A" if token[0] != "A" else "B") + token[1:]
        other = first.post("/api/removals", json={"matches": [search(first, yao)[0]["match_id"]]}
                           ).json()
        messages = set()
        for link in (wrong, url.replace(receipt["request_id"], other["request_id"]),
                     url.replace(receipt["request_id"], "0" * 16), url + "x" * 200):
            refused = first.get(link)
            assert refused.status_code == 404, refused.text
            assert refused.json()["error"]["code"] == "request_not_found"
            messages.add(refused.json()["error"]["message"])
        assert len(messages) == 1

        # The operator's CLI, then the admin route, set what the person sees.
        marked = runner.invoke(cli, ["removals", "mark", receipt["request_id"], "sent",
                                     "--state-dir", str(shared_state)])
        assert marked.exit_code == 0, marked.output
        assert second.get(url).json()["status"] == "sent"
        rejected = first.post(f"/api/admin/removals/{receipt['request_id']}/status",
                              json={"status": "rejected"},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert rejected.status_code == 200, rejected.text
        status = second.get(url).json()
        assert status["status"] == "rejected" and "did not remove" in status["meaning"]
        assert status["status_changed"] >= status["created"]

        # In a browser, the same as a page of its own, which runs no script.
        page = second.get(url, headers={"Accept": "text/html,application/xhtml+xml,*/*"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Status: rejected" in page.text and "<script" not in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert CONTACT not in page.text


# --- removals off ----------------------------------------------------------------------------

def test_with_no_removals_the_route_says_whom_to_write_to_and_nothing_is_kept(
        built_index: Path, tmp_path: Path, yao: bytes) -> None:
    xdg = tmp_path / "xdg"
    env = {"XDG_STATE_HOME": str(xdg), "FACEAUDIT_STATE_DIR": None,
           "FACEAUDIT_ADMIN_TOKEN": ADMIN_TOKEN,
           "FACEAUDIT_DATASET_CONTACTS": json.dumps({DATASET: MAINTAINERS})}
    with faceaudit_serve(["--index", str(built_index), "--no-removals"], env,
                         tmp_path / "serve.log") as served, served.client() as http:
        found = search(http, yao)
        assert found and all(m["match_id"] is None for m in found)
        for body in (b'{"matches": ["x"]}', b"", b"not json", b"[" * 70_000):
            refused = http.post("/api/removals", content=body,
                                headers={"Content-Type": "application/json"})
            assert refused.status_code == 404, refused.text
            error = refused.json()["error"]
            assert error["code"] == "removals_disabled"
            assert "turned them off" in error["message"]
            assert f"{DATASET}: {MAINTAINERS}" in error["message"]
        paths = http.get("/openapi.json").json()["paths"]
        assert not [path for path in paths if "removals" in path]
        assert all(r.status_code == 200 for r in links(http, found[0]))
        log = served.log.read_text()
    assert "removal requests are OFF" in log  # said at start-up, in the log
    # No removal database, so no audit log (the folder may hold the rate limits' counts).
    assert not (xdg / "faceaudit" / DATABASE).exists()


def test_a_state_folder_that_cannot_work_stops_serve_before_it_starts(
        built_index: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    for state, words in ((blocked, "cannot hold"), (built_index / "state", "inside the index")):
        result = runner.invoke(cli, ["serve", "--index", str(built_index), "--state-dir",
                                     str(state), "--device", "cpu"])
        assert result.exit_code == 2, result.output
        assert words in result.stderr and "Traceback" not in result.output
    assert not (built_index / "state").exists()


# --- the default state folder ----------------------------------------------------------------

def test_without_flags_serve_and_every_command_use_the_same_default_state_folder(
        built_index: Path, collection: tuple[Path, Path], tmp_path: Path, yao: bytes) -> None:
    xdg = tmp_path / "xdg"
    env = {"XDG_STATE_HOME": str(xdg), "FACEAUDIT_STATE_DIR": None}
    state = xdg / "faceaudit"
    with faceaudit_serve(["--index", str(built_index)], env, tmp_path / "serve.log"
                         ) as served, served.client() as http:
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert (state / DATABASE).is_file()
        found = search(http, yao)
        asked = http.post("/api/removals", json={"matches": [found[0]["match_id"]]})
        assert asked.status_code == 201, asked.text
        request_id = asked.json()["request_id"]
    assert f"removal requests kept in {state}" in served.log.read_text()

    # The operator's and the researchers' commands, with no flag, find it there.
    listed = runner.invoke(cli, ["removals", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["request_id"] for line in listed.stdout.splitlines()] == [
        request_id]
    searched = runner.invoke(cli, ["search", str(collection[1] / "yaoming.jpg"), "--index",
                                   str(built_index), "--device", "cpu", "--json"], env=env)
    assert searched.exit_code == 0, searched.output
    keys = {m["image_key"] for m in json.loads(searched.stdout)["matches"]}
    assert found[0]["image_key"] not in keys and len(keys) == len(found) - 1
    rebuilt = tmp_path / "rebuilt"
    built = runner.invoke(cli, ["index", str(collection[0] / "manifest.csv"), "--out",
                                str(rebuilt), "--dataset", DATASET, "--device", "cpu"], env=env)
    assert built.exit_code == 0, built.output
    assert json.loads((rebuilt / "manifest.json").read_text())["counts"]["removed_faces"] == 1

    # FACEAUDIT_STATE_DIR wins over XDG_STATE_HOME.
    other = tmp_path / "other"
    RemovalStore(other).record_request([RemovedPhoto(DATASET, "k", (1,))])
    listed = runner.invoke(cli, ["removals", "list", "--json"],
                           env={**env, "FACEAUDIT_STATE_DIR": str(other)})
    assert request_id not in listed.stdout and len(listed.stdout.splitlines()) == 1


def test_the_demo_honours_the_removals_of_the_default_state_folder(
        built_index: Path, tmp_path: Path) -> None:
    from faceaudit.indexer.search import FaceIndex

    xdg = tmp_path / "xdg"
    index = FaceIndex(built_index)
    named = [(index.images[int(index.faces.image_id[row])].key, int(index.faces.face_id[row]))
             for row in (0, 1)]
    RemovalStore(xdg / "faceaudit").record_request(
        [RemovedPhoto(DATASET, key, (face,)) for key, face in named])
    result = runner.invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--no-serve"],
                           env={"XDG_STATE_HOME": str(xdg), "FACEAUDIT_STATE_DIR": None})
    assert result.exit_code == 0, result.output
    built = FaceIndex(tmp_path / "demo" / "index")
    assert built.manifest["counts"]["removed_faces"] == 2
    assert not {face for _, face in named} & {int(f) for f in built.faces.face_id}
    assert not (tmp_path / "demo" / "state").exists()


# The first release's tables, as its databases hold them.
VERSION_1 = """
PRAGMA journal_mode=WAL;
CREATE TABLE removal_requests (request_id TEXT PRIMARY KEY, created TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('received', 'sent', 'done')),
    status_changed TEXT NOT NULL, contact TEXT);
CREATE TABLE removal_photos (request_id TEXT NOT NULL REFERENCES removal_requests (request_id),
    position INTEGER NOT NULL, dataset TEXT NOT NULL, image_key TEXT NOT NULL, photo_id TEXT,
    image_url TEXT, page_url TEXT, sha256 TEXT, source_record TEXT, uploader_name TEXT,
    licence_name TEXT, PRIMARY KEY (request_id, image_key));
CREATE TABLE removal_faces (request_id TEXT NOT NULL, dataset TEXT NOT NULL,
    image_key TEXT NOT NULL, face_id INTEGER NOT NULL,
    PRIMARY KEY (request_id, image_key, face_id),
    FOREIGN KEY (request_id, image_key) REFERENCES removal_photos (request_id, image_key));
CREATE TABLE search_log (id INTEGER PRIMARY KEY, time TEXT NOT NULL, dataset TEXT,
    faces_in_selfie INTEGER NOT NULL, results INTEGER NOT NULL, threshold REAL NOT NULL,
    outcome TEXT NOT NULL);
INSERT INTO removal_requests VALUES ('ffff000000000001', '2026-01-01T00:00:00+00:00', 'sent',
    '2026-01-02T00:00:00+00:00', 'a@example.org');
INSERT INTO removal_requests VALUES ('0000000000000002', '2026-01-03T00:00:00+00:00',
    'received', '2026-01-03T00:00:00+00:00', NULL);
INSERT INTO removal_photos (request_id, position, dataset, image_key)
    VALUES ('ffff000000000001', 0, 'd', 'd:1'), ('0000000000000002', 0, 'd', 'd:2');
INSERT INTO removal_faces VALUES ('ffff000000000001', 'd', 'd:1', 11),
    ('0000000000000002', 'd', 'd:2', 22);
"""


def test_a_database_of_the_first_release_is_brought_up_to_date(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DATABASE) as db:
        db.executescript(VERSION_1)
    store = RemovalStore(tmp_path)
    assert [(r.request_id, r.status, r.contact) for r in store.requests()] == [
        ("ffff000000000001", "sent", "a@example.org"), ("0000000000000002", "received", None)]
    assert store.suppressed("d") == {("d:1", 11), ("d:2", 22)}
    assert store.set_status("0000000000000002", "rejected").status == "rejected"
    first = store.submit([RemovedPhoto("d", "d:3", (33, 34))])
    again = RemovalStore(tmp_path).submit([RemovedPhoto("d", "d:3", (34, 33, 33))])
    assert first.new and not again.new and again.request.request_id == first.request.request_id
    assert store.followed(first.request.request_id, again.token).photos == first.request.photos
    with sqlite3.connect(tmp_path / DATABASE) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
        logged = {row[1] for row in db.execute("PRAGMA table_info(search_log)")}
        assert {"selfies", "confirmed"} <= logged
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("SELECT COUNT(*) FROM removal_faces").fetchone() == (4,)


def test_the_default_state_folder_follows_the_xdg_rules(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACEAUDIT_STATE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "faceaudit"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # not absolute: ignored
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "faceaudit"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "faceaudit"
    monkeypatch.setenv("FACEAUDIT_STATE_DIR", str(tmp_path / "chosen"))
    assert default_state_dir() == tmp_path / "chosen"
    # The tests themselves never use the user's own folder, in any process they start.
    probe = subprocess.run([sys.executable, "-c", "from faceaudit.removals import "
                            "default_state_dir; print(default_state_dir())"],
                           capture_output=True, text=True, check=True,
                           env={"PATH": "/usr/bin", "XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert probe.stdout.strip() == str(tmp_path / "xdg" / "faceaudit")
