"""Face recognition metrics as pure numpy functions: no I/O, no models.

Verification (1:1) takes one similarity per labelled pair; identification (1:N) takes the
photos each search returned at the lowest threshold of a sweep. Similarities are cosine
similarities of L2-normalised embeddings, in [-1, 1].

Two comparison rules are used, each on purpose:

- a verification threshold ``t`` decides "same person" when ``score >= t``;
- a search threshold ``t`` keeps a face when ``score > t``, because that is what FAISS
  ``range_search`` on an inner-product index does, and the 1:N numbers must be those of the
  real search (FaceIndex.search). The impostor FMR curve uses the same rule, so that
  ``N * fmr(t)`` predicts the false matches of a search over ``N`` faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# A pairs file without a header is split into this many contiguous folds.
DEFAULT_FOLDS = 10


@dataclass(frozen=True)
class Pairs:
    """Labelled pairs of images (paths relative to the dataset root) and their folds."""

    left: tuple[str, ...]
    right: tuple[str, ...]
    same: NDArray[np.bool_]
    fold: NDArray[np.int64]  # fold of each pair, 0..folds-1
    fold_source: str  # "header", "blocks" or "contiguous": how the folds were found

    @property
    def folds(self) -> int:
        return int(self.fold.max()) + 1 if len(self.fold) else 0

    def __len__(self) -> int:
        return len(self.same)


def lfw_image(name: str, number: int) -> str:
    """LFW's path for image ``number`` of ``name``: ``name/name_0001.jpg``."""
    return f"{name}/{name}_{number:04d}.jpg"


def contiguous_folds(count: int, folds: int) -> NDArray[np.int64]:
    """Fold of each of ``count`` items split into ``folds`` contiguous, near-equal parts."""
    folds = max(1, min(folds, count))
    return (np.arange(count, dtype=np.int64) * folds) // max(count, 1)


def block_folds(same: NDArray[np.bool_]) -> NDArray[np.int64]:
    """One fold per run of same-person pairs followed by its run of different-person pairs.

    That is LFW's ``pairs.txt`` layout (each fold: its matched pairs, then its mismatched
    pairs), and any subset of it filtered line by line keeps it, so its folds, which do not
    share people, are recovered.
    """
    if not len(same):
        return np.empty(0, np.int64)
    starts = same & np.concatenate([[True], ~same[:-1]])
    starts[0] = True  # different-person pairs before any same-person pair join fold 0
    return (np.cumsum(starts) - 1).astype(np.int64)


def parse_pairs(text: str, *, default_folds: int = DEFAULT_FOLDS) -> Pairs:
    """Parse an LFW pairs file: ``name i j`` (same person) or ``name1 i name2 j`` (different).

    An optional first line ``FOLDS PAIRS_PER_FOLD`` gives the folds (contiguous blocks of
    ``2 * PAIRS_PER_FOLD`` lines). Without it, folds follow LFW's same-then-different blocks
    when there are between 2 and ``default_folds`` of them, else ``default_folds``
    contiguous splits. A one-number header (LFW's view 1 ``pairsDevTrain.txt``) gives no folds.
    """
    lines = [line.split() for line in text.splitlines() if line.strip()]
    header: list[int] = []
    if lines and all(token.isdigit() for token in lines[0]) and len(lines[0]) <= 2:
        header = [int(token) for token in lines.pop(0)]
    left, right, same = [], [], []
    for number, tokens in enumerate(lines, start=2 if header else 1):
        numbers = tokens[1::2] if len(tokens) == 4 else tokens[1:]
        if len(tokens) not in (3, 4) or not all(token.isdigit() for token in numbers):
            raise ValueError(f"pairs line {number}: expected 'name i j' or 'name1 i name2 j', "
                             f"got {' '.join(tokens)!r}")
        if len(tokens) == 3:
            left.append(lfw_image(tokens[0], int(tokens[1])))
            right.append(lfw_image(tokens[0], int(tokens[2])))
        else:
            left.append(lfw_image(tokens[0], int(tokens[1])))
            right.append(lfw_image(tokens[2], int(tokens[3])))
        same.append(len(tokens) == 3)
    labels = np.array(same, dtype=bool)
    if len(header) == 2:
        fold, source = contiguous_folds(len(labels), header[0]), "header"
    else:
        fold, source = block_folds(labels), "blocks"
        if not 2 <= (int(fold.max()) + 1 if len(fold) else 0) <= default_folds:
            fold, source = contiguous_folds(len(labels), default_folds), "contiguous"
    return Pairs(tuple(left), tuple(right), labels, fold, source)


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


def count_above(scores: NDArray[np.floating], thresholds: NDArray[np.floating]
                ) -> NDArray[np.int64]:
    """For each threshold, how many scores are strictly above it (the search rule)."""
    ordered = np.sort(np.asarray(scores, np.float64).ravel())
    return (len(ordered) - np.searchsorted(ordered, thresholds, side="right")).astype(np.int64)


def fmr_curve(impostor: NDArray[np.floating], thresholds: NDArray[np.floating]
              ) -> NDArray[np.float64]:
    """False-match rate per comparison: the share of impostor scores above each threshold."""
    if len(impostor) == 0:
        return np.full(len(thresholds), np.nan)
    return count_above(impostor, thresholds) / len(impostor)


@dataclass(frozen=True)
class SearchHits:
    """What a batch of 1:N searches returned at the lowest threshold of a sweep.

    Per search ``s``: ``own_total[s]`` is how many photos of the searched person the gallery
    holds (0 for a non-mated search, whose person is not in the gallery). Per returned photo
    ``h``: ``search[h]`` is the search that returned it, ``score[h]`` the score of the photo's
    best face, ``own[h]`` whether the photo is labelled with the searched person, and
    ``labelled_score[h]`` the score of the photo's labelled face (the one its label is about).
    """

    own_total: NDArray[np.int64]
    search: NDArray[np.int64]
    score: NDArray[np.float64]
    own: NDArray[np.bool_]
    labelled_score: NDArray[np.float64]


@dataclass(frozen=True)
class SearchPoint:
    """1:N results at one threshold.

    ``recall``: mean over mated searches of the share of the person's photos found.
    ``fnir``: share of mated searches that found none of them.
    ``fpir``: share of non-mated searches that returned at least one photo.
    ``false_matches_per_search``: other people's photos returned, per mated search.
    ``non_centre_hits``: returned photos of other people (all searches) that matched through
    a face other than the labelled one, which may be the searched person truly appearing.
    ``fpir_labelled_only``: FPIR counting only photos matched through their labelled face.
    """

    threshold: float
    recall: float
    fnir: float
    fpir: float
    false_matches_per_search: float
    non_centre_hits: int
    fpir_labelled_only: float


def _mean(values: NDArray[np.floating] | NDArray[np.integer] | NDArray[np.bool_]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def search_point(hits: SearchHits, threshold: float) -> SearchPoint:
    """The 1:N numbers at ``threshold`` (a photo is kept when its score is above it)."""
    searches = len(hits.own_total)
    mated = hits.own_total > 0
    kept = hits.score > threshold
    own_found = np.bincount(hits.search[kept & hits.own], minlength=searches)
    others = kept & ~hits.own
    other_found = np.bincount(hits.search[others], minlength=searches)
    via_labelled = others & (hits.labelled_score > threshold)
    labelled_found = np.bincount(hits.search[via_labelled], minlength=searches)
    recall = own_found[mated] / hits.own_total[mated]
    return SearchPoint(
        threshold=float(threshold),
        recall=_mean(recall),
        fnir=_mean(own_found[mated] == 0),
        fpir=_mean(other_found[~mated] > 0),
        false_matches_per_search=_mean(other_found[mated]),
        non_centre_hits=int(others.sum() - via_labelled.sum()),
        fpir_labelled_only=_mean(labelled_found[~mated] > 0),
    )


def search_sweep(hits: SearchHits, thresholds: NDArray[np.floating]) -> list[SearchPoint]:
    """``search_point`` at each threshold; the hits must come from a search at or below the
    lowest of them."""
    return [search_point(hits, float(t)) for t in thresholds]


def best_recall_at_fpir(points: list[SearchPoint], max_fpir: float) -> SearchPoint | None:
    """The point with the highest recall among those with FPIR at most ``max_fpir`` (ties:
    the highest threshold); None when none qualifies."""
    allowed = [p for p in points if p.fpir <= max_fpir]
    return max(allowed, key=lambda p: (p.recall, p.threshold)) if allowed else None


@dataclass(frozen=True)
class ClusterScores:
    """How a clustering (``predicted``) compares with the true identities of the same items.

    Pairwise: over all pairs of items, precision is the share of the pairs put together that
    are the same person, recall the share of same-person pairs put together (NaN where there
    are no such pairs). BCubed (Bagga and Baldwin 1998, Amigó et al. 2009): per item, the
    share of its cluster that is its person (precision) and the share of its person that is
    in its cluster (recall), averaged over items, so that large identities do not dominate as
    they do pairwise. F1 is the harmonic mean of each pair.
    """

    items: int
    true_identities: int
    predicted_identities: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float

    @property
    def identities_error(self) -> float:
        """(predicted - true) / true: the relative error of the identity count."""
        return (self.predicted_identities - self.true_identities) / self.true_identities \
            if self.true_identities else float("nan")


def _f1(precision: float, recall: float) -> float:
    if np.isnan(precision) or np.isnan(recall) or precision + recall == 0:
        return float("nan") if np.isnan(precision) or np.isnan(recall) else 0.0
    return 2 * precision * recall / (precision + recall)


def cluster_scores(true: NDArray[np.integer], predicted: NDArray[np.integer]) -> ClusterScores:
    """Pairwise and BCubed precision, recall and F1 of ``predicted`` cluster labels against
    ``true`` identity labels (one of each per item; any integers)."""
    true, predicted = np.asarray(true), np.asarray(predicted)
    if true.shape != predicted.shape:
        raise ValueError(f"{len(true)} true labels for {len(predicted)} predicted ones")
    _, true_ids = np.unique(true, return_inverse=True)
    _, predicted_ids = np.unique(predicted, return_inverse=True)
    true_sizes = np.bincount(true_ids).astype(np.float64)
    predicted_sizes = np.bincount(predicted_ids).astype(np.float64)
    # The contingency table, cell by cell: items of true identity t in predicted cluster p.
    cells, cell_counts = np.unique(np.stack([true_ids, predicted_ids]), axis=1,
                                   return_counts=True)
    overlap = cell_counts.astype(np.float64)
    cell_true, cell_predicted = cells[0], cells[1]

    def pairs(counts: NDArray[np.float64]) -> float:
        return float((counts * (counts - 1) / 2).sum())

    together, same, both = pairs(predicted_sizes), pairs(true_sizes), pairs(overlap)
    precision = both / together if together else float("nan")
    recall = both / same if same else float("nan")
    items = len(true)
    if items:
        b_precision = float((overlap**2 / predicted_sizes[cell_predicted]).sum() / items)
        b_recall = float((overlap**2 / true_sizes[cell_true]).sum() / items)
    else:
        b_precision = b_recall = float("nan")
    return ClusterScores(
        items=items, true_identities=len(true_sizes), predicted_identities=len(predicted_sizes),
        pairwise_precision=precision, pairwise_recall=recall, pairwise_f1=_f1(precision, recall),
        bcubed_precision=b_precision, bcubed_recall=b_recall,
        bcubed_f1=_f1(b_precision, b_recall))
