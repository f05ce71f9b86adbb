"""Removal requests end to end: match ids from a search, POST /api/removals, the letter,
suppression across restarts and index swaps, the admin routes, the operators' CLI, the search
audit log, the per-day limit, and the database surviving kill -9."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.engine import FaceEngine
from faceaudit.removals import (
    DATABASE,
    MATCH_ID_SECRET,
    PHOTO_FIELDS,
    MatchIds,
    RemovalStore,
    RemovedPhoto,
    StateDirError,
    suppressed_face_ids,
)
from faceaudit.service.app import create_app
from faceaudit.service.deps import Services
from faceaudit.service.removals import PhotoOut
from faceaudit.service.settings import ServiceSettings

DATASET = "faceaudit-demo"
MAINTAINERS = "takedown@example.org"
ADMIN_TOKEN = "operator-token-1234"
CLIENT_ADDRESS = "203.0.113.77"  # TEST-NET-3: searched for in the database afterwards
YAO_PHOTOS = {
    "team/players.jpg",
    "street/group_with_yao_behind.jpg",
    "portraits/yao_flipped.jpg",
    "portraits/yao_bright_small.jpg",
}
runner = CliRunner()


@pytest.fixture(scope="module")
def yao(collection: tuple[Path, Path]) -> bytes:
    return (collection[1] / "yaoming.jpg").read_bytes()


@pytest.fixture
def settings(built_index: Path, tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(index=built_index, device="cpu", rate_limit=None, daily_limit=None,
                           state_dir=tmp_path / "state", admin_token=ADMIN_TOKEN,
                           dataset_contacts={DATASET: MAINTAINERS})


@pytest.fixture
def client(settings: ServiceSettings, engine: FaceEngine) -> Iterator[TestClient]:
    with served(settings, engine) as test_client:
        yield test_client


def served(settings: ServiceSettings, engine: FaceEngine) -> TestClient:
    return TestClient(create_app(settings, engine=engine), client=(CLIENT_ADDRESS, 50000))


def search(client: TestClient, data: bytes, name: str = "selfie.jpg") -> dict:
    response = client.post("/api/search", files={"selfie": (name, data, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def photo_paths(client: TestClient, matches: list[dict]) -> list[str]:
    """Where each match's photo is in the dataset: the API does not say (a path can name the
    person pictured), the index served does."""
    refs = {record.key: record.ref for served in services_of(client).catalog.served
            for record in served.published.index.images}
    return [refs[m["image_key"]] for m in matches]


def remove(client: TestClient, match_ids: list[str], **body: object) -> httpx.Response:
    return client.post("/api/removals", json={"matches": match_ids, **body})


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return str(error["message"])


# --- the subject's journey -------------------------------------------------------------------

def test_a_removal_request_lists_the_photos_and_hides_them_from_every_later_search(
        client: TestClient, settings: ServiceSettings, yao: bytes,
        collection: tuple[Path, Path]) -> None:
    found = search(client, yao)["matches"]
    assert set(photo_paths(client, found)) == YAO_PHOTOS
    assert all(isinstance(m["match_id"], str) and len(m["match_id"]) > 40 for m in found)
    first, rest = found[0], found[1:]

    # One photo first: only that face disappears.
    answer = remove(client, [first["match_id"]])
    assert answer.status_code == 201, answer.text
    after_one = search(client, yao)["matches"]
    assert [m["image_key"] for m in after_one] == [m["image_key"] for m in rest]

    # Then the rest, with a contact address.
    answer = remove(client, [m["match_id"] for m in rest], contact="  me@example.com ")
    assert answer.status_code == 201, answer.text
    receipt = answer.json()
    assert receipt["status"] == "received" and receipt["request_id"] and receipt["created"]
    assert answer.headers["cache-control"] == "no-store"
    [entry] = receipt["datasets"]
    assert entry["dataset"] == DATASET and entry["contact"] == MAINTAINERS
    assert [p["image_key"] for p in entry["photos"]] == [m["image_key"] for m in rest]
    for photo, match in zip(entry["photos"], rest, strict=True):
        assert set(photo) == set(PHOTO_FIELDS)
        for field in ("photo_id", "image_url", "page_url", "sha256", "uploader_name",
                      "licence_name"):
            assert photo[field] == match["provenance"][field]
        assert photo["source_record"]  # for the maintainers, only in the receipt
        # The letter names each photo exactly: its page, its bytes' SHA-256, its record.
        for value in (photo["image_key"], photo["page_url"], photo["sha256"],
                      photo["source_record"]):
            assert value and value in entry["letter"]
    letter = entry["letter"]
    assert f"the {len(rest)} photos of the dataset {DATASET}" in letter
    assert "Article 17" in letter and "me@example.com" in letter
    assert receipt["request_id"] in letter
    mailto = entry["mailto"]
    assert mailto.startswith(f"mailto:{MAINTAINERS}?subject=")
    body = unquote(mailto.split("&body=", 1)[1])
    assert body == letter.replace("\n", "\r\n")
    assert unquote(mailto.split("?subject=", 1)[1].split("&", 1)[0]) == entry["subject"]
    document = json.loads(receipt["json"])
    assert document["request_id"] == receipt["request_id"]
    assert document["datasets"][0]["photos"] == entry["photos"]
    rows = list(csv.DictReader(io.StringIO(receipt["csv"])))
    assert [r["image_key"] for r in rows] == [m["image_key"] for m in rest]
    assert list(rows[0]) == ["dataset", "image_key", "photo_id", "image_url", "page_url",
                             "sha256"]

    # From now on no search returns Yao's faces; other people are still found.
    assert search(client, yao)["matches"] == []
    hanks = search(client, (collection[1] / "tom_hanks.png").read_bytes())["matches"]
    assert photo_paths(client, hanks) == ["portraits/hanks.jpg"]
    assert suppressed_face_ids(settings.state_dir, DATASET) == {
        int(m["face_id"]) for m in found}


def test_suppression_and_match_ids_survive_a_restart(settings: ServiceSettings,
                                                     engine: FaceEngine, yao: bytes) -> None:
    with served(settings, engine) as first:
        found = search(first, yao)["matches"]
        assert remove(first, [found[0]["match_id"]]).status_code == 201
    with served(settings, engine) as second:  # a new process's app, the same state folder
        assert found[0]["image_key"] not in {m["image_key"]
                                             for m in search(second, yao)["matches"]}
        # The secret is kept in the state folder: ids issued before the restart still work.
        assert remove(second, [found[1]["match_id"]]).status_code == 201
        assert len(search(second, yao)["matches"]) == len(found) - 2
    assert (settings.state_dir / MATCH_ID_SECRET).stat().st_mode & 0o077 == 0
    assert (settings.state_dir / DATABASE).stat().st_mode & 0o077 == 0


def test_suppression_survives_a_newly_published_index(engine: FaceEngine, yao: bytes,
                                                      collection: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    from faceaudit.indexer.build import build_index

    photos = tmp_path / "photos"
    shutil.copytree(collection[0] / "portraits", photos)
    out = tmp_path / "live-index"
    build_index(photos, out, engine)
    live = ServiceSettings(index=out, dataset=photos, device="cpu", rate_limit=None,
                           daily_limit=None, reload_interval=0.05, state_dir=tmp_path / "state")
    with served(live, engine) as client:
        before = search(client, yao)["matches"]
        assert set(photo_paths(client, before)) == {"yao_flipped.jpg", "yao_bright_small.jpg"}
        assert remove(client, [before[0]["match_id"]]).status_code == 201

        # The operator adds a photo and publishes the grown index while the service runs.
        shutil.copy(collection[0] / "team" / "players.jpg", photos / "players.jpg")
        images = client.get("/healthz").json()["images"]
        build_index(photos, out, engine)
        deadline = time.monotonic() + 30  # it is loaded in the background, then swapped in
        while (client.get("/healthz").json()["images"] == images
               and time.monotonic() < deadline):
            time.sleep(0.02)
        after = search(client, yao)["matches"]
        assert {m["image_key"] for m in after} - {before[1]["image_key"]} == {
            record.key for record in FaceIndex(out).images if record.ref == "players.jpg"}
        # A match id of the replaced index is refused, with what to do.
        message = assert_error(remove(client, [before[1]["match_id"]]), 422, "invalid_match_id")
        assert "earlier version of the index" in message and "search again" in message
        assert remove(client, [m["match_id"] for m in after]).status_code == 201
        assert search(client, yao)["matches"] == []


def test_only_match_ids_issued_by_a_search_of_this_index_are_accepted(
        client: TestClient, settings: ServiceSettings, yao: bytes,
        collection: tuple[Path, Path], engine: FaceEngine) -> None:
    found = search(client, yao)["matches"]
    good = found[0]["match_id"]
    services = services_of(client)
    index: FaceIndex = services.published.index
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    assert_error(remove(client, [flipped]), 422, "invalid_match_id")
    assert_error(remove(client, [good[:-2]]), 422, "invalid_match_id")
    assert_error(remove(client, ["../../etc/passwd"]), 422, "invalid_match_id")
    # Signed with another service's secret.
    foreign = MatchIds(os.urandom(32), 3600)
    match = _match_of(index, engine, yao)
    message = assert_error(remove(client, [good, foreign.issue(index, match)]), 422,
                           "invalid_match_id")
    assert message.startswith("matches[1]:")
    # The right secret, an hour and a minute ago: expired (the TTL is the thumbnails').
    late = MatchIds(services.match_ids.secret, settings.thumbnail_ttl,
                    clock=lambda: time.time() - settings.thumbnail_ttl - 60)
    assert "expired" in assert_error(remove(client, [late.issue(index, match)]), 422,
                                     "match_id_expired")
    # The right secret, another index.
    other = FaceIndex(settings.index[0])
    other.manifest = {**other.manifest, "created": "another build"}
    assert_error(remove(client, [services.match_ids.issue(other, match)]), 422,
                 "invalid_match_id")
    # The request itself.
    assert "at least one" in assert_error(remove(client, []), 422, "invalid_parameter")
    assert "at most 200" in assert_error(remove(client, [good] * 201), 422,
                                         "invalid_parameter")
    assert "email" in assert_error(remove(client, [good], contact="not an address"), 422,
                                   "invalid_parameter")
    assert_error(remove(client, [good], selfie="x"), 422, "invalid_parameter")
    assert_error(client.post("/api/removals", content=b"matches=1"), 422, "invalid_parameter")
    assert_error(client.post("/api/removals", content=b"[" + b" " * 70_000 + b"]"), 413,
                 "upload_too_large")
    assert services.removals.requests() == []  # nothing refused was recorded
    # The same photo twice is one photo.
    receipt = remove(client, [good, good]).json()
    assert len(receipt["datasets"][0]["photos"]) == 1


def _match_of(index: FaceIndex, engine: FaceEngine, selfie: bytes):
    from faceaudit.imaging import decode_image
    from faceaudit.indexer.search import search_selfie

    return search_selfie(engine, index, decode_image(selfie), top=1)[0]


def test_with_removals_off_there_are_no_match_ids_and_the_route_says_whom_to_write_to(
        built_index: Path, engine: FaceEngine, yao: bytes, tmp_path: Path) -> None:
    off = ServiceSettings(index=built_index, device="cpu", rate_limit=None, daily_limit=None,
                          removals=False, state_dir=tmp_path / "state",
                          admin_token=ADMIN_TOKEN, dataset_contacts={DATASET: MAINTAINERS})
    with served(off, engine) as client:
        found = search(client, yao)["matches"]
        assert found and all(m["match_id"] is None for m in found)
        bodies: list[dict[str, list[str]]] = [{"matches": ["x" * 82]}, {}, {"matches": []}]
        for body in bodies:
            message = assert_error(client.post("/api/removals", json=body), 404,
                                   "removals_disabled")
            assert "turned them off" in message and f"{DATASET}: {MAINTAINERS}" in message
        paths = client.get("/openapi.json").json()["paths"]
        assert not [path for path in paths if "/removals" in path]  # admin ones too
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert_error(client.get("/api/admin/removals", headers=auth), 404, "not_found")
    assert not (tmp_path / "state").exists()  # nothing kept, not even the audit log


def test_a_state_folder_inside_the_index_folder_is_refused(built_index: Path,
                                                           engine: FaceEngine) -> None:
    inside = ServiceSettings(index=built_index, device="cpu", state_dir=built_index / "state")
    with pytest.raises(StateDirError, match="outside"), served(inside, engine):
        pass
    assert not (built_index / "state").exists()


def test_the_openapi_page_documents_the_removal_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    body = paths["/api/removals"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["schema"]["properties"]) == {"matches", "contact"}
    assert "201" in paths["/api/removals"]["post"]["responses"]
    assert set(PhotoOut.model_fields) == set(PHOTO_FIELDS)


# --- what is stored --------------------------------------------------------------------------

def test_the_database_holds_no_selfie_embedding_score_or_address(
        client: TestClient, settings: ServiceSettings, yao: bytes,
        collection: tuple[Path, Path]) -> None:
    found = search(client, yao, name="marker-selfie-name.jpg")["matches"]
    remove(client, [m["match_id"] for m in found], contact="me@example.com")
    group = (collection[0] / "street" / "group.jpg").read_bytes()
    assert client.post("/api/search", files={"selfie": ("g.jpg", group, "image/jpeg")}
                       ).status_code == 422  # logged too
    state = settings.state_dir
    assert state is not None
    db = sqlite3.connect(state / DATABASE)
    tables = {name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"removal_requests", "removal_photos", "removal_faces", "removal_tokens",
                      "search_log"}
    values = []
    for table in tables:
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        assert not {"ip", "address", "client", "embedding", "score", "selfie"} & set(columns)
        for row in db.execute(f"SELECT * FROM {table}"):
            values += [(table, column, value) for column, value in zip(columns, row,
                                                                       strict=True)]
    db.close()
    assert not [v for v in values if isinstance(v[2], bytes)]  # no blob of any kind
    # The only non-integer numbers are the thresholds of the audit log: no score, no vector.
    assert {(t, c) for t, c, v in values if isinstance(v, float)} <= {("search_log",
                                                                        "threshold")}
    scores = {m["score"] for m in found}
    assert not scores & {v for _, _, v in values}
    raw = b"".join(path.read_bytes() for path in state.iterdir() if path.is_file())
    for secret in (CLIENT_ADDRESS.encode(), b"testclient", b"marker-selfie-name",
                   yao[200:232]):
        assert secret not in raw
    assert {path.name for path in state.iterdir()} <= {
        DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", MATCH_ID_SECRET}


def test_every_search_is_logged_without_biometrics(client: TestClient, yao: bytes,
                                                   collection: tuple[Path, Path]) -> None:
    search(client, yao)
    group = (collection[0] / "street" / "group.jpg").read_bytes()
    assert_error(client.post("/api/search", files={"selfie": ("g.jpg", group, "image/jpeg")}),
                 422, "multiple_faces")
    sky = (collection[0] / "street" / "sky.png").read_bytes()
    assert_error(client.post("/api/search", files={"selfie": ("s.png", sky, "image/png")}),
                 422, "no_face")
    # Several selfies: the log counts them, never more (a mirrored Yao is the same person).
    mirrored = io.BytesIO()
    ImageOps.mirror(Image.open(io.BytesIO(yao))).save(mirrored, "JPEG")
    two = [("selfie", ("a.jpg", yao, "image/jpeg")),
           ("selfie", ("b.jpg", mirrored.getvalue(), "image/jpeg"))]
    assert client.post("/api/search", files=two).status_code == 200
    hanks = (collection[1] / "tom_hanks.png").read_bytes()
    assert_error(client.post("/api/search", files=[two[0], ("selfie", ("h.png", hanks,
                                                                          "image/png"))]),
                 422, "different_people")
    store = services_of(client).removals
    assert store is not None
    log = store.search_log()
    assert [(r["faces_in_selfie"], r["results"], r["outcome"], r["selfies"], r["confirmed"])
            for r in log] == [(1, 4, "ok", 1, 0), (6, 0, "multiple_faces", 1, 0),
                              (0, 0, "no_face", 1, 0), (1, 4, "ok", 2, 0),
                              (0, 0, "different_people", 2, 0)]
    threshold = client.get("/api/info").json()["default_threshold"]
    assert all(r["threshold"] == threshold and r["dataset"] == DATASET and r["time"]
               for r in log[:3])
    assert set(log[0]) == {"time", "dataset", "faces_in_selfie", "results", "threshold",
                           "outcome", "selfies", "confirmed"}


def test_a_per_day_limit_beside_the_per_minute_one(settings: ServiceSettings,
                                                   engine: FaceEngine) -> None:
    daily = settings.model_copy(update={"daily_limit": "2/day", "rate_limit": "30/minute"})
    with served(daily, engine) as client:
        for _ in range(2):
            assert client.post("/api/search").status_code == 415  # counted, then refused
        response = client.post("/api/search")
        message = assert_error(response, 429, "rate_limited")
        assert "2 per 1 day" in message and "hours" in message
        assert int(response.headers["retry-after"]) > 3600
        # A removal request is counted like a search.
        assert_error(remove(client, ["x"]), 429, "rate_limited")


# --- the operator's side ---------------------------------------------------------------------

def test_admin_routes_need_the_token_and_do_not_exist_without_one(
        client: TestClient, settings: ServiceSettings, engine: FaceEngine, yao: bytes) -> None:
    found = search(client, yao)["matches"]
    request_id = remove(client, [found[0]["match_id"]], contact="me@example.com"
                        ).json()["request_id"]
    assert_error(client.get("/api/admin/removals"), 401, "http_401")
    assert client.get("/api/admin/removals").headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer " + ADMIN_TOKEN[:-1] + "x"}
    assert_error(client.get("/api/admin/removals", headers=wrong), 401, "http_401")
    assert_error(client.get("/api/admin/removals", headers={"Authorization": ADMIN_TOKEN}),
                 401, "http_401")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    listed = client.get("/api/admin/removals", headers=auth).json()["requests"]
    assert [(r["request_id"], r["status"], r["contact"]) for r in listed] == [
        (request_id, "received", "me@example.com")]
    assert listed[0]["photos"][0]["face_ids"] == [found[0]["face_id"]]
    status = f"/api/admin/removals/{request_id}/status"
    assert_error(client.post(status, json={"status": "sent"}), 401, "http_401")
    marked = client.post(status, json={"status": "sent"}, headers=auth)
    assert marked.status_code == 200 and marked.json()["status"] == "sent"
    assert_error(client.post(status, json={"status": "lost"}, headers=auth), 422,
                 "invalid_parameter")
    assert_error(client.post("/api/admin/removals/nope/status", json={"status": "done"},
                             headers=auth), 404, "request_not_found")
    assert client.get("/api/admin/removals?status=received", headers=auth
                      ).json()["requests"] == []
    assert client.get("/api/admin/removals?dataset=other", headers=auth
                      ).json()["requests"] == []
    rejected = client.post(status, json={"status": "rejected"}, headers=auth)
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert [r["request_id"] for r in client.get("/api/admin/removals?status=rejected",
                                                headers=auth).json()["requests"]] == [request_id]
    # Documented with every status they answer.
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/admin/removals"]["get"]["responses"]) == {"200", "401", "422",
                                                                     "503"}
    assert set(paths["/api/admin/removals/{request_id}/status"]["post"]["responses"]) == {
        "200", "401", "404", "413", "422", "503"}

    no_token = settings.model_copy(update={"admin_token": None})
    with served(no_token, engine) as plain:
        assert_error(plain.get("/api/admin/removals", headers=auth), 404, "not_found")
        assert_error(plain.post(status, json={"status": "done"}, headers=auth), 404,
                     "not_found")
        assert not [path for path in plain.get("/openapi.json").json()["paths"]
                    if path.startswith("/api/admin/")]


def _photo(n: int, dataset: str = "flickr-faces") -> RemovedPhoto:
    return RemovedPhoto(
        dataset=dataset, image_key=f"{dataset}:{1000 + n}", face_ids=(n * 10, n * 10 + 1),
        photo_id=str(1000 + n), image_url=f"https://farm1.staticflickr.com/1/{1000 + n}_ab.jpg",
        page_url=f"https://www.flickr.com/photos/someone/{1000 + n}/", sha256=f"{n:064x}",
        source_record=f"00000.tar:{n:09d}", uploader_name="someone", licence_name="CC BY 2.0")


def test_cli_lists_exports_and_marks_requests(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = RemovalStore(state)
    first = store.record_request([_photo(1), _photo(2)], contact="me@example.com")
    store.record_request([_photo(2), _photo(3, "other-set")])  # photo 2 asked twice
    env = {"FACEAUDIT_STATE_DIR": str(state)}

    listed = runner.invoke(cli, ["removals", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert first.request_id in listed.stdout and "me@example.com" in listed.stdout
    assert "https://farm1.staticflickr.com/1/1001_ab.jpg" in listed.stdout
    as_json = runner.invoke(cli, ["removals", "list", "--json", "--dataset", "other-set"],
                            env=env)
    [line] = as_json.stdout.splitlines()
    assert [p["image_key"] for p in json.loads(line)["photos"]] == ["other-set:1003"]

    exported = runner.invoke(cli, ["removals", "export", "--state-dir", str(state)])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["image_key"] for r in rows] == ["flickr-faces:1001", "flickr-faces:1002",
                                              "other-set:1003"]  # one row per photo
    assert rows[0]["image_url"] == _photo(1).image_url and rows[0]["sha256"] == _photo(1).sha256
    out = tmp_path / "opt-out.parquet"
    exported = runner.invoke(cli, ["removals", "export", "--dataset", "flickr-faces",
                                   "--format", "parquet", "--out", str(out)], env=env)
    assert exported.exit_code == 0, exported.output
    table = pq.read_table(out).to_pylist()
    assert [r["photo_id"] for r in table] == ["1001", "1002"]
    assert set(table[0]) == {"dataset", "image_key", "photo_id", "image_url", "page_url",
                             "sha256", "requested"}
    as_json = runner.invoke(cli, ["removals", "export", "--format", "json"], env=env)
    assert [r["photo_id"] for r in json.loads(as_json.stdout)] == ["1001", "1002", "1003"]
    assert runner.invoke(cli, ["removals", "export", "--format", "parquet"], env=env
                         ).exit_code == 2

    marked = runner.invoke(cli, ["removals", "mark", first.request_id, "done"], env=env)
    assert marked.exit_code == 0 and "done" in marked.stdout
    assert store.request(first.request_id).status == "done"
    missing = runner.invoke(cli, ["removals", "mark", "nope", "sent"], env=env)
    assert missing.exit_code == 2 and "no removal request" in missing.stderr
    assert runner.invoke(cli, ["removals", "mark", first.request_id, "lost"], env=env
                         ).exit_code == 2
    gone = runner.invoke(cli, ["removals", "list", "--state-dir", str(tmp_path / "typo")])
    assert gone.exit_code == 2 and "does not exist" in gone.stderr


def test_cli_search_leaves_out_suppressed_faces(engine: FaceEngine, built_index: Path,
                                                collection: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    match = _match_of(FaceIndex(built_index), engine, collection[1].joinpath(
        "yaoming.jpg").read_bytes())
    RemovalStore(tmp_path / "state").record_request([RemovedPhoto(
        DATASET, match.record.key, (match.face_id,))])
    result = runner.invoke(cli, ["search", str(collection[1] / "yaoming.jpg"), "--index",
                                 str(built_index), "--json", "--device", "cpu", "--top", "3"],
                           env={"FACEAUDIT_STATE_DIR": str(tmp_path / "state")})
    assert result.exit_code == 0, result.output
    images = [m["image"] for m in json.loads(result.stdout)["matches"]]
    assert len(images) == 3 and match.image not in images  # still 3: --top counts after


# --- durability ------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from faceaudit.removals import RemovalStore, RemovedPhoto

    store = RemovalStore(Path(sys.argv[1]))

    def photos(n):
        for i in range(3):
            yield RemovedPhoto("d", f"d:{n}-{i}", (n * 10 + i,), photo_id=str(n))
            if n == 25 and i == 1:  # two photos of this request written, not committed
                print("mid-request", flush=True)
                time.sleep(60)

    for n in range(1000):
        print(store.record_request(photos(n)).request_id, flush=True)
""")


def test_the_database_survives_kill_9_mid_request(tmp_path: Path) -> None:
    state = tmp_path / "state"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(state)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    completed = []
    try:
        for line in writer.stdout:
            if line.strip() == "mid-request":
                break
            completed.append(line.strip())
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL and len(completed) == 25
    assert (state / f"{DATABASE}-wal").exists()  # killed with work not yet checkpointed

    db = sqlite3.connect(state / DATABASE)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    store = RemovalStore(state)
    assert [r.request_id for r in store.requests()] == completed  # every one it answered
    assert all(len(r.photos) == 3 for r in store.requests())  # and nothing half-written
    assert suppressed_face_ids(state, "d") == {n * 10 + i for n in range(25) for i in range(3)}
    store.record_request([_photo(1)])  # and it takes new requests


def test_a_request_written_by_another_process_is_seen_at_the_next_search(
        tmp_path: Path) -> None:
    serving = RemovalStore(tmp_path / "state")  # one worker's store, already in use
    assert serving.suppressed("flickr-faces") == frozenset()
    RemovalStore(tmp_path / "state").record_request([_photo(1)])  # another worker's
    assert serving.suppressed("flickr-faces") == {("flickr-faces:1001", 10),
                                                  ("flickr-faces:1001", 11)}
    assert serving.suppressed("other-set") == frozenset()


def test_the_next_build_leaves_out_the_faces_whose_removal_was_asked(
        client: TestClient, settings: ServiceSettings, yao: bytes,
        collection: tuple[Path, Path], tmp_path: Path) -> None:
    found = search(client, yao)["matches"]
    assert remove(client, [m["match_id"] for m in found]).status_code == 201
    out = tmp_path / "rebuilt"
    runner = CliRunner()
    result = runner.invoke(cli, ["index", str(collection[0] / "manifest.csv"), "--out", str(out),
                                 "--dataset", DATASET, "--device", "cpu", "--state-dir",
                                 str(settings.state_dir)])
    assert result.exit_code == 0, result.output
    rebuilt = FaceIndex(out)
    assert rebuilt.manifest["counts"]["removed_faces"] == len(found)
    kept_ids = {int(f) for f in rebuilt.faces.face_id}
    assert not kept_ids & {int(m["face_id"]) for m in found}
    # Nothing of Yao's is searchable in the new build, even with an empty state to filter.
    (tmp_path / "empty-state").mkdir()
    plain = runner.invoke(cli, ["search", str(collection[1] / "yaoming.jpg"), "--index", str(out),
                                "--device", "cpu", "--json", "--state-dir",
                                str(tmp_path / "empty-state")])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["matches"] == []
