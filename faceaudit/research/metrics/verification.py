"""1:1 verification metrics: best threshold, k-fold accuracy, ROC AUC, TAR at a FAR.

Over one similarity per labelled pair. A verification threshold ``t`` decides "same person"
when ``score >= t`` (a search threshold keeps a face when ``score > t``: see
``identification``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def best_threshold(scores: NDArray[np.floating], same: NDArray[np.bool_], *,
                   balanced: bool = False) -> float:
    """The threshold (decide "same" when ``score >= t``) with the most correct decisions.

    Candidates are the midpoints between consecutive distinct scores, the lowest score (all
    "same") and the highest plus one (all "different"); ties go to the lowest threshold.
    ``balanced`` maximises balanced accuracy instead, by weighting each same-person pair by
    the number of different-person pairs and vice versa (integers, so ties are exact).
    """
    positives, negatives = int(same.sum()), int((~same).sum())
    weight_pos, weight_neg = (negatives, positives) if balanced else (1, 1)
    order = np.argsort(scores, kind="stable")
    ordered, labels = np.asarray(scores, np.float64)[order], same[order]
    # Correct decisions when the cut is before sorted position i (0..n): the negatives below
    # it plus the positives at or above it.
    negatives_below = np.concatenate([[0], np.cumsum(~labels)]) * weight_neg
    positives_above = (positives - np.concatenate([[0], np.cumsum(labels)])) * weight_pos
    correct = negatives_below + positives_above
    valid = np.ones(len(ordered) + 1, dtype=bool)
    valid[1:-1] = ordered[1:] > ordered[:-1]  # no cut between equal scores
    cut = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if cut == 0:
        return float(ordered[0])
    if cut == len(ordered):
        return float(ordered[-1] + 1.0)
    return float((ordered[cut - 1] + ordered[cut]) / 2)


def accuracy(scores: NDArray[np.floating], same: NDArray[np.bool_], threshold: float) -> float:
    return float(np.mean((scores >= threshold) == same))


def balanced_accuracy(predicted: NDArray[np.bool_], same: NDArray[np.bool_]) -> float:
    """Mean of the true-accept rate and the true-reject rate (a missing class is left out)."""
    rates = [float(np.mean(predicted[same])) if same.any() else None,
             float(np.mean(~predicted[~same])) if (~same).any() else None]
    present = [rate for rate in rates if rate is not None]
    return float(np.mean(present)) if present else float("nan")


@dataclass(frozen=True)
class KFold:
    """k-fold verification: per fold, the threshold chosen on the other folds and the score
    on this one; ``predicted`` holds every pair's out-of-fold decision."""

    thresholds: NDArray[np.float64]
    fold_scores: NDArray[np.float64]
    predicted: NDArray[np.bool_]


def kfold_verification(scores: NDArray[np.floating], same: NDArray[np.bool_],
                       fold: NDArray[np.int64], *, balanced: bool = False) -> KFold:
    """LFW's protocol: for each fold, choose the threshold on the other folds (see
    ``best_threshold``), then score the held-out fold with it (accuracy, or balanced accuracy
    when ``balanced``). With a single fold the threshold is chosen on that fold itself."""
    folds = int(fold.max()) + 1
    thresholds, fold_scores = np.empty(folds), np.empty(folds)
    predicted = np.zeros(len(scores), dtype=bool)
    for k in range(folds):
        test = fold == k
        train = ~test if folds > 1 else test
        threshold = best_threshold(scores[train], same[train], balanced=balanced)
        decided = scores[test] >= threshold
        predicted[test] = decided
        thresholds[k] = threshold
        fold_scores[k] = (balanced_accuracy(decided, same[test]) if balanced
                          else float(np.mean(decided == same[test])))
    return KFold(thresholds, fold_scores, predicted)


def average_ranks(values: NDArray[np.floating]) -> NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = np.asarray(values)[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.append(starts[1:], len(ordered))  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(ordered))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(scores: NDArray[np.floating], same: NDArray[np.bool_]) -> float:
    """Probability that a same-person pair scores above a different-person pair (ties count
    one half): the Mann-Whitney U statistic over the product of the class sizes."""
    positives, negatives = int(same.sum()), int((~same).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = float(average_ranks(scores)[same].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def tar_at_far(genuine: NDArray[np.floating], impostor: NDArray[np.floating],
               far: float) -> tuple[float, float]:
    """(TAR, threshold): the share of genuine scores accepted by the most permissive
    threshold that accepts at most ``floor(far * len(impostor))`` impostor scores.

    Accepted means strictly above the returned threshold, which is the highest impostor score
    that must be rejected. With fewer than ``1 / far`` impostors no impostor may be accepted,
    so the threshold is the highest impostor score.
    """
    if len(impostor) == 0 or len(genuine) == 0:
        return float("nan"), float("nan")
    allowed = int(np.floor(far * len(impostor) + 1e-9))
    if allowed >= len(impostor):
        return 1.0, float(np.min(impostor)) - 1.0
    threshold = float(np.sort(impostor)[::-1][allowed])
    return float(np.mean(genuine > threshold)), threshold
