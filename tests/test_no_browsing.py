"""No stranger at any threshold: over HTTP no search runs below the index's default threshold,
where at most 0.1 faces of other people are expected per search at its size, and results per
search are capped; on the command line a researcher may go lower with a flag.

Expected thresholds and strangers are recomputed from the calibration file's own numbers
(tests/expected_strangers.py), or counted on the demo gallery, never asked of the code under
test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.calibration import Calibration
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import buffalo_s
from faceaudit.models.thresholds import MAX_RESULTS, MEANING
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings
from tests import expected_strangers as expected
from tests.photos import photos_of

YAO_PHOTOS = {"team/players.jpg", "street/group_with_yao_behind.jpg",
              "portraits/yao_flipped.jpg", "portraits/yao_bright_small.jpg"}
SHIPPED = expected.shipped()


@pytest.fixture(scope="module")
def settings(built_index: Path) -> ServiceSettings:
    """One pass per search: these tests check a one-selfie search's own thresholds and
    scores (automatic expansion, and the floor with it: tests/test_expansion.py)."""
    return ServiceSettings(index=built_index, device="cpu", rate_limit=None, daily_limit=None,
                           expand=False)


@pytest.fixture(scope="module")
def size(built_index: Path) -> int:
    return FaceIndex(built_index).size


def search(client: TestClient, selfie: bytes, **params: float) -> httpx.Response:
    return client.post("/api/search", files={"selfie": ("me.jpg", selfie, "image/jpeg")},
                       params=params)


def test_the_packaged_pack_is_calibrated(client: TestClient, engine: FaceEngine) -> None:
    # The shipped file was measured on this very recognizer file, so the service uses it (an
    # uncalibrated stand-in would make every figure below null and the bounds vacuous).
    recognizer = buffalo_s().recognizer.path
    assert SHIPPED["recognizer_sha256"] == hashlib.sha256(recognizer.read_bytes()).hexdigest()
    assert engine.pack.name == "buffalo_s"
    info = client.get("/api/info").json()
    assert info["calibrated"] is True
    assert all(p["expected_false_matches"] is not None for p in info["threshold_guide"])


def test_no_threshold_below_the_default_and_the_response_says_so(
        client: TestClient, yao: bytes, built_index: Path, size: int) -> None:
    default = expected.default_threshold(SHIPPED, size)
    assert expected.strangers(SHIPPED, default, size) <= 0.1
    info = client.get("/api/info").json()
    assert info["default_threshold"] == info["min_threshold"] == default
    for asked in (0.0001, 0.2, default - 0.001):
        result = search(client, yao, threshold=asked, top=1000).json()
        assert result["threshold"] == result["min_threshold"] == default, asked
        assert result["threshold_requested"] == asked and result["threshold_clamped"] is True
        assert result["expected_false_matches"] == expected.rounded(
            expected.strangers(SHIPPED, default, size))
        assert set(photos_of(result["matches"], built_index)) == YAO_PHOTOS  # no stranger
        assert all(m["score"] > default for m in result["matches"])
        for match in result["matches"]:
            assert match["meaning"] == MEANING[match["strength"]]
    above = search(client, yao, threshold=0.5).json()
    assert above["threshold"] == above["threshold_requested"] == 0.5
    assert above["threshold_clamped"] is False and above["min_threshold"] == default
    named_none = search(client, yao).json()
    assert named_none["threshold_requested"] is None and named_none["threshold_clamped"] is False
    assert named_none["threshold"] == named_none["default_threshold"] == default
    assert info["max_results"] == MAX_RESULTS == 50


# Under this hand-made curve the demo gallery's strangers score above the old floor (one
# stranger per search expected: 0.0 here, its first point) and below the default (0.3, its
# recall-optimal threshold): a search clamped to the old floor shows them.
GENEROUS = Calibration(pack="buffalo_s", recognizer_sha256=None, threshold=0.3,
                       fmr=[(0.0, 0.02), (0.1, 0.002), (0.2, 1e-4), (0.4, 1e-6)],
                       impostor_comparisons=10_000_000, source="test")


def test_no_stranger_counted_on_the_gallery_at_any_threshold(
        client: TestClient, yao: bytes, engine: FaceEngine, built_index: Path, size: int,
        monkeypatch: pytest.MonkeyPatch, collection: tuple[Path, Path]) -> None:
    curve = json.loads(GENEROUS.to_json())
    default = expected.default_threshold(curve, size)
    assert default == 0.3 and expected.lowest(curve, size, 1.0) == 0.0
    # What the gallery holds below the default: strangers, as a researcher sees them.
    code, out, _ = cli_search(built_index, collection[1] / "yaoming.jpg", "--threshold",
                              "0.0001", "--top", "1000", "--allow-low-threshold")
    strangers = {m["image"] for m in json.loads(out)["matches"]} - YAO_PHOTOS
    assert code == 0 and strangers, "no stranger in the gallery: the check would prove nothing"

    monkeypatch.setattr(engine, "calibration", GENEROUS)
    for asked in (0.0001, 0.1, 0.29):
        result = search(client, yao, threshold=asked, top=1000).json()
        found = photos_of(result["matches"], built_index)
        assert set(found) - YAO_PHOTOS == set(), f"strangers at {asked}: {found}"
        assert set(found) == YAO_PHOTOS
        assert result["threshold"] == result["min_threshold"] == default


def test_the_default_follows_the_target_and_the_index_size(
        settings: ServiceSettings, engine: FaceEngine, yao: bytes, built_index: Path,
        size: int) -> None:
    # At most 1e-6 strangers per search in this 41-face index: the false-match rate of at most
    # 0.1 in an index of 4.1 million faces.
    default = expected.default_threshold(SHIPPED, size, 1e-6)
    assert default == expected.default_threshold(SHIPPED, size * 10**5) > SHIPPED["threshold"]
    assert expected.strangers(SHIPPED, default, size) <= 1e-6
    assert expected.strangers(SHIPPED, default - 0.001, size) > 1e-6  # and no higher
    strict = settings.model_copy(update={"target_expected_strangers": 1e-6})
    with TestClient(create_app(strict, engine=engine)) as strict_client:
        info = strict_client.get("/api/info").json()
        result = search(strict_client, yao, threshold=0.0001).json()
        named_none = search(strict_client, yao).json()
    assert info["default_threshold"] == info["min_threshold"] == default
    assert result["threshold"] == default and result["threshold_clamped"] is True
    assert named_none["threshold"] == default and named_none["threshold_clamped"] is False
    assert result["expected_false_matches"] == expected.rounded(
        expected.strangers(SHIPPED, default, size))
    found = photos_of(result["matches"], built_index)
    assert found and set(found) <= YAO_PHOTOS
    assert all(m["score"] > default for m in result["matches"])


def test_the_operator_can_raise_the_default_but_not_lower_it(
        settings: ServiceSettings, engine: FaceEngine, yao: bytes, size: int) -> None:
    default = expected.default_threshold(SHIPPED, size)
    for fixed, used in ((0.2, default), (0.6, 0.6)):
        operated = settings.model_copy(update={"threshold": fixed})
        with TestClient(create_app(operated, engine=engine)) as operated_client:
            info = operated_client.get("/api/info").json()
            result = search(operated_client, yao, threshold=0.0001).json()
        assert info["default_threshold"] == info["min_threshold"] == used, fixed
        assert result["threshold"] == used and result["threshold_clamped"] is True
    with pytest.raises(ValidationError, match="target_expected_strangers"):
        ServiceSettings(index=settings.index, target_expected_strangers=1.0)


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
        pack="buffalo_s", recognizer_sha256=None, threshold=0.4, fmr=[],
        impostor_comparisons=0, source="uncalibrated"))
    result = search(client, yao, threshold=0.1).json()
    assert result["threshold"] == result["min_threshold"] == result["default_threshold"] == 0.4
    assert result["threshold_clamped"] is True and result["expected_false_matches"] is None
    assert result["calibrated"] is False


runner = CliRunner()


def cli_search(built_index: Path, selfie: Path, *options: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, ["search", str(selfie), "--index", str(built_index),
                                 "--device", "cpu", "--json", *options])
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_refuses_what_the_api_never_runs(built_index: Path,
                                                 collection: tuple[Path, Path],
                                                 size: int) -> None:
    # The command line's floor is one stranger per search (researchers and operators).
    selfie = collection[1] / "yaoming.jpg"
    floor = expected.lowest(SHIPPED, size, 1.0)
    code, _, err = cli_search(built_index, selfie, "--threshold", "0.0001")
    assert code == 2 and "below this index's floor" in err and f"at least {floor:g}" in err
    code, _, err = cli_search(built_index, selfie, "--top", "1000")
    assert code == 2 and f"over the {MAX_RESULTS} photos" in err
    code, _, err = cli_search(built_index, selfie, "--threshold", "1.5", "--allow-low-threshold")
    assert code == 2 and "(0, 1]" in err  # not a similarity at all: refused even so

    code, out, _ = cli_search(built_index, selfie)
    result = json.loads(out)
    assert code == 0 and result["threshold"] == expected.default_threshold(SHIPPED, size)
    assert {m["image"] for m in result["matches"]} == YAO_PHOTOS


def test_a_researcher_may_go_lower_with_the_flag(built_index: Path,
                                                 collection: tuple[Path, Path],
                                                 size: int) -> None:
    code, out, _ = cli_search(built_index, collection[1] / "yaoming.jpg", "--threshold",
                              "0.0001", "--top", "1000", "--allow-low-threshold")
    assert code == 0
    result = json.loads(out)
    assert result["threshold"] == 0.0001 and result["threshold_clamped"] is False
    assert len(result["matches"]) > len(YAO_PHOTOS)  # strangers: what the flag's help warns of
    assert result["expected_false_matches"] == expected.rounded(
        expected.strangers(SHIPPED, 0.0001, size)) > 1
    help_text = runner.invoke(cli, ["search", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--allow-low-threshold" in help_text and "strangers" in help_text
