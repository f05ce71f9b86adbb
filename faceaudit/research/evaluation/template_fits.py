"""Fitting a template kind's false-match curve, and checking it on held-out people.

The curve is fitted as the one-photo calibration's is: the measured false-match rate on the
calibration sweep, and ``fit_tail`` (the project's window and exponential tail) on the fine
counts beyond. The check (as benchmarks/tail_validation.py does for one photo): halve the
people at random, fit on one half's templates against that half's faces, predict the other
half's impostor pairs above thresholds beyond the window, and pool. Where the pooled
prediction falls short of what was measured (measured at least ``MIN_MEASURED`` times), the
tail is raised by that ratio, so that the curve errs toward more strangers on held-out people.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.models.impostor_tail import ImpostorTail, fit_tail
from faceaudit.models.template_tails import TemplateTail, curve_rate
from faceaudit.research.evaluation.impostors import CALIBRATION_SWEEP, TAIL_GRID
from faceaudit.research.evaluation.templates import Impostors, counts_above

SPLITS = 10
# A held-out threshold corrects the tail only where at least this many pairs were measured
# above it: below that, one pair more or less swings the ratio more than the tail is off.
MIN_MEASURED = 20
# Validation thresholds: from one step below the window's end, in these steps, this many.
VALIDATION_STEP = 0.025
VALIDATION_POINTS = 6


def fit(values: NDArray[np.floating]) -> ImpostorTail:
    """``fit_tail`` on these impostor scores (ValueError when too few)."""
    return fit_tail(TAIL_GRID.tolist(), counts_above(values, TAIL_GRID).tolist(), len(values))


def measured_curve(values: NDArray[np.floating]) -> list[tuple[float, float]]:
    counts = counts_above(values, CALIBRATION_SWEEP)
    return [(float(t), float(n) / len(values)) for t, n in zip(CALIBRATION_SWEEP, counts,
                                                                 strict=True)]


def rate(tail: ImpostorTail, values: NDArray[np.floating], threshold: float) -> float:
    """The calibration's rule: measured up to the window's end, the fitted tail beyond."""
    if threshold <= tail.fit_to:
        return float((values > threshold).mean())
    return tail.false_match_rate(threshold)


def validation_thresholds(tail: ImpostorTail) -> list[float]:
    end = math.ceil(tail.fit_to / VALIDATION_STEP - 1e-9) * VALIDATION_STEP
    return [round(end + step * VALIDATION_STEP, 3) for step in range(-1, VALIDATION_POINTS - 1)]


def held_out(found: Impostors, people: int, thresholds: list[float], splits: int = SPLITS
             ) -> dict[str, Any]:
    """Fits on random halves of the people, each predicting the other half's impostor pairs
    above ``thresholds``, pooled: {"fits", "failed", "predicted_vs_measured_pairs",
    "scale_range"}."""
    predicted = dict.fromkeys(thresholds, 0.0)
    measured = dict.fromkeys(thresholds, 0)
    scales: list[float] = []
    failed = 0
    for split in range(splits):
        half = np.random.default_rng(split).permutation(people) < people // 2
        sides = [(half[found.row_person], half[found.column_person]),
                 (~half[found.row_person], ~half[found.column_person])]
        for (train_rows, train_columns), (test_rows, test_columns) in (sides, sides[::-1]):
            train = found.values(train_rows, train_columns)
            test = found.values(test_rows, test_columns)
            try:
                fitted = fit(train)
            except ValueError:
                failed += 1
                continue
            scales.append(fitted.scale)
            for t in thresholds:
                predicted[t] += rate(fitted, train, t) * len(test)
                measured[t] += int((test > t).sum())
    return {
        "how": f"{splits} random halvings of the people; each half's fit predicts the other "
               "half's impostor pairs, pooled (pred/meas > 1: errs toward more strangers)",
        "fits": 2 * splits - failed, "failed": failed,
        "predicted_vs_measured_pairs": [[t, round(predicted[t], 1), measured[t]]
                                        for t in thresholds],
        "predicted_over_measured": [[t, round(predicted[t] / measured[t], 3) if measured[t]
                                     else None] for t in thresholds],
        "scale_range": [min(scales), max(scales)] if scales else None,
    }


def correction(tail: ImpostorTail, validation: dict[str, Any]) -> float:
    """How much the tail must be raised for every held-out threshold beyond its window,
    measured at least MIN_MEASURED times, to predict at least what was measured (>= 1)."""
    worst = 1.0
    for t, predicted, measured in validation["predicted_vs_measured_pairs"]:
        if t > tail.fit_to and measured >= MIN_MEASURED:
            worst = max(worst, measured / predicted if predicted > 0 else math.inf)
    return worst


def template_tail(kind: str, faces: int, found: Impostors, people: int, splits: int = SPLITS
                  ) -> TemplateTail:
    """The curve of this template kind from its impostor scores, checked on held-out people
    and raised where the check found it short. ValueError: too few comparisons to fit."""
    values = found.values()
    tail = fit(values)
    validation = held_out(found, people, validation_thresholds(tail), splits)
    factor = correction(tail, validation)
    if not math.isfinite(factor):
        raise ValueError(f"the {kind} tail of {faces} faces predicts no stranger where "
                         "held-out people had some")
    validation["raised_by"] = round(factor, 4)
    tail = replace(tail, rate_at_fit_to=float(f"{tail.rate_at_fit_to * factor:.6g}"))
    return TemplateTail(kind=kind, faces=faces, fmr=measured_curve(values),
                        impostor_comparisons=len(values), tail=tail,
                        templates=int(found.scores.shape[0]),
                        people=int(len(np.unique(found.row_person))), validation=validation)


def counts_behind(curve: TemplateTail, values: NDArray[np.floating], span: float = 0.15
                  ) -> list[dict[str, float]]:
    """Measured impostor pairs above each fine-grid threshold from the tail's window start to
    ``span`` past its end, and how many the fitted curve models there."""
    tail = curve.tail
    if tail is None:
        return []
    grid = TAIL_GRID[(TAIL_GRID >= tail.fit_from - 1e-9) & (TAIL_GRID <= tail.fit_to + span)]
    counts = counts_above(values, grid)
    return [{"threshold": float(t), "measured": int(n),
             "modelled": float(f"{len(values) * curve_rate(curve.fmr, len(values), tail, t):.4g}")}
            for t, n in zip(grid, counts, strict=True)]
