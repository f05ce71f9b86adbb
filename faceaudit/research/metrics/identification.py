"""1:N identification metrics: recall, FNIR and FPIR over a sweep; the impostor FMR.

Over the photos each search returned at the lowest threshold of a sweep. A search threshold
``t`` keeps a face when ``score > t``, because that is what FAISS ``range_search`` on an
inner-product index does, and the 1:N numbers must be those of the real search
(FaceIndex.search). The impostor FMR curve uses the same rule, so that ``N * fmr(t)`` predicts
the false matches of a search over ``N`` faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


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
