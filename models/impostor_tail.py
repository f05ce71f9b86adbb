"""The impostor tail: a generalised Pareto law for the highest impostor scores, and its fit."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Millions of comparisons measure the false-match rate down to about 1e-5; an index of 10^8
# faces needs 1e-9 and below. Beyond where it is measured well, a calibration's curve follows
# this tail, fitted to the impostor scores, not the handful of label errors (one person filed
# under two names) that the measured curve ends on.

# The tail fit's window: from the score exceeded by this share of impostor pairs...
TAIL_QUANTILE = 1e-3
# ...to the highest score still exceeded by this many of them: a rate measured within about
# 10 %, and above a few dozen mislabelled pairs (which sit far higher on LFW).
TAIL_MIN_COUNT = 100


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
