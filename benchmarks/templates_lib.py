"""The numpy core of ``benchmarks/templates.py``: templates of K selfies, their scores against
every face of lfw-dev, impostor counts, per-template-kind tails and their held-out check. The
fit, the rate rule and the validation thresholds live in faceaudit.research.evaluation
(``template_fits``, ``templates``), where ``faceaudit eval --calibrate`` uses them.

Conventions (those of faceaudit's eval and calibration):
- a face is kept when its score is strictly above the threshold;
- impostor pairs: a template against the labelled face (LFW's label) of every photo of
  another identity, identity pairs that are LFW label errors (``aliases``) left out;
- a photo is found when its best face scores above the threshold (``search_vectors``);
- recall: per template the share of the person's other photos found, averaged over the
  person's templates, then over people (each person counts once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from numpy.typing import NDArray
from templates_embed import Faces

from faceaudit.models.calibration import Calibration
from faceaudit.research.evaluation.impostors import TAIL_GRID
from faceaudit.research.evaluation.template_fits import (  # noqa: F401 - used by templates*.py
    SPLITS,
    fit,
    measured_curve,
    rate,
    validation_thresholds,
)
from faceaudit.research.evaluation.templates import counts_above as _counts_above
from faceaudit.research.evaluation.templates import unit

# The pack's recall-optimal threshold, never gone below (Calibration.operating_threshold).
BASE_THRESHOLD = 0.375
# Labelled-face pairs of different identities above this are all LFW label errors on lfw-dev
# (one person under two names, or one photo filed twice: benchmarks/tail_validation.py).
LABEL_ERROR_SCORE = 0.48
FUSIONS = ("mean", "det_score", "face_size", "norm")
Array = NDArray[np.float64]


@dataclass
class Data:
    """``faces`` plus what every experiment needs, computed once."""

    faces: Faces
    identity: NDArray[np.int64]  # (F,) identity of each face's photo
    starts: NDArray[np.int64]  # (P,) first face row of each photo (every photo has a face)
    labelled: NDArray[np.int64]  # (P,) the labelled face row of each photo
    one_face: NDArray[np.int64]  # photo -> its only face row, -1 when not a one-face photo
    photos_of: list[NDArray[np.int64]]  # identity -> its photos
    aliases: NDArray[np.bool_]  # (I, I) label-error identity pairs, treated as one person
    alias_names: list[tuple[str, str]]

    @property
    def people(self) -> int:
        return len(self.faces.names)


def prepare(faces: Faces) -> Data:
    photo = faces.photo
    if np.any(np.diff(photo) < 0) or len(np.unique(photo)) != len(faces.paths):
        raise ValueError("faces must be ordered by photo, every photo with a face")
    starts = np.flatnonzero(np.r_[True, np.diff(photo) > 0])
    labelled = np.flatnonzero(faces.labelled)
    one_face = np.where(faces.faces_in_photo == 1, starts, -1)
    ident = faces.identity_of_photo
    people = len(faces.names)
    photos_of = [np.flatnonzero(ident == i) for i in range(people)]
    vectors = faces.plain[labelled]
    scores = vectors @ vectors.T
    rows, columns = np.nonzero(np.triu(scores > LABEL_ERROR_SCORE, 1))
    aliases = np.zeros((people, people), bool)
    names = set()
    for r, c in zip(rows, columns, strict=True):
        a, b = ident[r], ident[c]
        if a != b:
            aliases[a, b] = aliases[b, a] = True
            names.add(tuple(sorted((faces.names[a], faces.names[b]))))
    return Data(faces, ident[photo], starts, labelled, one_face, photos_of, aliases,
                sorted(names))


# --- templates ------------------------------------------------------------------------------

@dataclass
class Templates:
    """T templates: ``person[t]``, ``selfies[t]`` (K photo numbers), ``vectors[t]``."""

    person: NDArray[np.int64]
    selfies: NDArray[np.int64]
    vectors: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.person)


def draw_selfies(data: Data, k: int, per_person: int | None, seed: int,
                 min_one_face: int | None = None) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(person, selfie photos) of up to ``per_person`` distinct K-subsets of each person's
    one-face photos (every subset when there are fewer; all for ``per_person`` None and K 1).
    People with fewer than ``min_one_face`` (default K) one-face photos give none."""
    rng = np.random.default_rng(seed)
    people, sets = [], []
    for person, photos in enumerate(data.photos_of):
        usable = photos[data.one_face[photos] >= 0]
        if len(usable) < max(k, min_one_face or k):
            continue
        total = math.comb(len(usable), k)
        want = total if per_person is None else min(per_person, total)
        if total <= 5000:
            every = list(combinations(range(len(usable)), k))
            chosen = set(every) if want == total else {
                every[i] for i in rng.choice(total, want, replace=False)}
        else:
            chosen = set()
            while len(chosen) < want:
                chosen.add(tuple(sorted(rng.choice(len(usable), k, replace=False).tolist())))
        for subset in sorted(chosen):
            people.append(person)
            sets.append(usable[list(subset)])
    return np.array(people, np.int64), np.array(sets, np.int64).reshape(len(sets), k)


def fuse(data: Data, selfies: NDArray[np.int64], fusion: str) -> NDArray[np.float32]:
    """One unit vector per row of ``selfies``: the weighted mean of the selfies' unit vectors
    (each embedded as a selfie is: with its mirror image), renormalised."""
    faces = data.faces
    rows = data.one_face[selfies]  # (T, K) face rows
    vectors = faces.mirror[rows]
    weights: np.ndarray
    if fusion == "mean":
        weights = np.ones(rows.shape, np.float32)
    elif fusion == "det_score":
        weights = faces.det_score[rows]
    elif fusion == "face_size":
        weights = faces.short_side[rows]
    elif fusion == "norm":  # the recognizer's raw output norm, mean of the two crops'
        weights = (faces.raw_norm[rows] + faces.raw_norm_mirror[rows]) / 2
    else:
        raise ValueError(f"unknown fusion {fusion}")
    return unit((vectors * weights[..., None]).sum(axis=1))


def make(data: Data, person: NDArray[np.int64], selfies: NDArray[np.int64], fusion: str
         ) -> Templates:
    return Templates(person, selfies, fuse(data, selfies, fusion))


# --- scores ---------------------------------------------------------------------------------

@dataclass
class Scored:
    """A template set scored against lfw-dev. ``best[t, p]``: photo p's best face;
    ``impostor[t, p]``: its labelled face, NaN where p is the template's own person, an
    alias of them (so its selfies too)."""

    templates: Templates
    best: NDArray[np.float32]
    impostor: NDArray[np.float32]

    def impostor_scores(self, rows: NDArray[np.bool_] | None = None,
                        columns: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
        block = self.impostor
        if rows is not None:
            block = block[rows]
        if columns is not None:
            block = block[:, columns]
        values = block.ravel()
        return values[~np.isnan(values)]


def score(data: Data, templates: Templates, vectors: NDArray[np.float32] | None = None
          ) -> Scored:
    v = templates.vectors if vectors is None else vectors
    faces = v @ data.faces.plain.T
    best = np.maximum.reduceat(faces, data.starts, axis=1)
    impostor = faces[:, data.labelled].copy()
    del faces
    photo_identity = data.faces.identity_of_photo
    excluded = data.aliases[templates.person][:, photo_identity]
    excluded |= templates.person[:, None] == photo_identity[None, :]
    impostor[excluded] = np.nan
    return Scored(templates, best, impostor)


def counts_above(values: NDArray[np.floating], grid: NDArray[np.floating] = TAIL_GRID
                 ) -> NDArray[np.int64]:
    """How many values are strictly above each grid threshold."""
    return _counts_above(values, grid)


def calibration(values: NDArray[np.floating], source: str) -> Calibration:
    """A Calibration as ``faceaudit eval --calibrate`` makes one, from these impostor scores:
    the measured FMR on the calibration sweep, the fitted tail beyond, the pack's base."""
    return Calibration(pack="buffalo_s", recognizer_sha256=None, threshold=BASE_THRESHOLD,
                       fmr=measured_curve(values), impostor_comparisons=len(values),
                       source=source, tail=fit(values))


# --- recall ---------------------------------------------------------------------------------

def recall(data: Data, scored: Scored, threshold: float | Array,
           people: Sequence[int] | None = None,
           found_before: NDArray[np.bool_] | None = None) -> tuple[float, int]:
    """(mean over people of their templates' mean recall, people counted). ``threshold``: one,
    or one per template. ``found_before[t, p]``: photos already found (expansion's union)."""
    t = scored.templates
    limits = np.broadcast_to(np.asarray(threshold, np.float64), (len(t),))
    found = scored.best > limits[:, None].astype(np.float32)
    if found_before is not None:
        found |= found_before
    wanted = None if people is None else set(int(p) for p in people)
    per_person: dict[int, list[float]] = {}
    for row, person in enumerate(t.person.tolist()):
        if wanted is not None and person not in wanted:
            continue
        others = np.setdiff1d(data.photos_of[person], t.selfies[row])
        if len(others):
            per_person.setdefault(person, []).append(float(found[row, others].mean()))
    if not per_person:
        return float("nan"), 0
    return float(np.mean([np.mean(v) for v in per_person.values()])), len(per_person)


def group(data: Data, low: int, high: int | None = None) -> list[int]:
    """People with ``low`` to ``high`` photos (inclusive)."""
    return [p for p, photos in enumerate(data.photos_of)
            if len(photos) >= low and (high is None or len(photos) <= high)]


# --- held-out people ------------------------------------------------------------------------

@dataclass
class HeldOut:
    fits: int
    failed: int
    thresholds: list[float]
    predicted: list[float]
    measured: list[int]
    one_fit_ratio: tuple[float, float] | None  # predicted / measured rate, at ratio_at
    ratio_at: float
    scale_range: tuple[float, float]


def held_out(data: Data, scored: Scored, thresholds: Sequence[float], ratio_at: float,
             splits: int = SPLITS) -> HeldOut:
    """tail_validation.py's check: halve the people at random (``splits`` times), fit on the
    templates and faces of one half, predict the other half's impostor pairs above each
    threshold (and the other way round), pooled."""
    predicted = dict.fromkeys(thresholds, 0.0)
    measured = dict.fromkeys(thresholds, 0)
    ratios, scales, failed = [], [], 0
    column_person = data.faces.identity_of_photo
    for split in range(splits):
        half = np.random.default_rng(split).permutation(data.people) < data.people // 2
        sides = [(half[scored.templates.person], half[column_person]),
                 (~half[scored.templates.person], ~half[column_person])]
        for (train_rows, train_cols), (test_rows, test_cols) in (sides, sides[::-1]):
            train = scored.impostor_scores(train_rows, train_cols)
            test = scored.impostor_scores(test_rows, test_cols)
            try:
                fitted = fit(train)
            except ValueError:
                failed += 1
                continue
            scales.append(fitted.scale)
            for t in thresholds:
                predicted[t] += rate(fitted, train, t) * len(test)
                measured[t] += int((test > t).sum())
            observed = float((test > ratio_at).mean())
            if observed > 0:
                ratios.append(rate(fitted, train, ratio_at) / observed)
    return HeldOut(
        fits=2 * splits - failed, failed=failed, thresholds=list(thresholds),
        predicted=[round(predicted[t], 1) for t in thresholds],
        measured=[measured[t] for t in thresholds],
        one_fit_ratio=(round(min(ratios), 2), round(max(ratios), 2)) if ratios else None,
        ratio_at=ratio_at,
        scale_range=(min(scales), max(scales)) if scales else (math.nan, math.nan))

