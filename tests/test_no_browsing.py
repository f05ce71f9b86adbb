"""No browsing: no search runs where more than a bound of strangers per search is expected at
the index's size, results per search are capped, over HTTP always and on the command line
unless a researcher says otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.calibration import (
    MAX_RESULTS,
    MEANING,
    UNCALIBRATED_THRESHOLD,
    Calibration,
)
from faceaudit.models.engine import FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings

YAO_PHOTOS = 4  # his photos in the demo index


@pytest.fixture(scope="module")
def size(built_index: Path) -> int:
    return FaceIndex(built_index).size


def search(client: TestClient, selfie: bytes, **params: object) -> httpx.Response:
    return client.post("/api/search", files={"selfie": ("me.jpg", selfie, "image/jpeg")},
                       params=params)


def test_a_threshold_below_the_floor_is_raised_to_it_and_said(
        client: TestClient, yao: bytes, engine: FaceEngine, size: int) -> None:
    calibration = engine.calibration
    floor = calibration.min_threshold(size)
    response = search(client, yao, threshold=0.0001, top=1000)
    assert response.status_code == 200
    result = response.json()
    assert result["threshold"] == result["min_threshold"] == floor > 0.0001
    assert result["threshold_requested"] == 0.0001 and result["threshold_clamped"] is True
    assert result["expected_false_matches"] <= 1.0
    assert 0 < len(result["matches"]) <= MAX_RESULTS
    assert all(m["score"] > floor for m in result["matches"])
    for match in result["matches"]:
        assert match["meaning"] == MEANING[match["strength"]]
    above = search(client, yao, threshold=0.5).json()
    assert above["threshold"] == above["threshold_requested"] == 0.5
    assert above["threshold_clamped"] is False
    default = search(client, yao).json()
    assert default["threshold_requested"] is None and default["threshold_clamped"] is False
    assert default["threshold"] == default["default_threshold"] == (
        calibration.operating_threshold(size))
    info = client.get("/api/info").json()
    assert info["min_threshold"] == floor and info["max_results"] == MAX_RESULTS == 50


def test_the_floor_follows_the_bound_and_the_index_size(
        settings: ServiceSettings, engine: FaceEngine, yao: bytes, size: int) -> None:
    # At most 1e-7 strangers per search in this 41-face index asks the same false-match rate
    # as at most 1 in an index of 410 million faces.
    strict = settings.model_copy(update={"max_expected_strangers": 1e-7})
    calibration = engine.calibration
    floor = calibration.min_threshold(size, 1e-7)
    assert floor == calibration.min_threshold(size * 10**7) > calibration.min_threshold(size)
    with TestClient(create_app(strict, engine=engine)) as strict_client:
        info = strict_client.get("/api/info").json()
        assert info["min_threshold"] == floor and info["default_threshold"] >= floor
        result = search(strict_client, yao, threshold=0.0001).json()
    assert result["threshold"] == floor and result["threshold_clamped"] is True
    assert (calibration.expected_false_matches(floor, size) or 0) <= 1e-7
    assert 0 < len(result["matches"]) <= YAO_PHOTOS
    assert all(m["score"] > floor for m in result["matches"])


def test_the_default_threshold_keeps_to_the_target(settings: ServiceSettings,
                                                   engine: FaceEngine, yao: bytes,
                                                   size: int) -> None:
    targeted = settings.model_copy(update={"target_expected_strangers": 1e-6})
    calibration = engine.calibration
    expected = calibration.operating_threshold(size, 1e-6)
    assert expected > calibration.threshold
    with TestClient(create_app(targeted, engine=engine)) as targeted_client:
        assert targeted_client.get("/api/info").json()["default_threshold"] == expected
        result = search(targeted_client, yao).json()
    assert result["threshold"] == expected and result["threshold_clamped"] is False
    assert (calibration.expected_false_matches(expected, size) or 0) <= 1e-6


def test_results_per_search_are_capped(settings: ServiceSettings, engine: FaceEngine,
                                       yao: bytes) -> None:
    capped = settings.model_copy(update={"max_results": 2})
    with TestClient(create_app(capped, engine=engine)) as capped_client:
        assert capped_client.get("/api/info").json()["max_results"] == 2
        assert len(search(capped_client, yao, top=1000).json()["matches"]) == 2


def test_an_uncalibrated_pack_has_a_fixed_floor(client: TestClient, engine: FaceEngine,
                                                yao: bytes,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "calibration", Calibration(
        pack="buffalo_s", recognizer_sha256=None, threshold=UNCALIBRATED_THRESHOLD, fmr=[],
        impostor_comparisons=0, source="uncalibrated"))
    result = search(client, yao, threshold=0.1).json()
    assert result["threshold"] == result["min_threshold"] == UNCALIBRATED_THRESHOLD
    assert result["threshold_clamped"] is True and result["expected_false_matches"] is None


runner = CliRunner()


def cli_search(built_index: Path, selfie: Path, *options: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["search", str(selfie), "--index", str(built_index),
                                 "--device", "cpu", "--json", *options])
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_refuses_what_the_api_never_runs(built_index: Path, engine: FaceEngine,
                                                 collection: tuple[Path, Path],
                                                 size: int) -> None:
    selfie = collection[1] / "yaoming.jpg"
    floor = engine.calibration.min_threshold(size)
    code, _, err = cli_search(built_index, selfie, "--threshold", "0.0001")
    assert code == 2 and "below this index's floor" in err and f"at least {floor:g}" in err
    code, _, err = cli_search(built_index, selfie, "--top", "1000")
    assert code == 2 and f"over the {MAX_RESULTS} photos" in err
    code, _, err = cli_search(built_index, selfie, "--threshold", "1.5", "--allow-low-threshold")
    assert code == 2 and "(0, 1]" in err  # not a similarity at all: refused even so

    code, out, _ = cli_search(built_index, selfie)
    result = json.loads(out)
    assert code == 0 and result["threshold"] == engine.calibration.operating_threshold(size)
    assert len(result["matches"]) == YAO_PHOTOS


def test_a_researcher_may_go_lower_with_the_flag(built_index: Path,
                                                 collection: tuple[Path, Path]) -> None:
    code, out, _ = cli_search(built_index, collection[1] / "yaoming.jpg", "--threshold",
                              "0.0001", "--top", "1000", "--allow-low-threshold")
    assert code == 0
    result = json.loads(out)
    assert result["threshold"] == 0.0001 and result["threshold_clamped"] is False
    assert len(result["matches"]) > YAO_PHOTOS  # strangers: what the flag's help warns of
    assert result["expected_false_matches"] > 1
    help_text = runner.invoke(cli, ["search", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--allow-low-threshold" in help_text and "strangers" in help_text
