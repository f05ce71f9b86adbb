"""Calibration: false-match rates, expected false matches, strength, choosing the threshold,
the fitted impostor tail and the threshold that holds at any index size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from faceaudit.models.calibration import Calibration, calibration_from_eval
from faceaudit.models.calibration_files import load_calibration
from faceaudit.models.impostor_tail import ImpostorTail, fit_tail, tail_from_eval
from faceaudit.models.packs import buffalo_s, pack_from_folder
from faceaudit.models.thresholds import MEANING, UNCALIBRATED_THRESHOLD
from faceaudit.research.evaluation.impostors import TAIL_GRID
from tests import expected_strangers as expected

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


# --- the fitted tail --------------------------------------------------------------------------

def counts_above(scores: NDArray[np.float64]) -> list[int]:
    """What `faceaudit eval` exports: impostor pairs scoring above each TAIL_GRID threshold."""
    ordered = np.sort(scores)
    return (len(ordered) - np.searchsorted(ordered, TAIL_GRID, side="right")).tolist()


def test_tail_fit_recovers_a_known_exponential_tail() -> None:
    # Laplace scores: P(score > t) = exp(-t / 0.025) / 2 for t > 0, known down to any rate.
    scores = np.random.default_rng(7).laplace(0.0, 0.025, 2_000_000)
    tail = fit_tail(TAIL_GRID.tolist(), counts_above(scores), len(scores))
    assert tail.shape == 0.0 and tail.scale == pytest.approx(0.025, rel=0.05)
    assert tail.deviance < 3 * tail.bins and tail.likelihood_ratio is not None
    # 5e-4 measured in the window; four decades beyond it, within a factor 1.5.
    true_rate = 0.5 * math.exp(-0.5 / 0.025)  # 1e-9
    assert tail.false_match_rate(0.5) == pytest.approx(true_rate, rel=0.5)


def test_free_shape_fit_recovers_a_generalised_pareto_tail() -> None:
    shape, scale = 0.2, 0.02
    uniform = np.random.default_rng(11).uniform(size=2_000_000)
    scores = scale * (uniform ** -shape - 1) / shape  # P(X > x) = (1 + 0.2 x / 0.02) ** -5
    tail = fit_tail(TAIL_GRID.tolist(), counts_above(scores), len(scores), shape=None,
                    quantile=1e-2)
    assert tail.shape == pytest.approx(shape, abs=0.05)
    # over a threshold u, the excesses keep the shape with scale + shape * u
    assert tail.scale == pytest.approx(scale + shape * tail.fit_from, rel=0.1)


def test_an_exponential_tail_errs_towards_more_strangers_on_a_lighter_tail() -> None:
    scores = np.random.default_rng(3).normal(0.0, 0.07, 2_000_000)
    tail = fit_tail(TAIL_GRID.tolist(), counts_above(scores), len(scores))
    for t in (0.4, 0.5, 0.6):  # beyond the window (ending near 0.27)
        true_rate = 0.5 * math.erfc(t / 0.07 / math.sqrt(2))
        assert tail.false_match_rate(t) >= true_rate


def test_too_few_comparisons_give_no_tail() -> None:
    scores = np.random.default_rng(0).normal(0.0, 0.07, 10_000)
    with pytest.raises(ValueError, match="too few impostor comparisons"):
        fit_tail(TAIL_GRID.tolist(), counts_above(scores), len(scores))
    rows = [{"threshold": t, "count": n} for t, n in zip(TAIL_GRID, counts_above(scores),
                                                          strict=True)]
    assert tail_from_eval({"comparisons": len(scores), "counts_above": rows}) is None
    assert tail_from_eval({"comparisons": 10, "fmr": []}) is None  # an eval from before tails


TAILED = Calibration(pack="p", recognizer_sha256="abc", threshold=0.3,
                     fmr=[(0.1, 0.1), (0.2, 1e-3), (0.3, 1e-5), (0.4, 1e-6), (0.5, 1e-6)],
                     impostor_comparisons=10_000_000, source="test",
                     tail=ImpostorTail(fit_from=0.2, fit_to=0.3, rate_at_fit_to=1e-5, shape=0.0,
                                       scale=0.025, pairs_in_fit=1000, deviance=10.0, bins=20))


def test_the_tail_takes_over_beyond_the_window_without_a_jump() -> None:
    assert TAILED.false_match_rate(0.25) == pytest.approx(1e-4)  # measured
    assert TAILED.false_match_rate(0.3) == pytest.approx(1e-5)
    assert TAILED.false_match_rate(0.3 + 1e-9) == pytest.approx(1e-5)
    # the label-noise plateau at 1e-6 measured above 0.4 is not used: the tail goes on
    assert TAILED.false_match_rate(0.5) == pytest.approx(1e-5 * math.exp(-0.2 / 0.025))
    assert TAILED.strength(0.9, 10**8) == "strong"
    assert TAILED.strength(0.45, 10**8) == "possible"


def test_round_trip_with_a_tail_and_old_files_load(tmp_path: Path) -> None:
    path = tmp_path / "with-tail.json"
    path.write_text(TAILED.to_json())
    assert Calibration.from_file(path) == TAILED
    old = json.loads(CURVE.to_json())
    del old["tail"]  # written before tails existed
    path.write_text(json.dumps(old))
    loaded = Calibration.from_file(path)
    assert loaded == CURVE and loaded.tail is None
    assert loaded.false_match_rate(0.9) == pytest.approx(1e-6)  # the old floor


def test_operating_and_minimum_thresholds() -> None:
    # the recall-optimal threshold while the index is small...
    assert TAILED.operating_threshold(100) == 0.3
    # ...then the lowest at which 0.1 strangers per search are expected, as recomputed from
    # its numbers (tests/expected_strangers.py)
    curve = json.loads(TAILED.to_json())
    big = TAILED.operating_threshold(10**8)
    assert big > 0.3 and big == expected.default_threshold(curve, 10**8)
    assert expected.strangers(curve, big, 10**8) <= 0.1
    assert expected.strangers(curve, big - 0.001, 10**8) > 0.1  # and no higher than needed
    assert TAILED.min_threshold(10**8) == expected.lowest(curve, 10**8, 1.0) < big
    assert TAILED.min_threshold(10) == 0.1  # never below the first measured point
    uncalibrated = Calibration(pack="p", recognizer_sha256=None,
                               threshold=UNCALIBRATED_THRESHOLD, fmr=[],
                               impostor_comparisons=0, source="uncalibrated")
    for size in (10, 10**8):
        assert uncalibrated.operating_threshold(size) == UNCALIBRATED_THRESHOLD
        assert uncalibrated.min_threshold(size) == UNCALIBRATED_THRESHOLD
    assert MEANING == {"strong": "This is very likely you",
                       "possible": "Possibly you: check the photo"}


# --- the shipped calibration ------------------------------------------------------------------

SIZES = [10**k for k in range(1, 11)]


@pytest.fixture(scope="module")
def shipped() -> Calibration:
    pack = buffalo_s()
    calibration = load_calibration(pack, pack.recognizer.sha256)
    assert calibration.calibrated, "the packaged buffalo_s pack is not calibrated"
    return calibration


def test_shipped_curve_reaches_the_rates_of_a_hundred_million_faces(
        shipped: Calibration) -> None:
    assert shipped.tail is not None and shipped.tail.shape >= 0
    assert shipped.tail.deviance < 3 * shipped.tail.bins  # the fit matches its window
    below = [t for t in np.arange(0.1, 1.0, 0.005) if (shipped.false_match_rate(t) or 1) <= 1e-9]
    assert below and below[0] < 0.7
    rates = [shipped.false_match_rate(float(t)) or 0.0 for t in np.arange(0.1, 1.0, 0.001)]
    assert all(b <= a for a, b in zip(rates, rates[1:], strict=False))  # never rises


def test_shipped_operating_threshold_holds_at_any_index_size(shipped: Calibration) -> None:
    # Checked against the file's own numbers, recomputed by tests/expected_strangers.py.
    curve = expected.shipped()
    thresholds = [shipped.operating_threshold(size) for size in SIZES]
    assert thresholds == [expected.default_threshold(curve, size) for size in SIZES]
    assert thresholds == sorted(thresholds) and thresholds[0] == curve["threshold"] == 0.375
    for size, threshold in zip(SIZES, thresholds, strict=True):
        assert expected.strangers(curve, threshold, size) <= 0.1
        assert shipped.expected_false_matches(threshold, size) == pytest.approx(
            expected.strangers(curve, threshold, size), rel=1e-9)
        floor = shipped.min_threshold(size)
        assert floor == expected.lowest(curve, size, 1.0) <= threshold
        assert expected.strangers(curve, floor, size) <= 1
    # The README's table: 10^4, 10^6 and 10^8 faces.
    assert (thresholds[3], thresholds[5], thresholds[7]) == (0.375, 0.455, 0.569)
    assert thresholds[-1] < 1  # even 10^10 faces leave room for strong matches
    assert shipped.strength(0.9, 10**8) == "strong"
    assert shipped.strength(shipped.operating_threshold(10**8) + 0.01, 10**8) == "possible"
