"""Small-count suppression: no published count below k can single out a person or an uploader.

Every count the report publishes is registered here under its JSON Pointer (RFC 6901) in
``report.json``, and every additive relation between published counts (a total and its parts:
images = with faces + without + failed; the bins of a histogram and the number they count)
is registered too. The rule, applied by ``suppress``:

1. Primary: a count from 1 to k - 1 is suppressed. Zero is published (it says nobody).
2. Secondary: in every registered relation, either no member or at least two members are
   suppressed; where exactly one is, the smallest other published member (non-zero first) is
   suppressed too, so no suppressed count is the difference of published ones. Repeated until
   no relation has a single suppressed member (a cell suppressed for one relation can expose
   another).

Free-text rows (why photos failed or were not downloaded) under k in any section are merged
into "other reasons" everywhere (``merge_rare``), so a rare message cannot point at a photo.
Histograms are first top-coded (``code_histograms``): their extreme bins are merged into an
open-ended bin ("≥ 50") until it holds at least k, so the rarest values (the uploader with
the most photos, the person seen most often) are never a bin of their own.

A suppressed count is ``null`` in the JSON and its pointer is listed under ``suppressed``; a
secondary one (which may be k or more) is also listed under ``suppressed_secondary``. The HTML
shows a primary one as "<k" and a secondary one as "withheld", and says which is which.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def pointer(*parts: str | int) -> str:
    """The JSON Pointer of ``parts`` ("/licences/CC BY 2.0"; "~" and "/" escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class Cells:
    """The counts a report publishes and the additive relations between them."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.relations: list[tuple[str, ...]] = []

    def add(self, path: str, value: int) -> int:
        self.values[path] = int(value)
        return int(value)

    def relate(self, total: str, parts: Sequence[str]) -> None:
        """``total`` = sum of ``parts``, all registered. A relation that does not add up is a
        bug in the caller: refusing it beats publishing a report that leaks."""
        members = (total, *parts)
        missing = [m for m in members if m not in self.values]
        if missing:
            raise ValueError(f"relation over unregistered cells {missing}")
        if self.values[total] != sum(self.values[p] for p in parts):
            raise ValueError(f"{total} = {self.values[total]} is not the sum of {list(parts)}")
        self.relations.append(members)

    def relate_if_exact(self, total: str, parts: Sequence[str]) -> None:
        """A relation when the numbers happen to add up (coverage counts add up differently
        for each kind of source): if they add up, a reader can use them."""
        if parts and self.values[total] == sum(self.values[p] for p in parts):
            self.relate(total, parts)

    def suppress(self, k: int) -> set[str]:
        """The pointers of the counts to withhold under the rule above, for threshold ``k``."""
        hidden = {path for path, value in self.values.items() if 0 < value < k}
        changed = bool(hidden)
        while changed:
            changed = False
            for members in self.relations:
                if sum(m in hidden for m in members) != 1:
                    continue
                shown = [m for m in members if m not in hidden]
                # The smallest non-zero count costs the least information; a zero only when
                # nothing else is left (hiding it still hides the difference).
                shown.sort(key=lambda m: (self.values[m] == 0, self.values[m], m))
                hidden.add(shown[0])
                changed = True
        return hidden


@dataclass(frozen=True)
class Bin:
    """``low`` to ``high`` inclusive for integer measures, [low, high) for continuous ones;
    ``high`` None for an open-ended bin."""

    low: float
    high: float | None
    count: int
    label: str


@dataclass(frozen=True)
class Histogram:
    """Counts of something (images, faces, uploaders, identities) by a measure."""

    measure: str  # what the bins are of, for people ("faces in the photo")
    counts_what: str  # what each bin counts ("photos")
    bins: tuple[Bin, ...]
    unit: str = ""  # of the measure, in labels ("16–24 px")

    @property
    def total(self) -> int:
        return sum(b.count for b in self.bins)

    def merged(self, start: int, stop: int, top: int, bottom: int) -> Histogram:
        """Bins ``start`` to ``stop`` (inclusive) only, those from ``top`` up merged into one
        open-ended bin and those up to ``bottom`` into one."""
        bins = list(self.bins[start:stop + 1])
        top, bottom = top - start, bottom - start
        if top < len(bins) - 1:
            merged = bins[top:]
            bins = bins[:top] + [Bin(merged[0].low, None, sum(b.count for b in merged),
                                     f"≥ {_number(merged[0].low)}{self.unit}")]
        if bottom > 0:
            merged, high = bins[:bottom + 1], bins[bottom].high
            bins = [Bin(merged[0].low, high, sum(b.count for b in merged),
                        f"< {_number(high)}{self.unit}" if high is not None
                        else f"≥ {_number(merged[0].low)}{self.unit}")] + bins[bottom + 1:]
        return Histogram(self.measure, self.counts_what, tuple(bins), self.unit)


def code_histograms(histograms: Sequence[Histogram], k: int, *, low_end: bool = False
                    ) -> list[Histogram]:
    """``histograms`` (same bins; the first the sum of the others, or alone) with the same
    coding: empty bins at both ends dropped, the top bins merged into one open-ended bin
    holding at least k in each histogram (and the bottom bins too with ``low_end``).
    Histograms totalling under k are left out of that choice: all their cells are small."""
    counts = np.array([[b.count for b in h.bins] for h in histograms])
    used = np.flatnonzero(counts.sum(axis=0))
    if not len(used):
        return [Histogram(h.measure, h.counts_what, (), h.unit) for h in histograms]
    start, stop = int(used[0]), int(used[-1])
    top, bottom = stop, start
    for row in counts:
        if row.sum() < k:
            continue
        from_top = np.cumsum(row[start:stop + 1][::-1])
        top = min(top, stop - int(np.argmax(from_top >= k)))
        if low_end:
            bottom = max(bottom, start + int(np.argmax(np.cumsum(row[start:stop + 1]) >= k)))
    bottom = min(bottom, top)
    return [h.merged(start, stop, top, bottom) for h in histograms]


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def integer_histogram(values: NDArray[np.integer], edges: Sequence[int], measure: str,
                      counts_what: str) -> Histogram:
    """Counts of ``values`` in the integer bins starting at ``edges`` (ascending; the last
    bin is open-ended): edges (0, 1, 2, 5) -> 0, 1, 2–4, ≥ 5."""
    values = np.asarray(values)
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right") - 1,
                         minlength=len(edges)) if len(values) else np.zeros(len(edges), int)
    bins = []
    for i, low in enumerate(edges):
        high = edges[i + 1] - 1 if i + 1 < len(edges) else None
        label = (f"{low:,}" if high == low else f"{low:,}–{high:,}" if high is not None
                 else f"≥ {low:,}")
        bins.append(Bin(low, high, int(counts[i]), label))
    return Histogram(measure, counts_what, tuple(bins))


def float_histogram(values: NDArray[np.floating], edges: Sequence[float], measure: str,
                    counts_what: str, unit: str = "") -> Histogram:
    """Counts of ``values`` in [edges[i], edges[i+1]); values past the last edge in an
    open-ended bin, values below the first in the first bin."""
    values = np.asarray(values, dtype=np.float64)
    places = np.clip(np.searchsorted(np.asarray(edges), values, side="right") - 1, 0, None)
    counts = np.bincount(places, minlength=len(edges)) if len(values) else np.zeros(len(edges))
    bins = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        label = (f"{_number(low)}–{_number(high)}{unit}" if high is not None and
                 math.isfinite(high) else f"≥ {_number(low)}{unit}")
        bins.append(Bin(low, high, int(counts[i]), label))
    return Histogram(measure, counts_what, tuple(bins), unit)


OTHER_REASONS = "other reasons"


def merge_rare(counters: Sequence[Counter[str]], k: int) -> None:
    """Merge, in place, every row under ``k`` in any of ``counters`` into OTHER_REASONS in all
    of them, so their rows stay the same (and add up across datasets)."""
    rare = {name for counter in counters for name, count in counter.items() if 0 < count < k}
    for counter in counters:
        for name in rare & set(counter):
            counter[OTHER_REASONS] += counter.pop(name)
