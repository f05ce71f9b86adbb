"""Expected faces of strangers per search, recomputed from a calibration file's own numbers
without faceaudit.models' calibration: the threshold tests check the service against these.

What the numbers mean is the file's format: ``fmr`` lists (threshold, false-match rate)
points, read between them on a log scale; with a ``tail`` (an exponential one, shape 0), the
rate above its ``fit_to`` is ``rate_at_fit_to * exp(-(t - fit_to) / scale)``, and measured
points from ``fit_to`` on are not used (label errors); without one, no rate is taken under one
comparison in all those measured. Thresholds are multiples of 0.001.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

SHIPPED = Path(__file__).parents[1] / "models" / "calibrations" / "buffalo_s.json"
STEP = 0.001
GRID = np.round(np.arange(0, 1 + STEP / 2, STEP), 3)


def shipped() -> dict[str, Any]:
    """The buffalo_s calibration file as it ships, parsed as plain JSON."""
    data: dict[str, Any] = json.loads(SHIPPED.read_text(encoding="utf-8"))
    return data


def rate(calibration: dict[str, Any], t: float) -> float:
    """The false-match rate per comparison at threshold ``t``."""
    tail = calibration.get("tail")
    points = [(float(a), float(r)) for a, r in calibration["fmr"]]
    if tail is not None:
        assert tail["shape"] == 0, "these few lines know the exponential tail only"
        if t > tail["fit_to"]:
            return float(tail["rate_at_fit_to"] * math.exp(-(t - tail["fit_to"]) / tail["scale"]))
        points = [(a, r) for a, r in points if a < tail["fit_to"]]
        points.append((tail["fit_to"], tail["rate_at_fit_to"]))
    else:
        least = 1 / calibration["impostor_comparisons"]
        points = [(a, max(r, least)) for a, r in points]
    xs, logs = zip(*((a, math.log(r)) for a, r in points), strict=True)
    return float(math.exp(np.interp(t, xs, logs)))  # flat beyond the first and last points


def strangers(calibration: dict[str, Any], t: float, faces: int) -> float:
    """Faces of other people expected per search of ``faces`` faces at threshold ``t``."""
    return faces * rate(calibration, t)


def lowest(calibration: dict[str, Any], faces: int, bound: float) -> float:
    """The lowest threshold of the grid, from the first measured point up, at which at most
    ``bound`` strangers are expected per search of ``faces`` faces (a plain scan)."""
    first = float(calibration["fmr"][0][0])
    for t in GRID:
        if t >= first - 1e-9 and strangers(calibration, float(t), faces) <= bound:
            return float(t)
    return 1.0


def default_threshold(calibration: dict[str, Any], faces: int, bound: float = 0.1) -> float:
    """The service's default at this size: the lowest with at most ``bound`` strangers per
    search, never below the file's recall-optimal ``threshold``."""
    return max(float(calibration["threshold"]), lowest(calibration, faces, bound))


def rounded(value: float) -> float:
    """As results give expected strangers: three significant digits."""
    return float(f"{value:.3g}")


# --- templates: the file's "templates" section ---------------------------------------------
# A template of n faces (selfies, plus confirmed faces when any) reads the highest rate of the
# one-photo curve and every selfies-only curve of 1 to n faces, and with confirmed faces every
# confirmed curve of 2 to n faces too. Each curve reads as the one-photo curve does (``rate``).


def template_curves(calibration: dict[str, Any], selfies: int, confirmed: int = 0
                    ) -> list[dict[str, Any]]:
    faces = selfies + confirmed
    curves = [calibration]
    if faces == 1:
        return curves
    kinds = {"selfies"} | ({"confirmed"} if confirmed else set())
    wanted = {(kind, n) for kind in kinds for n in range(1, faces + 1)}
    section = calibration["templates"]["tails"]
    chosen = [c for c in section if (c["kind"], c["faces"]) in wanted]
    assert len(chosen) == len(wanted) - ("confirmed" in kinds), "a curve is missing"
    return curves + chosen


def template_rate(calibration: dict[str, Any], t: float, selfies: int, confirmed: int = 0
                  ) -> float:
    return max(rate(curve, t) for curve in template_curves(calibration, selfies, confirmed))


def template_lowest(calibration: dict[str, Any], faces: int, bound: float, selfies: int,
                    confirmed: int = 0) -> float:
    """``lowest`` for a template: a plain scan of the grid."""
    first = float(calibration["fmr"][0][0])
    for t in GRID:
        if t >= first - 1e-9 and faces * template_rate(calibration, float(t), selfies,
                                                       confirmed) <= bound:
            return float(t)
    return 1.0


def template_default(calibration: dict[str, Any], faces: int, selfies: int, confirmed: int = 0,
                     bound: float = 0.1) -> float:
    return max(float(calibration["threshold"]),
               template_lowest(calibration, faces, bound, selfies, confirmed))
