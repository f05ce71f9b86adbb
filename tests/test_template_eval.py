"""The eval's ``templates`` section on a seeded synthetic dataset: every template curve fitted
and checked on held-out people, recall for each index size and number of selfies, with and
without expansion, at thresholds that never fall as the template grows."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest

from faceaudit.models.calibration import Calibration, calibration_from_eval
from faceaudit.models.thresholds import MAX_TEMPLATE_FACES
from faceaudit.research.eval_report import _templates
from faceaudit.research.evaluation.protocol import _clean
from faceaudit.research.evaluation.template_fits import counts_above, fit, measured_curve
from faceaudit.research.evaluation.template_report import RECALL_SELFIES, SIZES, table_report
from faceaudit.research.evaluation.templates import FaceTable, unit

PEOPLE, PHOTOS, DIMENSION = 160, 8, 48


def synthetic_table(seed: int = 7) -> FaceTable:
    """PEOPLE people with PHOTOS photos each; every fourth photo also shows a stranger (a
    background face, labelled photos keep their person's face first)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(PEOPLE, DIMENSION)))
    plain, selfie, photo, labelled, identity = [], [], [], [], []
    for person in range(PEOPLE):
        for n in range(PHOTOS):
            number = len(identity)
            face = unit(centres[person] + rng.normal(scale=0.16, size=DIMENSION))
            faces = [face] + ([unit(rng.normal(size=DIMENSION))] if n % 4 == 3 else [])
            for row, vector in enumerate(faces):
                plain.append(vector)
                selfie.append(unit(vector + rng.normal(scale=0.02, size=DIMENSION)))
                photo.append(number)
                labelled.append(row == 0)
            identity.append(person)
    return FaceTable(np.array(plain, np.float32), np.array(selfie, np.float32),
                     np.array(photo, np.int64), np.array(labelled), np.array(identity, np.int64),
                     PEOPLE)


def one_photo_calibration(table: FaceTable) -> Calibration:
    rows = table.labelled_row
    vectors, owner = table.plain[rows], table.photo_identity
    scores = vectors @ vectors.T
    upper = np.triu(np.ones(scores.shape, bool), 1) & (owner[:, None] != owner[None, :])
    values = scores[upper]
    return Calibration(pack="synthetic", recognizer_sha256=None, threshold=0.3,
                       fmr=measured_curve(values), impostor_comparisons=len(values),
                       source="test", tail=fit(values))


@pytest.fixture(scope="module")
def section() -> dict[str, Any]:
    table = synthetic_table()
    report = table_report(table, one_photo_calibration(table), "test", splits=1)
    data: dict[str, Any] = json.loads(json.dumps(_clean(asdict(report)), allow_nan=False))
    return data


def test_every_template_curve_is_fitted_with_its_counts_and_check(section: dict[str, Any]
                                                                  ) -> None:
    assert section["not_fitted"] == []
    kinds = [(c["kind"], c["faces"]) for c in section["tails"]]
    assert kinds == [("selfies", k) for k in range(1, 6)] + [("confirmed", n)
                                                             for n in range(2, 6)]
    for curve in section["tails"]:
        assert curve["templates"] > 0 and curve["people"] > 0
        assert curve["validation"]["fits"] == 2 and curve["validation"]["raised_by"] >= 1
        counts = curve["counts"]
        assert {"threshold", "measured", "modelled"} <= set(counts[0])
        measured = [c["measured"] for c in counts]
        assert measured == sorted(measured, reverse=True)
        # inside the window the curve is the measured one on the calibration sweep's points
        on_sweep = [c for c in counts if c["threshold"] < curve["tail"]["fit_to"]
                    and abs(c["threshold"] * 40 - round(c["threshold"] * 40)) < 1e-6]
        assert on_sweep and all(c["modelled"] == pytest.approx(c["measured"], rel=1e-3)
                                for c in on_sweep)
        end = next(c for c in counts if c["threshold"] == curve["tail"]["fit_to"])
        assert end["modelled"] >= end["measured"] * (1 - 1e-3)  # raised, never lowered
    assert 0 < section["same_person"]["level"] < 1


def test_recall_rows_cover_every_size_and_selfie_count(section: dict[str, Any]) -> None:
    rows = section["recall"]
    assert [(r["faces"], r["selfies"]) for r in rows] == [(n, k) for k in RECALL_SELFIES
                                                          for n in SIZES]
    for size in SIZES:
        defaults = [r["default"] for r in rows if r["faces"] == size]
        assert defaults == sorted(defaults)
    for row in rows:
        assert 0 <= row["recall"] <= 1 and row["people"] > 0
        grown = row["expanded"]
        assert {"join_above", "grew", "joined_mean", "recall", "recall_6_40",
                "joined_labelled_strangers", "default_max"} <= set(grown)
        assert grown["join_above"] >= row["default"]
        assert grown["default_max"] >= row["default"]
        if row["selfies"] == MAX_TEMPLATE_FACES:  # a full template has no room to grow
            assert grown["grew"] == 0 and grown["recall"] == row["recall"]
    by = {(r["faces"], r["selfies"]): r["recall"] for r in rows}
    assert by[(10**6, 3)] > by[(10**6, 1)]  # several selfies find more at equal risk


def test_the_section_becomes_the_calibration_files_templates(section: dict[str, Any]) -> None:
    table = synthetic_table()
    base = one_photo_calibration(table)
    result = {"images": 1, "impostor": {"fmr": [{"threshold": t, "fmr": r} for t, r in base.fmr],
                                        "comparisons": base.impostor_comparisons},
              "search": {"sweep": [{"threshold": 0.3, "recall": 1.0, "fnir": 0.0, "fpir": 0.0,
                                    "false_matches_per_search": 0.0}]},
              "templates": section}
    calibration = calibration_from_eval(result, "synthetic", None, "test")
    assert calibration.templates is not None
    assert calibration.same_person_threshold == section["same_person"]["level"]
    assert len(calibration.templates.tails) == 9
    counts = counts_above(np.array([0.1, 0.2, 0.2, 0.5]), np.array([0.0, 0.2, 0.6]))
    assert counts.tolist() == [4, 1, 0]
    assert "same-person level" in "\n".join(_templates(section))
