"""Calibration: false-match rates, expected false matches, strength, choosing the threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceaudit.models.calibration import (
    Calibration,
    calibration_from_eval,
    load_calibration,
)
from faceaudit.models.packs import buffalo_s, pack_from_folder

CURVE = Calibration(pack="p", recognizer_sha256="abc", threshold=0.3,
                    fmr=[(0.2, 1e-2), (0.3, 1e-4), (0.4, 0.0)], impostor_comparisons=1_000_000,
                    source="test")


def test_false_match_rate_interpolates_on_a_log_scale() -> None:
    assert CURVE.false_match_rate(0.1) == pytest.approx(1e-2)
    assert CURVE.false_match_rate(0.2) == pytest.approx(1e-2)
    assert CURVE.false_match_rate(0.25) == pytest.approx(1e-3)
    # no false match measured at 0.4: bounded by one in the million comparisons, never zero
    assert CURVE.false_match_rate(0.4) == pytest.approx(1e-6)
    assert CURVE.false_match_rate(0.35) == pytest.approx(1e-5)
    assert CURVE.false_match_rate(0.9) == pytest.approx(1e-6)


def test_expected_false_matches_and_strength_depend_on_index_size() -> None:
    assert CURVE.expected_false_matches(0.3, 10_000) == pytest.approx(1.0)
    assert CURVE.strength(0.45, 1_000) == "strong"  # 1e-6 * 1,000 = 0.001 strangers
    assert CURVE.strength(0.45, 1_000_000) == "possible"  # 1 stranger expected that high
    assert CURVE.strength(0.31, 10) == "strong"
    guide = CURVE.guide(10_000, [0.2, 0.3])
    assert guide == [{"threshold": 0.2, "expected_false_matches": 100.0},
                     {"threshold": 0.3, "expected_false_matches": 1.0}]


def test_round_trip_and_uncalibrated_packs(tmp_path: Path) -> None:
    path = tmp_path / "faceaudit-calibration.json"
    path.write_text(CURVE.to_json())
    assert Calibration.from_file(path) == CURVE
    for name in ("det_500m.onnx", "w600k_mbf.onnx"):
        (tmp_path / name).write_bytes(b"x")
    pack = pack_from_folder(tmp_path)
    assert load_calibration(pack, "abc") == CURVE
    other = load_calibration(pack, "another recognizer")  # measured on a different file
    assert not other.calibrated and other.expected_false_matches(0.4, 100) is None
    assert other.strength(0.99, 10) == "possible"


def test_bundled_calibration_matches_the_default_pack() -> None:
    pack = buffalo_s()
    calibration = load_calibration(pack, pack.recognizer.sha256)
    assert calibration.calibrated and calibration.recognizer_sha256 == pack.recognizer.sha256
    assert 0.2 < calibration.threshold < 0.6
    thresholds = [t for t, _ in calibration.fmr]
    rates = [r for _, r in calibration.fmr]
    assert thresholds == sorted(thresholds) and rates == sorted(rates, reverse=True)


def test_threshold_is_chosen_for_recall_under_the_fpir_limit() -> None:
    sweep = [
        {"threshold": 0.30, "recall": 0.99, "fnir": 0.0, "fpir": 0.05,
         "false_matches_per_search": 0.3},
        {"threshold": 0.35, "recall": 0.97, "fnir": 0.01, "fpir": 0.01,
         "false_matches_per_search": 0.02},
        {"threshold": 0.40, "recall": 0.95, "fnir": 0.02, "fpir": 0.005,
         "false_matches_per_search": 0.01},
    ]
    result = {"images": 10, "search": {"sweep": sweep},
              "impostor": {"comparisons": 100, "fmr": [{"threshold": 0.3, "fmr": 0.01}]},
              "verification": {"accuracy": 0.99}}
    calibration = calibration_from_eval(result, buffalo_s(), "abc", "unit test")
    assert calibration.threshold == 0.35
    assert calibration.measured["recall"] == 0.97 and calibration.fmr == [(0.3, 0.01)]
    with pytest.raises(ValueError, match="FPIR"):
        calibration_from_eval(result, buffalo_s(), "abc", "unit test", max_fpir=0.001)
