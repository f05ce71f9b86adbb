"""Templates of several faces on a labelled dataset: drawing them, scoring them against every
face, and the impostor counts their false-match curves are fitted from.

Conventions (those of the eval and of the calibration): a face is kept when its score is
strictly above the threshold. A template is the plain mean of its faces' unit vectors,
renormalised: selfies embedded as a selfie is (with their mirror image), confirmed faces as
the index stores them. Selfies are photos with exactly one face. Impostor pairs: a template
against the labelled face (the face nearest the photo centre, LFW's label) of every photo of
another identity. A photo is found when its best face scores above the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from numpy.typing import NDArray

from faceaudit.research.evaluation.dataset import Dataset, ExtractedFaces

Vectors = NDArray[np.float32]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class FaceTable:
    """Every face of a labelled dataset, row by row. ``photo[f]`` numbers the photo of face f
    (photos in dataset order, faceless ones included); ``selfie[f]`` is its vector as a selfie
    is embedded (zero where it was not embedded so). Photos hold their faces in consecutive
    rows."""

    plain: Vectors  # (F, d)
    selfie: Vectors  # (F, d)
    photo: Ints  # (F,)
    labelled: NDArray[np.bool_]  # (F,)
    photo_identity: Ints  # (P,)
    people: int

    @property
    def photos(self) -> int:
        return len(self.photo_identity)

    @property
    def faces_in_photo(self) -> Ints:
        return np.bincount(self.photo, minlength=self.photos).astype(np.int64)

    @property
    def labelled_row(self) -> Ints:
        """(P,) the labelled face row of each photo, -1 for a photo without a face."""
        rows = np.full(self.photos, -1, np.int64)
        rows[self.photo[self.labelled]] = np.flatnonzero(self.labelled)
        return rows

    @property
    def selfie_row(self) -> Ints:
        """(P,) the only face of a one-face photo embedded as a selfie, else -1."""
        rows = np.where(self.faces_in_photo == 1, self.labelled_row, -1)
        usable = rows >= 0
        usable[usable] = np.any(self.selfie[rows[usable]] != 0, axis=1)
        return np.where(usable, rows, -1)

    def photos_of(self) -> list[Ints]:
        return [np.flatnonzero(self.photo_identity == i) for i in range(self.people)]


def face_table(dataset: Dataset, extracted: Mapping[str, ExtractedFaces]) -> FaceTable:
    """The table of every face ``extract_with_engine`` found in ``dataset``."""
    dimension = next((f.vectors.shape[1] for f in extracted.values() if len(f.vectors)), 1)
    plain, selfie, photo, labelled, identity = [], [], [], [], []
    number = 0
    for person, paths in enumerate(dataset.identities.values()):
        for path in paths:
            faces = extracted[path]
            n = len(faces.vectors)
            plain.append(faces.vectors.reshape(n, dimension))
            selfie.append(faces.query_vectors.reshape(n, dimension)
                          if faces.query_vectors is not None and n
                          else np.zeros((n, dimension), np.float32))
            photo.append(np.full(n, number, np.int64))
            labelled.append(np.arange(n) == (faces.labelled if n else -1))
            identity.append(person)
            number += 1
    return FaceTable(np.concatenate(plain).astype(np.float32),
                     np.concatenate(selfie).astype(np.float32), np.concatenate(photo),
                     np.concatenate(labelled), np.array(identity, np.int64),
                     len(dataset.identities))


def unit(vectors: NDArray[np.floating]) -> Vectors:
    return (vectors / (np.linalg.norm(vectors, axis=-1, keepdims=True) + 1e-12)).astype(
        np.float32)


@dataclass(frozen=True)
class Templates:
    """T templates of n faces each: ``person[t]``; ``photos[t]``: photo numbers, a selfie
    where ``selfie[t]`` is true, else a confirmed photo (represented by its labelled face);
    ``vectors[t]``: the fused vector."""

    person: Ints
    photos: Ints  # (T, n)
    selfie: NDArray[np.bool_]  # (T, n)
    vectors: Vectors

    def __len__(self) -> int:
        return len(self.person)


def fuse(table: FaceTable, photos: Ints, selfie: NDArray[np.bool_]) -> Vectors:
    """The templates of these photos (T, n): selfies as selfies, the others by their
    labelled face as the index stores it."""
    selfie_vectors = table.selfie[np.maximum(table.selfie_row[photos], 0)]
    plain_vectors = table.plain[np.maximum(table.labelled_row[photos], 0)]
    return unit(np.where(selfie[..., None], selfie_vectors, plain_vectors).sum(axis=1))


def _subsets(count: int, k: int, want: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``want`` distinct sorted k-subsets of range(count) (all of them when fewer), seeded."""
    total = math.comb(count, k)
    if total <= 5000:
        every = list(combinations(range(count), k))
        if want >= total:
            return every
        return sorted(every[i] for i in rng.choice(total, want, replace=False))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < want:
        chosen.add(tuple(sorted(rng.choice(count, k, replace=False).tolist())))
    return sorted(chosen)


def _templates(table: FaceTable, person: list[int], rows: list[list[int]],
               selfie: list[list[bool]], faces: int, limit: int, seed: int) -> Templates:
    """At most ``limit`` of these templates (a seeded sample of them when more)."""
    keep = np.arange(len(person))
    if len(keep) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(keep), limit, replace=False))
    photos = np.array(rows, np.int64).reshape(len(rows), faces)[keep]
    mask = np.array(selfie, bool).reshape(len(rows), faces)[keep]
    return Templates(np.array(person, np.int64)[keep], photos, mask, fuse(table, photos, mask))


def draw_selfies(table: FaceTable, k: int, per_person: int | None, seed: int, limit: int
                 ) -> Templates:
    """Up to ``per_person`` distinct k-subsets of each person's one-face photos (every one
    for ``per_person`` None), at most ``limit`` in all. Seeded."""
    rng = np.random.default_rng(seed)
    selfie_row = table.selfie_row
    person, rows = [], []
    for who, photos in enumerate(table.photos_of()):
        usable = photos[selfie_row[photos] >= 0]
        if len(usable) < k:
            continue
        want = math.comb(len(usable), k) if per_person is None else per_person
        for subset in _subsets(len(usable), k, want, rng):
            person.append(who)
            rows.append(usable[list(subset)].tolist())
    return _templates(table, person, rows, [[True] * k] * len(rows), k, limit, seed)


def draw_confirmed(table: FaceTable, faces: int, per_person: int, seed: int, limit: int,
                   join_above: float) -> Templates:
    """Templates of ``faces`` faces in all: s selfies (s drawn from 1 to faces - 1) and
    faces - s confirmed photos, other photos of the person whose labelled face scores above
    ``join_above`` against the selfies alone (what a person can confirm at the lowest
    default). Up to ``per_person`` draws per person, at most ``limit`` in all. Seeded."""
    rng = np.random.default_rng(seed)
    selfie_row, labelled_row = table.selfie_row, table.labelled_row
    person, rows, kinds = [], [], []
    for who, photos in enumerate(table.photos_of()):
        usable = photos[selfie_row[photos] >= 0]
        seen: set[tuple[int, ...]] = set()
        for _ in range(per_person if len(usable) else 0):
            s = int(rng.integers(1, faces))
            if len(usable) < s:
                continue
            selfies = np.sort(rng.choice(usable, s, replace=False))
            others = np.setdiff1d(photos[labelled_row[photos] >= 0], selfies)
            alone = fuse(table, selfies[None, :], np.ones((1, s), bool))[0]
            found = others[table.plain[labelled_row[others]] @ alone > join_above]
            if len(found) < faces - s:
                continue
            row = [*selfies.tolist(), *np.sort(rng.choice(found, faces - s, replace=False))]
            if tuple(row) in seen:
                continue
            seen.add(tuple(row))
            person.append(who)
            rows.append([int(p) for p in row])
            kinds.append([True] * s + [False] * (faces - s))
    return _templates(table, person, rows, kinds, faces, limit, seed)


# --- scores ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Impostors:
    """Templates against the labelled face of every photo: ``scores[t, c]``, NaN where
    column c's photo is of the template's own person (or has no face)."""

    scores: NDArray[np.float32]  # (T, P)
    row_person: Ints  # (T,)
    column_person: Ints  # (P,)

    def values(self, rows: NDArray[np.bool_] | None = None,
               columns: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
        block = self.scores
        if rows is not None:
            block = block[rows]
        if columns is not None:
            block = block[:, columns]
        flat = block.ravel()
        return flat[~np.isnan(flat)]


def label_errors(table: FaceTable, above: float | None) -> NDArray[np.bool_]:
    """(I, I): identity pairs with two labelled faces scoring above ``above`` (the same person
    under two names, or one photo filed twice: LFW has a few), treated as one person, as the
    one-photo tail's validation does. ``above`` None: none."""
    same = np.eye(table.people, dtype=bool)
    if above is None:
        return same
    rows = table.labelled_row
    faces = rows[rows >= 0]
    owner = table.photo_identity[rows >= 0]
    vectors = table.plain[faces]
    for start in range(0, len(faces), 1024):
        block = vectors[start:start + 1024] @ vectors.T
        a, b = np.nonzero(block > above)
        same[owner[start + a], owner[b]] = True
        same[owner[b], owner[start + a]] = True
    return same


def impostors(table: FaceTable, templates: Templates, same: NDArray[np.bool_]) -> Impostors:
    """``same``: identity pairs counted as one person (``label_errors``)."""
    rows = table.labelled_row
    scores = templates.vectors @ table.plain[np.maximum(rows, 0)].T
    scores[:, rows < 0] = np.nan
    scores[same[templates.person][:, table.photo_identity]] = np.nan
    return Impostors(scores, templates.person, table.photo_identity)


def best_scores(table: FaceTable, vectors: Vectors) -> NDArray[np.float32]:
    """(T, P): each photo's best face against each vector, -inf for a photo without a face."""
    scores = vectors @ table.plain.T
    best = np.full((len(vectors), table.photos), -np.inf, np.float32)
    if len(table.photo):
        starts = np.flatnonzero(np.r_[True, np.diff(table.photo) > 0])
        best[:, table.photo[starts]] = np.maximum.reduceat(scores, starts, axis=1)
    return best


def counts_above(values: NDArray[np.floating], grid: NDArray[np.floating]) -> Ints:
    """How many values are strictly above each grid threshold (grid ascending)."""
    below = np.searchsorted(grid, values, side="left")  # grid points strictly under a value
    histogram = np.bincount(below, minlength=len(grid) + 1)
    return (len(values) - np.cumsum(histogram)[: len(grid)]).astype(np.int64)
