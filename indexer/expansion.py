"""Automatic expansion: a one-selfie search whose strongest matches join the template for a
second pass.

The rule is the one the eval measured (``faceaudit eval --json``, templates section: recall
"with expansion"): the faces of the first pass scoring above the level where fewer than
EXPAND_JOIN_EXPECTED strangers are expected in the whole index, by the one-selfie calibration
("very likely you"), join the selfie, the strongest first, up to MAX_TEMPLATE_FACES faces in
all; the grown template searches again at the default of a template of one selfie and that
many confirmed faces (never below the one-selfie default); the answer is what the second pass
found and the first pass's faces above the join level. It gained recall at the same stranger
rate for one selfie only, so it runs only for one selfie without confirmed faces.

The joined faces are the person's own strong matches, their embeddings read from the index
(faces whose removal was requested are never among the matches, so never join); the grown
template lives in memory only, like the selfie.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from faceaudit.models.calibration import Calibration
from faceaudit.models.templates import fuse_template
from faceaudit.models.thresholds import EXPAND_JOIN_EXPECTED, MAX_TEMPLATE_FACES

T = TypeVar("T")


@dataclass(frozen=True)
class Expanded(Generic[T]):
    """An expanded search: ``found`` (item, found only by the second pass), best first;
    ``joined``: faces that joined the selfie, all scoring above ``join_above``;
    ``calibration`` and ``default``: those of the grown template; ``threshold``: the second
    pass's."""

    found: list[tuple[T, bool]]
    joined: int
    join_above: float
    calibration: Calibration
    default: float
    threshold: float


def join_level(calibration: Calibration, index_faces: int) -> float | None:
    """The score above which a face joins a one-selfie template: the lowest threshold at which
    fewer than EXPAND_JOIN_EXPECTED strangers are expected in an index of ``index_faces``
    faces by the one-selfie calibration; None for an uncalibrated pack."""
    return calibration.for_template(1).threshold_for(index_faces, EXPAND_JOIN_EXPECTED)


def expand_search(
    selfie: NDArray[np.float32],
    first: Sequence[T],
    *,
    score: Callable[[T], float],
    key: Callable[[T], Hashable],
    face_vectors: Callable[[Sequence[T]], NDArray[np.float32]],
    search: Callable[[NDArray[np.float32], float], list[T]],
    calibration: Calibration,
    index_faces: int,
    default_for: Callable[[Calibration], float],
    threshold: float,
    top: int | None,
) -> Expanded[T] | None:
    """The second pass of a one-selfie search, or None when nothing joins (no match above the
    join level, or an uncalibrated pack). ``first``: the first pass's matches at
    ``threshold``, best first; ``face_vectors``: the stored embeddings of matches' faces;
    ``search(template, threshold)``: the matches of a template, best first, removed faces left
    out, at most ``top``; ``default_for``: the default threshold of a calibration at this
    index's size (the caller's rule: the operator's threshold may raise it)."""
    join = join_level(calibration, index_faces)
    if join is None:
        return None
    strong = sorted((item for item in first if score(item) > join), key=lambda i: -score(i))
    joining = strong[:MAX_TEMPLATE_FACES - 1]
    if not joining:
        return None
    template = fuse_template([selfie, *face_vectors(joining)])
    grown = calibration.for_template(1, len(joining))
    default = max(default_for(grown), default_for(calibration.for_template(1)))
    second_threshold = max(threshold, default)
    second = search(template, second_threshold)
    before = {key(item) for item in first}
    merged: dict[Hashable, tuple[T, bool]] = {key(i): (i, key(i) not in before) for i in second}
    for item in strong:  # the first pass's "very likely you" faces stay in the answer
        merged.setdefault(key(item), (item, False))
    found = sorted(merged.values(), key=lambda pair: -score(pair[0]))
    return Expanded(found if top is None else found[:top], len(joining), join, grown,
                    default, second_threshold)
