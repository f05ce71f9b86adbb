"""Several indexes served at once: one search searches them all, each match names its dataset,
and thumbnails and removal requests work for the matches of any of them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.indexer.build import build_index
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.engine import FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings
from tests import expected_strangers as expected
from tests.photos import photos_of

DEMO_YAO = {"team/players.jpg", "street/group_with_yao_behind.jpg", "portraits/yao_flipped.jpg",
            "portraits/yao_bright_small.jpg"}
OTHER_YAO = {"yao_flipped.jpg", "yao_bright_small.jpg"}


@pytest.fixture(scope="module")
def other_index(collection: tuple[Path, Path], engine: FaceEngine,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's portraits, indexed again as another dataset."""
    out = tmp_path_factory.mktemp("other") / "other-index"
    build_index(collection[0] / "portraits", out, engine, dataset="other")
    return out


@pytest.fixture
def settings(built_index: Path, other_index: Path, tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(index=[built_index, other_index], device="cpu", rate_limit=None,
                           daily_limit=None, state_dir=tmp_path / "state")


@pytest.fixture
def client(settings: ServiceSettings, engine: FaceEngine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine=engine)) as test_client:
        yield test_client


def search(client: TestClient, data: bytes, **params: object) -> httpx.Response:
    return client.post("/api/search", files={"selfie": ("s.jpg", data, "image/jpeg")},
                       params=params)


def test_a_search_searches_every_index_and_each_match_names_its_dataset(
        client: TestClient, yao: bytes, built_index: Path, other_index: Path) -> None:
    response = search(client, yao)
    assert response.status_code == 200, response.text
    result = response.json()
    found = set(zip((m["dataset"] for m in result["matches"]),
                    photos_of(result["matches"], built_index, other_index), strict=True))
    assert found == ({("faceaudit-demo", image) for image in DEMO_YAO}
                     | {("other", image) for image in OTHER_YAO})
    scores = [m["score"] for m in result["matches"]]
    assert scores == sorted(scores, reverse=True)
    for match in result["matches"]:
        assert match["provenance"]["dataset"] == match["dataset"]
        assert match["image_key"].startswith(match["dataset"] + ":")
    # One search, held to the bounds of one index of both sizes together.
    demo, other = FaceIndex(built_index), FaceIndex(other_index)
    size = demo.size + other.size
    assert result["index_size"] == size
    assert result["index_images"] == len(demo.images) + len(other.images)
    default = expected.default_threshold(expected.shipped(), size)  # from the file's numbers
    assert result["threshold"] == result["min_threshold"] == default
    assert result["indexes"] == [
        {"dataset": "faceaudit-demo", "index_size": demo.size, "index_images": len(demo.images)},
        {"dataset": "other", "index_size": other.size, "index_images": len(other.images)}]
    info = client.get("/api/info").json()
    assert info["indexes"] == result["indexes"] and info["index_size"] == size
    assert client.get("/healthz").json()["index_size"] == size

    # At most `top` photos in all, the best of every index.
    best = search(client, yao, top=3).json()["matches"]
    assert [m["image_key"] for m in best] == [m["image_key"] for m in result["matches"][:3]]


def test_thumbnails_and_close_ups_of_every_index(client: TestClient, yao: bytes,
                                                 settings: ServiceSettings) -> None:
    matches = search(client, yao).json()["matches"]
    for match in matches:
        for link in (match["thumbnail"], match["face_thumbnail"]):
            response = client.get(link)
            assert response.status_code == 200, match["image_key"]
            assert response.headers["content-type"] == "image/jpeg"
    # The same photo in both indexes: a link says which index it is for, under its signature.
    flipped = {m["dataset"]: m for m, photo in zip(matches, photos_of(matches, *settings.index),
                                                   strict=True)
               if photo.endswith("yao_flipped.jpg")}
    assert flipped["faceaudit-demo"]["thumbnail"] != flipped["other"]["thumbnail"]
    token = flipped["other"]["thumbnail"].rsplit("/", 1)[1]
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    for slot in (0, 7):  # the other index; no index at all
        raw[1] = slot
        moved = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        assert client.get(f"/api/thumbnails/{moved}").status_code == 404


def test_removal_of_a_match_of_the_second_index(client: TestClient, yao: bytes) -> None:
    matches = search(client, yao).json()["matches"]
    other = next(m for m in matches if m["dataset"] == "other")
    demo = next(m for m in matches if m["dataset"] == "faceaudit-demo")
    response = client.post("/api/removals", json={"matches": [other["match_id"],
                                                              demo["match_id"]]})
    assert response.status_code == 201, response.text
    datasets = {d["dataset"]: d["photos"] for d in response.json()["datasets"]}
    assert [p["image_key"] for p in datasets["other"]] == [other["image_key"]]
    assert [p["image_key"] for p in datasets["faceaudit-demo"]] == [demo["image_key"]]
    after = {m["image_key"] for m in search(client, yao).json()["matches"]}
    assert after == {m["image_key"] for m in matches} - {other["image_key"], demo["image_key"]}


def test_settings_take_several_indexes_from_the_environment(
        built_index: Path, other_index: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEAUDIT_INDEX", f"{built_index}:{other_index}")
    assert ServiceSettings().index == [built_index, other_index]  # type: ignore[call-arg]
    monkeypatch.setenv("FACEAUDIT_INDEX", str(built_index))
    assert ServiceSettings().index == [built_index]  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="one per index"):
        ServiceSettings(index=[built_index, other_index], dataset=[tmp_path])
    with pytest.raises(ValueError, match="twice"):
        ServiceSettings(index=[built_index, built_index])
    # The CLI refuses the same, before loading anything.
    result = CliRunner().invoke(cli, ["serve", "--index", str(built_index), "--index",
                                      str(other_index), "--dataset", str(tmp_path)])
    assert result.exit_code == 2 and "one per index" in result.output
