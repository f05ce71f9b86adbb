"""The clustering threshold for an index's size, under the calibration of the pack that built it.

The threshold grows with the index (``default_threshold``): it keeps the expected number of
strangers above it per face, N x FMR(t), at the level measured best on lfw-dev, so that the
share of faces wrongly attached to someone stays about the same at 10^7 faces as there.
"""

from __future__ import annotations

from faceaudit.indexer.search import FaceIndex
from faceaudit.models.calibration import Calibration
from faceaudit.models.calibration_files import load_calibration
from faceaudit.models.packs import resolve_pack
from faceaudit.models.thresholds import UNCALIBRATED_THRESHOLD

# The threshold measured best on lfw-dev (`faceaudit eval`), and the strangers per face
# expected above it there (its ~4,400 faces x FMR): larger indexes keep that expectation.
BASE_THRESHOLD = 0.375
EXPECTED_STRANGERS_PER_FACE = 0.0111


def default_threshold(calibration: Calibration, faces: int) -> float:
    """The clustering threshold for ``faces`` faces: BASE_THRESHOLD, raised until at most
    EXPECTED_STRANGERS_PER_FACE strangers are expected above it per face. An uncalibrated
    pack: its conservative fixed threshold, or BASE_THRESHOLD if higher."""
    needed = calibration.threshold_for(max(faces, 1), EXPECTED_STRANGERS_PER_FACE)
    if needed is None:
        return max(BASE_THRESHOLD, UNCALIBRATED_THRESHOLD)
    return max(BASE_THRESHOLD, needed)


def index_calibration(index: FaceIndex, models: str | None = None) -> Calibration:
    """The calibration of the model pack that built ``index``: that of ``models`` (a pack
    folder; default: FACEAUDIT_MODELS, else buffalo_s), checked against the recognizer's
    SHA-256 in the manifest; an uncalibrated stand-in when that is not the pack that built
    it."""
    manifest = index.manifest
    pack = resolve_pack(models)
    files = manifest["model_pack"]["files"]
    recognizer = files.get(pack.recognizer.path.name, {}).get("sha256")
    if pack.name != manifest["model_pack"]["name"] or recognizer is None:
        return Calibration(pack=manifest["model_pack"]["name"], recognizer_sha256=None,
                           threshold=UNCALIBRATED_THRESHOLD, fmr=[], impostor_comparisons=0,
                           source="uncalibrated")
    return load_calibration(pack, recognizer)


def index_size_for(calibration: Calibration, threshold: float) -> int | None:
    """The index size whose ``default_threshold`` is ``threshold`` (about: thresholds are
    rounded to 0.001); None below BASE_THRESHOLD or for an uncalibrated pack."""
    rate = calibration.false_match_rate(threshold)
    if threshold < BASE_THRESHOLD or not rate:
        return None
    return max(1, int(EXPECTED_STRANGERS_PER_FACE / rate))
