"""The calibration record: a pack's measured false-match curve, and what a score means with it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from faceaudit.models.impostor_tail import ImpostorTail, tail_from_eval
from faceaudit.models.packs import ModelPack
from faceaudit.models.template_tails import (
    CONFIRMED,
    SELFIES,
    TemplateCalibration,
    TemplateTail,
    curve_rate,
)
from faceaudit.models.thresholds import (
    MAX_EXPECTED_STRANGERS,
    MAX_TEMPLATE_FACES,
    POSSIBLE,
    STRONG,
    STRONG_EXPECTED_FALSE_MATCHES,
    TARGET_EXPECTED_STRANGERS,
    TEMPLATE_STANDIN_SHIFT,
    UNCALIBRATED_SAME_PERSON,
    UNCALIBRATED_THRESHOLD,
    lowest_threshold,
)


@dataclass(frozen=True)
class Calibration:
    """A pack's calibration, measured by ``faceaudit eval --calibrate`` on faces with known
    identities: the per-comparison false-match rate FMR(t) of the pack's recognizer (the share
    of different-person face pairs scoring above t), so that searching an index of N faces at
    threshold t returns about N * FMR(t) faces of strangers.

    ``threshold``: the recall-optimal threshold (the default for small indexes).
    ``fmr``: (threshold, false-match rate) pairs, thresholds ascending. ``tail``: the fitted
    impostor tail (None in calibrations made before it, or on too few comparisons).
    ``measured``: what the threshold gave where it was chosen. ``templates``: the curves of
    templates of several faces (None in calibrations made before them).

    ``template``: (selfies, confirmed) of the template this calibration is for, (1, 0) for
    one photo; ``bounds`` and ``shift`` are set by ``for_template`` only (never stored)."""

    pack: str
    recognizer_sha256: str | None
    threshold: float
    fmr: list[tuple[float, float]]
    impostor_comparisons: int
    source: str
    measured: dict[str, Any] = field(default_factory=dict)
    tail: ImpostorTail | None = None
    templates: TemplateCalibration | None = None
    template: tuple[int, int] = (1, 0)
    bounds: tuple[TemplateTail, ...] = ()
    shift: float = 0.0

    @property
    def calibrated(self) -> bool:
        return bool(self.fmr)

    @property
    def same_person_threshold(self) -> float:
        """The score every pair of one person's selfies must exceed to be searched together;
        a conservative level for a pack without template calibration."""
        if self.templates is None:
            return UNCALIBRATED_SAME_PERSON
        return self.templates.same_person_threshold

    def for_template(self, selfies: int, confirmed: int = 0) -> Calibration:
        """The calibration of a search with a template of ``selfies`` selfies and ``confirmed``
        confirmed faces: its false-match rate at t is the highest of the one-photo curve and
        of every selfies-only curve of at most selfies + confirmed faces, and with confirmed
        faces of every confirmed curve of at most that size too; thresholds therefore never
        fall as a template grows. A calibrated pack without template curves (or missing one
        of them) reads its one-photo curve ``TEMPLATE_STANDIN_SHIFT`` lower instead; an
        uncalibrated one gets a fixed threshold that much above its own."""
        faces = selfies + confirmed
        if selfies < 1 or confirmed < 0 or faces > MAX_TEMPLATE_FACES:
            raise ValueError(
                f"a template holds 1 to {MAX_TEMPLATE_FACES} faces, at least one of them a "
                f"selfie: got {selfies} selfies and {confirmed} confirmed faces")
        if faces == 1:
            return replace(self, template=(1, 0), bounds=(), shift=0.0)
        if not self.fmr:
            return replace(self, template=(selfies, confirmed), bounds=(), shift=0.0,
                           threshold=max(self.threshold,
                                         UNCALIBRATED_THRESHOLD + TEMPLATE_STANDIN_SHIFT))
        wanted = [(SELFIES, n) for n in range(1, faces + 1)]
        if confirmed:
            wanted += [(CONFIRMED, n) for n in range(2, faces + 1)]
        found = [None if self.templates is None else self.templates.tail(kind, n)
                 for kind, n in wanted]
        bounds = tuple(t for t in found if t is not None)
        shift = TEMPLATE_STANDIN_SHIFT if None in found else 0.0
        return replace(self, template=(selfies, confirmed), bounds=bounds, shift=shift)

    def false_match_rate(self, threshold: float) -> float | None:
        """FMR at ``threshold`` (see ``curve_rate``); for a template, the highest of the curves
        it must not undercut (see ``for_template``)."""
        if not self.fmr:
            return None
        rate = curve_rate(self.fmr, self.impostor_comparisons, self.tail, threshold - self.shift)
        for bound in self.bounds:
            rate = max(rate, bound.false_match_rate(threshold))
        return rate

    def expected_false_matches(self, threshold: float, index_faces: int) -> float | None:
        rate = self.false_match_rate(threshold)
        return None if rate is None else rate * index_faces

    def threshold_for(self, index_faces: int, expected: float) -> float | None:
        """The lowest threshold (rounded up to ``THRESHOLD_STEP``) at which a search of
        ``index_faces`` faces is expected to return at most ``expected`` strangers; never below
        the first measured point. 1.0 when none below 1 does; None when uncalibrated."""
        if not self.fmr:
            return None
        low = self.fmr[0][0]
        return lowest_threshold(
            lambda t: index_faces * (self.false_match_rate(t) or 0.0) <= expected, low, 1.0)

    def operating_threshold(self, index_faces: int,
                            target_expected: float = TARGET_EXPECTED_STRANGERS) -> float:
        """The default threshold for an index of this size: the lowest at which at most
        ``target_expected`` strangers per search are expected, and never below the pack's
        recall-optimal ``threshold``. An uncalibrated pack: its fixed threshold."""
        needed = self.threshold_for(index_faces, target_expected)
        return self.threshold if needed is None else max(self.threshold, needed)

    def min_threshold(self, index_faces: int,
                      max_expected: float = MAX_EXPECTED_STRANGERS) -> float:
        """The lowest threshold any search of this index may use: above it, at most
        ``max_expected`` strangers per search. An uncalibrated pack: its fixed threshold."""
        needed = self.threshold_for(index_faces, max_expected)
        return max(UNCALIBRATED_THRESHOLD, self.threshold) if needed is None else needed

    def strength(self, score: float, index_faces: int) -> str:
        """"strong" when strangers scoring this high are unlikely in an index of this size
        (expected fewer than 0.01 of them), else "possible": look at the photo."""
        expected = self.expected_false_matches(score, index_faces)
        return STRONG if expected is not None and expected < STRONG_EXPECTED_FALSE_MATCHES \
            else POSSIBLE

    def guide(self, index_faces: int, thresholds: list[float]) -> list[dict[str, float | None]]:
        """Expected false matches at a few thresholds, for people choosing one."""
        return [{"threshold": t, "expected_false_matches":
                 _round(self.expected_false_matches(t, index_faces))} for t in thresholds]

    def to_json(self) -> str:
        """The calibration file: the one-photo calibration with its template curves."""
        data = asdict(self)
        for derived in ("template", "bounds", "shift"):
            del data[derived]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Calibration:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["fmr"] = [tuple(point) for point in data["fmr"]]
        if data.get("tail") is not None:
            data["tail"] = ImpostorTail(**data["tail"])
        if data.get("templates") is not None:
            data["templates"] = TemplateCalibration.from_dict(data["templates"])
        return cls(**data)


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")


def calibration_from_eval(result: dict[str, Any], pack: ModelPack | str,
                          recognizer_sha256: str | None, source: str,
                          max_fpir: float = 0.01) -> Calibration:
    """A calibration from ``faceaudit eval --json`` output: the default threshold is the one
    of highest 1:N recall whose FPIR (non-mated searches returning anything) is at most
    ``max_fpir``; the FMR curve is the impostor curve, with its fitted tail; the template
    curves are those of its ``templates`` section, when it has one."""
    search = result["search"]
    eligible = [p for p in search["sweep"] if p["fpir"] <= max_fpir and p["recall"] is not None]
    if not eligible:
        raise ValueError(f"no threshold of the sweep has FPIR <= {max_fpir}")
    chosen = max(eligible, key=lambda p: (p["recall"], -p["threshold"]))
    impostor = result["impostor"]
    return Calibration(
        pack=pack if isinstance(pack, str) else pack.name,
        recognizer_sha256=recognizer_sha256,
        threshold=float(chosen["threshold"]),
        fmr=[(float(p["threshold"]), float(p["fmr"])) for p in impostor["fmr"]],
        impostor_comparisons=int(impostor["comparisons"]),
        source=source,
        measured={
            "rule": f"highest 1:N recall with FPIR <= {max_fpir}",
            "recall": chosen["recall"],
            "fnir": chosen["fnir"],
            "fpir": chosen["fpir"],
            "false_matches_per_search": chosen["false_matches_per_search"],
            "verification_accuracy": (result.get("verification") or {}).get("accuracy"),
            "images": result["images"],
            "detection": result.get("detection"),
        },
        tail=tail_from_eval(impostor),
        templates=TemplateCalibration.from_eval(result.get("templates")),
    )
