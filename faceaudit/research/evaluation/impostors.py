"""Impostor false-match rates over every pair of labelled faces of different people: the curve
a model pack's calibration is fitted from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from faceaudit.research.evaluation.dataset import Dataset, ExtractedFaces, labelled_vector
from faceaudit.research.metrics.identification import count_above

# The false-match curve a calibration keeps: it must reach the scores of strong matches.
CALIBRATION_SWEEP = np.round(np.arange(0.10, 0.90 + 1e-9, 0.025), 3)
# Finer, for fitting the tail of the impostor scores (faceaudit.models.impostor_tail.fit_tail).
TAIL_GRID = np.round(np.arange(0.0, 1.0 + 1e-9, 0.005), 3)
# Impostor comparisons are counted block by block over all pairs of labelled faces; above
# this many faces a deterministic sample of them is used (n^2/2 comparisons grow fast).
MAX_IMPOSTOR_FACES = 20_000
IMPOSTOR_BLOCK = 1024


@dataclass(frozen=True)
class ImpostorReport:
    faces: int  # labelled faces compared
    comparisons: int  # pairs of them with different identities
    sampled: bool
    max_score: float
    fmr: list[dict[str, float]]  # {"threshold", "fmr"} per sweep threshold
    counts_above: list[dict[str, float]]  # {"threshold", "count"} per TAIL_GRID threshold


def impostor_fmr(dataset: Dataset, extracted: Mapping[str, ExtractedFaces],
                 thresholds: NDArray[np.floating]) -> ImpostorReport:
    """FMR per comparison over every pair of labelled faces of different identities."""
    rows, owners = [], []
    for number, paths in enumerate(dataset.identities.values()):
        for path in paths:
            vector = labelled_vector(extracted[path])
            if vector is not None:
                rows.append(vector)
                owners.append(number)
    sampled = len(rows) > MAX_IMPOSTOR_FACES
    if sampled:
        keep = np.sort(np.random.default_rng(0).choice(len(rows), MAX_IMPOSTOR_FACES,
                                                       replace=False))
        rows, owners = [rows[i] for i in keep], [owners[i] for i in keep]
    vectors = np.array(rows, np.float32)
    identity = np.array(owners, np.int64)
    counts = np.zeros(len(thresholds), np.int64)
    tail_counts = np.zeros(len(TAIL_GRID), np.int64)
    comparisons, max_score = 0, float("nan")
    for start in range(0, len(vectors), IMPOSTOR_BLOCK):
        stop = min(start + IMPOSTOR_BLOCK, len(vectors))
        similarity = vectors[start:stop] @ vectors[start:].T  # each pair once: columns >= row
        row = np.arange(start, stop)[:, None]
        column = np.arange(start, len(vectors))[None, :]
        impostor = (column > row) & (identity[start:stop, None] != identity[None, start:])
        scores = similarity[impostor]
        counts += count_above(scores, thresholds)
        tail_counts += count_above(scores, TAIL_GRID)
        comparisons += len(scores)
        if len(scores):
            max_score = float(np.nanmax([max_score, scores.max()]))
    fmr = counts / comparisons if comparisons else np.full(len(thresholds), np.nan)
    return ImpostorReport(
        faces=len(vectors), comparisons=comparisons, sampled=sampled, max_score=max_score,
        fmr=[{"threshold": float(t), "fmr": float(f)} for t, f in zip(thresholds, fmr,
                                                                       strict=True)],
        counts_above=[{"threshold": float(t), "count": int(n)}
                      for t, n in zip(TAIL_GRID, tail_counts, strict=True)],
    )
