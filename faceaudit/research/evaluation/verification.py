"""1:1 verification on LFW pairs, scored on the labelled face of each image.

A pair in which either image has no face scores ``NO_FACE_SCORE`` (-1, the lowest cosine),
so it is decided "different": wrong for a same-person pair, right for a different-person one.
This is the usual honest choice; the count is reported.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

import numpy as np

from faceaudit.errors import FaceAuditError
from faceaudit.research.evaluation.dataset import ExtractedFaces, labelled_vector
from faceaudit.research.metrics.pairs import Pairs
from faceaudit.research.metrics.verification import (
    balanced_accuracy,
    kfold_verification,
    roc_auc,
    tar_at_far,
)

FAR_LEVELS = (1e-2, 1e-3)
NO_FACE_SCORE = -1.0


@dataclass(frozen=True)
class VerificationReport:
    pairs: int
    same_pairs: int
    different_pairs: int
    folds: int
    fold_source: str
    pairs_with_missing_face: int
    accuracy: float  # mean over folds, threshold chosen on the other folds
    accuracy_std: float  # population std over folds, as LFW results report it
    threshold: float  # mean of the chosen thresholds
    threshold_std: float
    balanced_accuracy: float  # over all out-of-fold decisions
    balanced_threshold: float
    auc: float
    tar_at_far: dict[str, float]
    tar_at_far_threshold: dict[str, float]  # accept scores above it


def check_pairs(pairs: Pairs, images: Container[str]) -> None:
    """Raise when the pairs name images that the dataset does not have."""
    missing = sorted({p for p in pairs.left + pairs.right if p not in images})
    if missing:
        raise FaceAuditError(
            f"{len(missing)} images named in the pairs file are not in the dataset, e.g. "
            f"{', '.join(missing[:5])}: is the pairs file for this dataset?")


def verify_pairs(pairs: Pairs, extracted: Mapping[str, ExtractedFaces]
                 ) -> VerificationReport:
    """LFW verification on the labelled faces of each pair."""
    check_pairs(pairs, extracted)
    scores = np.full(len(pairs), NO_FACE_SCORE)
    for k, (left, right) in enumerate(zip(pairs.left, pairs.right, strict=True)):
        a, b = labelled_vector(extracted[left]), labelled_vector(extracted[right])
        if a is not None and b is not None:
            scores[k] = float(np.dot(a, b))
    same = pairs.same
    plain = kfold_verification(scores, same, pairs.fold)
    balanced = kfold_verification(scores, same, pairs.fold, balanced=True)
    tar, tar_threshold = {}, {}
    for far in FAR_LEVELS:
        tar[f"{far:g}"], tar_threshold[f"{far:g}"] = tar_at_far(
            scores[same], scores[~same], far)
    return VerificationReport(
        pairs=len(pairs),
        same_pairs=int(same.sum()),
        different_pairs=int((~same).sum()),
        folds=pairs.folds,
        fold_source=pairs.fold_source,
        pairs_with_missing_face=int((scores == NO_FACE_SCORE).sum()),
        accuracy=float(plain.fold_scores.mean()),
        accuracy_std=float(plain.fold_scores.std()),
        threshold=float(plain.thresholds.mean()),
        threshold_std=float(plain.thresholds.std()),
        balanced_accuracy=balanced_accuracy(balanced.predicted, same),
        balanced_threshold=float(balanced.thresholds.mean()),
        auc=roc_auc(scores, same),
        tar_at_far=tar,
        tar_at_far_threshold=tar_threshold,
    )
