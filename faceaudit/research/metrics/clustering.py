"""Identity clustering metrics: pairwise and BCubed precision, recall and F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


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
