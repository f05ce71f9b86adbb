"""Calibration of templates (several faces fused into one query): curves fitted on seeded
synthetic impostor scores err toward more strangers than the true law gives, thresholds never
fall as a template grows, a pack without template curves stays strict, and `faceaudit
thresholds` says what the shipped calibration file's own numbers give (recomputed by
tests/expected_strangers.py, not by the code under test)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.models.calibration import Calibration
from faceaudit.models.calibration_files import load_calibration
from faceaudit.models.packs import pack_from_folder
from faceaudit.models.template_tails import TemplateCalibration, TemplateTail
from faceaudit.models.thresholds import MAX_TEMPLATE_FACES, UNCALIBRATED_THRESHOLD
from faceaudit.research.evaluation.template_fits import correction, template_tail
from faceaudit.research.evaluation.templates import Impostors
from tests import expected_strangers as expected

SIZES = (10**4, 10**6, 10**8)
# Impostor scores of each synthetic template kind: Gaussian, of this spread. Selfies of 4 are
# deliberately lighter than selfies of 3, and confirmed pairs lighter than selfie pairs: the
# order a finite sample can come out in, which the thresholds must not follow.
SPREAD = {("selfies", 1): 0.080, ("selfies", 2): 0.084, ("selfies", 3): 0.089,
          ("selfies", 4): 0.085, ("selfies", 5): 0.092, ("confirmed", 2): 0.082,
          ("confirmed", 3): 0.091, ("confirmed", 4): 0.093, ("confirmed", 5): 0.095}
PEOPLE = 200


def true_rate(spread: float, t: float) -> float:
    """P(score > t) of a centred Gaussian: the law the synthetic scores are drawn from."""
    return 0.5 * math.erfc(t / (spread * math.sqrt(2)))


def synthetic(spread: float, seed: int, rows: int = 400, columns: int = 5000) -> Impostors:
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, spread, (rows, columns)).astype(np.float32)
    row_person = rng.integers(0, PEOPLE, rows)
    column_person = rng.integers(0, PEOPLE, columns)
    scores[row_person[:, None] == column_person[None, :]] = np.nan
    return Impostors(scores, row_person, column_person)


@pytest.fixture(scope="module")
def curves() -> dict[tuple[str, int], TemplateTail]:
    return {kind: template_tail(kind[0], kind[1], synthetic(spread, seed), PEOPLE, splits=2)
            for seed, (kind, spread) in enumerate(SPREAD.items(), start=1)}


@pytest.fixture(scope="module")
def calibration(curves: dict[tuple[str, int], TemplateTail]) -> Calibration:
    one = curves[("selfies", 1)]  # the one-photo curve: the same law as one selfie's
    return Calibration(pack="synthetic", recognizer_sha256=None, threshold=0.2, fmr=one.fmr,
                       impostor_comparisons=one.impostor_comparisons, source="test",
                       tail=one.tail, templates=TemplateCalibration(
                           same_person_threshold=0.25, tails=list(curves.values())))


def test_fitted_template_curves_err_toward_more_strangers(
        curves: dict[tuple[str, int], TemplateTail], calibration: Calibration) -> None:
    for (kind, faces), curve in curves.items():
        assert curve.tail is not None
        beyond = np.arange(curve.tail.fit_to + 0.025, curve.tail.fit_to + 0.15, 0.01)
        for t in beyond:
            assert curve.false_match_rate(float(t)) >= true_rate(SPREAD[(kind, faces)], t), \
                (kind, faces, t)
    for faces in range(1, MAX_TEMPLATE_FACES + 1):
        template = calibration.for_template(faces)
        for size in SIZES:  # at the default, at most 0.1 strangers under the true law
            default = template.operating_threshold(size)
            assert size * true_rate(SPREAD[("selfies", faces)], default) <= 0.1, (faces, size)


def test_template_thresholds_never_fall_as_the_template_grows(
        curves: dict[tuple[str, int], TemplateTail], calibration: Calibration) -> None:
    file = json.loads(calibration.to_json())
    for size in SIZES:
        defaults = [calibration.for_template(k).operating_threshold(size)
                    for k in range(1, MAX_TEMPLATE_FACES + 1)]
        assert defaults == sorted(defaults), (size, defaults)
        assert defaults == [expected.template_default(file, size, k)
                            for k in range(1, MAX_TEMPLATE_FACES + 1)]
        strong = [calibration.for_template(k).threshold_for(size, 0.01) for k in range(1, 6)]
        assert strong == sorted(strong)
    # the envelope is what keeps the order: selfies of 4 alone would need less than 3
    own = {k: replace(calibration, fmr=curves[("selfies", k)].fmr,
                      tail=curves[("selfies", k)].tail) for k in (3, 4)}
    assert own[4].operating_threshold(10**8) < own[3].operating_threshold(10**8)
    assert calibration.for_template(4).operating_threshold(10**8) >= \
        calibration.for_template(3).operating_threshold(10**8)
    for t in np.arange(0.2, 0.7, 0.01):
        for k in range(1, 6):
            assert calibration.for_template(k).false_match_rate(float(t)) == pytest.approx(
                expected.template_rate(file, float(t), k), rel=1e-9)


def test_confirmed_faces_never_lower_the_threshold_of_a_template_of_that_size(
        calibration: Calibration) -> None:
    file = json.loads(calibration.to_json())
    for selfies in range(1, MAX_TEMPLATE_FACES):
        for confirmed in range(1, MAX_TEMPLATE_FACES - selfies + 1):
            mixed = calibration.for_template(selfies, confirmed)
            alone = calibration.for_template(selfies + confirmed)
            for size in SIZES:
                assert mixed.operating_threshold(size) >= alone.operating_threshold(size)
                assert mixed.operating_threshold(size) == expected.template_default(
                    file, size, selfies, confirmed)
    # confirmed pairs were sampled lighter than selfie pairs: the selfies' curve holds
    assert calibration.for_template(1, 1).operating_threshold(10**8) == \
        calibration.for_template(2).operating_threshold(10**8)


def test_one_selfie_is_the_one_photo_calibration_and_sizes_are_checked(
        calibration: Calibration) -> None:
    assert calibration.for_template(1, 0) == calibration
    assert calibration.for_template(1) == calibration
    for selfies, confirmed in ((0, 1), (0, 0), (3, 3), (6, 0), (2, -1)):
        with pytest.raises(ValueError, match="a template holds"):
            calibration.for_template(selfies, confirmed)
    assert calibration.same_person_threshold == 0.25


def test_a_curve_short_on_held_out_people_is_raised() -> None:
    tail = template_tail("selfies", 1, synthetic(0.08, 1), PEOPLE, splits=1).tail
    assert tail is not None
    beyond, inside = tail.fit_to + 0.05, tail.fit_to - 0.01
    check = {"predicted_vs_measured_pairs": [[inside, 100.0, 400], [beyond, 40.0, 100],
                                             [beyond + 0.025, 5.0, 19]]}
    assert correction(tail, check) == 2.5  # inside the window and under 20 pairs: not counted
    check["predicted_vs_measured_pairs"][1][2] = 30
    assert correction(tail, check) == 1.0


def test_round_trip_keeps_the_templates_and_drops_what_for_template_derives(
        calibration: Calibration, tmp_path: Path) -> None:
    path = tmp_path / "faceaudit-calibration.json"
    path.write_text(calibration.to_json())
    assert Calibration.from_file(path) == calibration
    path.write_text(calibration.for_template(3, 1).to_json())
    assert Calibration.from_file(path) == calibration
    assert "bounds" not in json.loads(path.read_text())


def uncalibrated(tmp_path: Path) -> Calibration:
    for name in ("det_500m.onnx", "w600k_mbf.onnx"):
        (tmp_path / name).write_bytes(b"x")
    return load_calibration(pack_from_folder(tmp_path), "abc")


def test_an_uncalibrated_pack_stays_strict_for_templates(tmp_path: Path) -> None:
    base = uncalibrated(tmp_path)
    assert not base.calibrated
    for selfies, confirmed in ((1, 0), (2, 0), (3, 2), (5, 0)):
        template = base.for_template(selfies, confirmed)
        for size in SIZES:
            assert template.operating_threshold(size) >= UNCALIBRATED_THRESHOLD
            assert template.min_threshold(size) >= UNCALIBRATED_THRESHOLD
            assert template.min_threshold(size) >= base.min_threshold(size)
            assert template.expected_false_matches(0.9, size) is None
        assert template.strength(0.99, 10) == "possible"
    assert base.for_template(3).operating_threshold(10) > UNCALIBRATED_THRESHOLD
    shipped_level = expected.shipped()["templates"]["same_person_threshold"]
    assert base.same_person_threshold >= shipped_level


def test_a_calibrated_pack_without_template_curves_is_stricter_for_templates() -> None:
    file = expected.shipped()
    base = Calibration.from_file(expected.SHIPPED)
    bare = replace(base, templates=None)
    for size in SIZES:
        single = expected.default_threshold(file, size)
        assert bare.for_template(1).operating_threshold(size) == single
        assert bare.for_template(3).operating_threshold(size) > single
        assert bare.for_template(2, 1).operating_threshold(size) >= \
            base.for_template(2, 1).operating_threshold(size)


def thresholds_json(*flags: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["thresholds", *flags, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize(("selfies", "confirmed"), [(1, 0), (2, 0), (3, 0), (5, 0), (2, 1),
                                                    (1, 4)])
def test_thresholds_json_gives_what_the_calibration_file_says(selfies: int,
                                                              confirmed: int) -> None:
    file = expected.shipped()
    for size in SIZES:
        got = thresholds_json("--faces", str(size), "--selfies", str(selfies),
                              "--confirmed", str(confirmed))
        assert set(got) == {"default", "floor", "strong", "expected_strangers"}
        default = expected.template_default(file, size, selfies, confirmed)
        assert got["default"] == default
        assert got["floor"] == expected.template_lowest(file, size, 1.0, selfies, confirmed)
        assert got["strong"] == expected.template_lowest(file, size, 0.01, selfies, confirmed)
        assert got["expected_strangers"] == expected.rounded(
            size * expected.template_rate(file, default, selfies, confirmed))
        assert got["expected_strangers"] <= 0.1


def test_thresholds_grow_with_selfies_in_the_shipped_calibration() -> None:
    for size in SIZES:
        defaults = [thresholds_json("--faces", str(size), "--selfies", str(k))["default"]
                    for k in range(1, MAX_TEMPLATE_FACES + 1)]
        assert defaults == sorted(defaults) and defaults[-1] > defaults[0]
    assert thresholds_json("--faces", "1000000") == thresholds_json(
        "--faces", "1000000", "--selfies", "1", "--confirmed", "0")


def test_the_shipped_templates_section_records_how_it_was_fitted() -> None:
    section = expected.shipped()["templates"]
    kinds = {(c["kind"], c["faces"]) for c in section["tails"]}
    assert kinds == {("selfies", k) for k in range(1, 6)} | {("confirmed", n) for n in
                                                               range(2, 6)}
    for curve in section["tails"]:
        pairs = curve["validation"]["predicted_vs_measured_pairs"]
        assert curve["validation"]["fits"] >= 10 and curve["impostor_comparisons"] > 10**6
        beyond = [(p, m) for t, p, m in pairs if t > curve["tail"]["fit_to"]]
        assert beyond and all(p >= m for p, m in beyond), (curve["kind"], curve["faces"])
    assert 0.15 < section["same_person_threshold"] < 0.35
    assert section["same_person"]["pair_fmr"] == 0.001


@pytest.mark.parametrize(("flags", "named"), [
    (["--faces", "0"], "--faces"),
    (["--faces", "1000", "--selfies", "0"], "--selfies"),
    (["--faces", "1000", "--selfies", "6"], "--selfies"),
    (["--faces", "1000", "--selfies", "2", "--confirmed", "4"], "--confirmed"),
    (["--faces", "1000", "--confirmed", "-1"], "--confirmed"),
])
def test_thresholds_refuses_bad_input_in_one_line(flags: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["thresholds", *flags, "--json"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named} "), result.stderr


def test_thresholds_prints_a_short_table() -> None:
    result = CliRunner().invoke(app, ["thresholds", "--faces", "1000000", "--selfies", "3"])
    assert result.exit_code == 0, result.output
    got = thresholds_json("--faces", "1000000", "--selfies", "3")
    assert f"default threshold{' ' * 30}{got['default']}" in result.stdout
    assert "3 selfies" in result.stdout and "1,000,000 faces" in result.stdout


def test_template_tails_serialise_as_the_file_stores_them(
        curves: dict[tuple[str, int], TemplateTail]) -> None:
    curve = curves[("selfies", 2)]
    assert TemplateTail.from_dict(json.loads(json.dumps(asdict(curve)))) == curve
