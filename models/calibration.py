"""The calibration record: a pack's measured false-match curve, and what a score means with it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faceaudit.models.impostor_tail import ImpostorTail, tail_from_eval
from faceaudit.models.packs import ModelPack
from faceaudit.models.thresholds import (
    MAX_EXPECTED_STRANGERS,
    POSSIBLE,
    STRONG,
    STRONG_EXPECTED_FALSE_MATCHES,
    TARGET_EXPECTED_STRANGERS,
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
    ``measured``: what the threshold gave where it was chosen."""

    pack: str
    recognizer_sha256: str | None
    threshold: float
    fmr: list[tuple[float, float]]
    impostor_comparisons: int
    source: str
    measured: dict[str, Any] = field(default_factory=dict)
    tail: ImpostorTail | None = None

    @property
    def calibrated(self) -> bool:
        return bool(self.fmr)

    def false_match_rate(self, threshold: float) -> float | None:
        """FMR at ``threshold``: interpolated on a log scale between measured points, and the
        fitted tail beyond its ``fit_to``. Below the first measured point, the first point's
        rate (a lower bound). Without a tail, above the last point with any false match the
        rate is bounded by one comparison in all those measured (never zero)."""
        if not self.fmr:
            return None
        if self.tail is not None:
            if threshold > self.tail.fit_to:
                return self.tail.false_match_rate(threshold)
            points = [(t, r) for t, r in self.fmr if t < self.tail.fit_to]
            points.append((self.tail.fit_to, self.tail.rate_at_fit_to))
        else:
            floor = 1.0 / max(1, self.impostor_comparisons)
            points = [(t, max(rate, floor)) for t, rate in self.fmr]
        if threshold <= points[0][0]:
            return points[0][1]
        for (t0, r0), (t1, r1) in zip(points, points[1:], strict=False):
            if t0 <= threshold <= t1:
                weight = (threshold - t0) / (t1 - t0) if t1 > t0 else 0.0
                return math.exp(math.log(r0) + weight * (math.log(r1) - math.log(r0)))
        return points[-1][1]

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
        return UNCALIBRATED_THRESHOLD if needed is None else needed

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
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Calibration:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["fmr"] = [tuple(point) for point in data["fmr"]]
        if data.get("tail") is not None:
            data["tail"] = ImpostorTail(**data["tail"])
        return cls(**data)


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")


def calibration_from_eval(result: dict[str, Any], pack: ModelPack, recognizer_sha256: str,
                          source: str, max_fpir: float = 0.01) -> Calibration:
    """A calibration from ``faceaudit eval --json`` output: the default threshold is the one
    of highest 1:N recall whose FPIR (non-mated searches returning anything) is at most
    ``max_fpir``; the FMR curve is the impostor curve, with its fitted tail."""
    search = result["search"]
    eligible = [p for p in search["sweep"] if p["fpir"] <= max_fpir and p["recall"] is not None]
    if not eligible:
        raise ValueError(f"no threshold of the sweep has FPIR <= {max_fpir}")
    chosen = max(eligible, key=lambda p: (p["recall"], -p["threshold"]))
    impostor = result["impostor"]
    return Calibration(
        pack=pack.name,
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
    )
