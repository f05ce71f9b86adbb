"""Does the fitted impostor tail predict false-match rates it was not fitted on?

    python benchmarks/tail_validation.py [--lfw ../shared/data/lfw-dev] [--json]

Embeds the labelled face of every photo once (the pipeline of `faceaudit index`), scores every
pair of different people (7 M pairs on lfw-dev), and checks the method of
faceaudit.models.impostor_tail.fit_tail four ways:

1. held-out scores: fit on a window that ends where 300 pairs remain, and compare the pairs it
   predicts above higher thresholds with those measured;
2. held-out people: split the identities in halves at random (10 times), fit on the pairs of
   one half and predict the other half's pairs (and the other way round), pooled;
3. stability: the exponential scale and the free generalised-Pareto shape over those 20 fits;
4. the alternative: a Gaussian fitted to all the scores' Fisher z (the usual assumption).

Pairs scoring above --label-errors (0.48) are listed by name: on lfw-dev every one is the same
person under two names or the same photo, so "measured" counts leave them out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.models.engine import FaceEngine
from faceaudit.models.impostor_tail import ImpostorTail, fit_tail
from faceaudit.models.packs import buffalo_s
from faceaudit.research.evaluation.dataset import extract_with_engine, load_dataset
from faceaudit.research.evaluation.impostors import TAIL_GRID

HELD_OUT = (0.3, 0.325, 0.35, 0.375, 0.4, 0.425)
SPLITS = 10


def counts_above(scores: NDArray[np.float64]) -> list[int]:
    ordered = np.sort(scores)
    return (len(ordered) - np.searchsorted(ordered, TAIL_GRID, side="right")).tolist()


def fit(scores: NDArray[np.float64], **options: Any) -> ImpostorTail:
    return fit_tail(TAIL_GRID.tolist(), counts_above(scores), len(scores), **options)


def rate(tail: ImpostorTail, scores: NDArray[np.float64], threshold: float) -> float:
    """The calibration's rule: measured up to the window's end, the fitted tail beyond."""
    if threshold <= tail.fit_to:
        return float((scores > threshold).mean())
    return tail.false_match_rate(threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw-dev"))
    parser.add_argument("--label-errors", type=float, default=0.48)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    dataset = load_dataset(args.lfw.resolve())
    extracted = extract_with_engine(FaceEngine(buffalo_s(), device="cpu"), dataset,
                                    embed_selfies=False)
    vectors, owners, paths = [], [], []
    for number, images in enumerate(dataset.identities.values()):
        for path in images:
            faces = extracted[path]
            if faces.labelled is not None:
                vectors.append(faces.vectors[faces.labelled])
                owners.append(number)
                paths.append(path)
    matrix = np.array(vectors, np.float32)
    identity = np.array(owners)
    rows, columns = np.triu_indices(len(matrix), 1)
    different = identity[rows] != identity[columns]
    rows, columns = rows[different], columns[different]
    scores = (matrix @ matrix.T)[rows, columns].astype(np.float64)
    label_errors = scores > args.label_errors
    clean = ~label_errors
    report: dict[str, object] = {
        "pairs": len(scores),
        "label_errors": sorted(([round(float(s), 3), paths[i], paths[j]] for s, i, j in zip(
            scores[label_errors], rows[label_errors], columns[label_errors], strict=True)),
            reverse=True),
    }

    tail = fit(scores)
    report["fit"] = {**{k: getattr(tail, k) for k in (
        "fit_from", "fit_to", "rate_at_fit_to", "scale", "deviance", "bins",
        "unconstrained_shape", "likelihood_ratio")},
        "threshold_at": {f"{r:g}": _lowest(tail, r) for r in (1e-5, 1e-7, 1e-9, 1e-10)}}

    early = fit(scores, min_count=300)
    report["held_out_scores"] = {
        "window": [early.fit_from, early.fit_to],
        "predicted_vs_measured_pairs": [
            [t, round(early.false_match_rate(t) * len(scores), 1), int((scores[clean] > t).sum())]
            for t in HELD_OUT if t > early.fit_to]}

    predicted = dict.fromkeys(HELD_OUT, 0.0)
    measured = dict.fromkeys(HELD_OUT, 0)
    scales, shapes, ratios = [], [], []
    people = int(identity.max()) + 1
    for split in range(SPLITS):
        half = np.random.default_rng(split).permutation(people) < people // 2
        first = half[identity[rows]] & half[identity[columns]]
        second = ~half[identity[rows]] & ~half[identity[columns]]
        for train, test in ((first, second), (second, first)):
            fitted = fit(scores[train])
            scales.append(fitted.scale)
            shapes.append(fitted.unconstrained_shape)
            for t in HELD_OUT:
                predicted[t] += rate(fitted, scores[train], t) * int(test.sum())
                measured[t] += int((scores[test & clean] > t).sum())
            # one fit against one half of the people, where both have a hundred pairs or so
            ratios.append(rate(fitted, scores[train], 0.325)
                          / max(1e-12, float((scores[test & clean] > 0.325).mean())))
    report["held_out_people"] = {
        "fits": 2 * SPLITS,
        "predicted_vs_measured_pairs": [[t, round(predicted[t], 1), measured[t]]
                                        for t in HELD_OUT],
        "one_fit_ratio_range_at_0.325": [round(min(ratios), 2), round(max(ratios), 2)],
        "exponential_scale_range": [min(scales), max(scales)],
        "free_shape_range": [min(shapes), max(shapes)],
    }

    z = np.arctanh(np.clip(scores, -0.999999, 0.999999))
    mean, std = float(z.mean()), float(z.std())
    report["gaussian_fisher_z"] = {
        "predicted_vs_measured_rate": [
            [t, float(f"{0.5 * math.erfc((math.atanh(t) - mean) / std / math.sqrt(2)):.3g}"),
             float(f"{(scores[clean] > t).mean():.3g}")] for t in (0.25, 0.3, 0.35)]}
    print(json.dumps(report, indent=None if args.json else 2))


def _lowest(tail: ImpostorTail, target: float) -> float | None:
    for t in np.arange(tail.fit_to, 1.0, 0.001):
        if tail.false_match_rate(float(t)) <= target:
            return round(float(t), 3)
    return None


if __name__ == "__main__":
    main()
