"""Templates: several face embeddings of one person fused into one query vector, and the check
that a person's selfies all show the same person.

The fusion is the plain mean of the L2-normalised embeddings, renormalised: weighting by
detection score, face size or embedding norm measured no better on buffalo_s (LFW people,
``benchmarks/results/templates.txt``). A template lives in memory only, like the selfies it
is made from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import DifferentPeople


def _unit_rows(vectors: Sequence[NDArray[np.floating]]) -> NDArray[np.float32]:
    if not vectors:
        raise ValueError("a template needs at least one face embedding")
    matrix = np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in vectors])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError("a face embedding of norm 0 cannot be fused")
    return matrix / norms


def fuse_template(vectors: Sequence[NDArray[np.floating]]) -> NDArray[np.float32]:
    """One query vector for several embeddings of one person: the mean of the L2-normalised
    ``vectors``, renormalised. One vector is returned as it is (already normalised by the
    engine), so a one-selfie search scores exactly as before templates."""
    if len(vectors) == 1:
        return np.asarray(vectors[0], dtype=np.float32).reshape(-1)
    mean = _unit_rows(vectors).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0:
        raise ValueError("these face embeddings cancel out: they cannot be fused")
    return (mean / norm).astype(np.float32)


def pair_scores(vectors: Sequence[NDArray[np.floating]]) -> NDArray[np.float32]:
    """The cosine similarity of every pair (K x K, 1 on the diagonal)."""
    unit = _unit_rows(vectors)
    scores: NDArray[np.float32] = unit @ unit.T
    return scores


def odd_one_out(vectors: Sequence[NDArray[np.floating]], level: float) -> int | None:
    """None when every pair of ``vectors`` scores above ``level``; else the position (0 for the
    first) of the one with the lowest mean score against the others: the one that differs. A
    tie (always so for two) names the later one: the one added last."""
    count = len(vectors)
    if count < 2:
        return None
    scores = pair_scores(vectors).astype(np.float64)
    if scores[~np.eye(count, dtype=bool)].min() > level:
        return None
    means = (scores.sum(axis=1) - np.diag(scores)) / (count - 1)
    lowest = means.min()
    return int(max(i for i in range(count) if means[i] <= lowest + 1e-9))


def same_person_template(vectors: Sequence[NDArray[np.floating]], level: float
                         ) -> NDArray[np.float32]:
    """The template of one person's selfies (``fuse_template``); DifferentPeople, naming the
    selfie that differs (1 for the first), when a pair scores ``level`` or less: a template of
    two people would find the photos of both."""
    odd = odd_one_out(vectors, level)
    if odd is not None:
        number = odd + 1
        if len(vectors) == 2:
            message = ("Selfie 2 does not look like the same person as selfie 1: search with "
                       "photos of one person only, yourself.")
        else:
            message = (f"Selfie {number} does not look like the same person as the other "
                       "selfies: remove it, and search with photos of one person only, "
                       "yourself.")
        raise DifferentPeople(message, selfie=number)
    return fuse_template(vectors)
