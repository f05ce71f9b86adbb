"""False-match curves of templates (several faces of one person fused into one query): the
calibration file's ``templates`` section, and reading a false-match rate off any measured curve.

A template of K selfies scores higher against strangers than one photo does (a fused vector
sits nearer the middle of face space), so it has its own curve, fitted by
``faceaudit eval --calibrate``: one per template size, for selfies only and for selfies with
confirmed faces (the person's own photos ticked "this is me"). A calibration searched with a
template reads its rate as the highest of every curve it must not undercut (see
``Calibration.for_template``): a curve measured on fewer comparisons never makes a bigger
template look safer than a smaller one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from faceaudit.models.impostor_tail import ImpostorTail

SELFIES = "selfies"
CONFIRMED = "confirmed"
KINDS = (SELFIES, CONFIRMED)


def curve_rate(fmr: list[tuple[float, float]], comparisons: int, tail: ImpostorTail | None,
               threshold: float) -> float:
    """The false-match rate at ``threshold`` of a measured curve: interpolated on a log scale
    between measured points, and the fitted tail beyond its ``fit_to``. Below the first
    measured point, the first point's rate (a lower bound). Without a tail, above the last
    point with any false match the rate is bounded by one comparison in all those measured
    (never zero)."""
    if tail is not None:
        if threshold > tail.fit_to:
            return tail.false_match_rate(threshold)
        points = [(t, r) for t, r in fmr if t < tail.fit_to]
        points.append((tail.fit_to, tail.rate_at_fit_to))
    else:
        floor = 1.0 / max(1, comparisons)
        points = [(t, max(rate, floor)) for t, rate in fmr]
    if threshold <= points[0][0]:
        return points[0][1]
    for (t0, r0), (t1, r1) in zip(points, points[1:], strict=False):
        if t0 <= threshold <= t1:
            weight = (threshold - t0) / (t1 - t0) if t1 > t0 else 0.0
            return math.exp(math.log(r0) + weight * (math.log(r1) - math.log(r0)))
    return points[-1][1]


@dataclass(frozen=True)
class TemplateTail:
    """The measured false-match curve of one kind of template: ``faces`` faces in all,
    ``kind`` "selfies" (selfies only) or "confirmed" (selfies plus at least one confirmed
    face). ``fmr`` and ``tail`` read as a calibration's; ``templates`` and ``people``: how
    many templates, of how many people, the ``impostor_comparisons`` came from.
    ``validation``: the held-out people check of this kind's fit."""

    kind: str
    faces: int
    fmr: list[tuple[float, float]]
    impostor_comparisons: int
    tail: ImpostorTail | None
    templates: int
    people: int
    validation: dict[str, Any] = field(default_factory=dict)

    def false_match_rate(self, threshold: float) -> float:
        return curve_rate(self.fmr, self.impostor_comparisons, self.tail, threshold)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemplateTail:
        data = dict(data)
        data["fmr"] = [(float(t), float(r)) for t, r in data["fmr"]]
        if data.get("tail") is not None:
            data["tail"] = ImpostorTail(**data["tail"])
        return cls(**data)


@dataclass(frozen=True)
class TemplateCalibration:
    """A calibration file's ``templates`` section. ``same_person_threshold``: the score every
    pair of one person's selfies must exceed (the level that different people's photos
    exceed at ``same_person["pair_fmr"]``). ``tails``: one per (kind, faces). ``fitted``:
    how they were measured (data, fusion, counts, seeds)."""

    same_person_threshold: float
    tails: list[TemplateTail]
    same_person: dict[str, Any] = field(default_factory=dict)
    fitted: dict[str, Any] = field(default_factory=dict)

    def tail(self, kind: str, faces: int) -> TemplateTail | None:
        return next((t for t in self.tails if t.kind == kind and t.faces == faces), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemplateCalibration:
        data = dict(data)
        data["tails"] = [TemplateTail.from_dict(t) for t in data["tails"]]
        return cls(**data)

    @classmethod
    def from_eval(cls, section: dict[str, Any] | None) -> TemplateCalibration | None:
        """From ``faceaudit eval --json``'s ``templates`` section; None when it holds no
        fitted curve or no same-person level."""
        if not section or not section.get("tails") or not section.get("same_person"):
            return None
        names = set(TemplateTail.__dataclass_fields__)
        return cls.from_dict({
            "same_person_threshold": section["same_person"]["level"],
            "same_person": section["same_person"],
            "tails": [{k: v for k, v in t.items() if k in names} for t in section["tails"]],
            "fitted": {**section.get("fitted", {}), "not_fitted": section.get("not_fitted", [])},
        })
