"""LFW pairs files: parsing them into labelled pairs of images, and the folds of those pairs."""

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
