"""The search result as one JSON-ready object, shared by `search --json` and the HTTP API."""

from __future__ import annotations

from typing import Any

from faceaudit.indexer.search import FaceIndex, Match
from faceaudit.models.calibration import Calibration

# Wide enough for the page's strictness slider (0.20 to 0.90).
GUIDE_THRESHOLDS = [round(0.20 + 0.05 * i, 2) for i in range(15)]


def search_response(index: FaceIndex, matches: list[Match], threshold: float,
                    calibration: Calibration, default_threshold: float | None = None
                    ) -> dict[str, Any]:
    """``expected_false_matches``: how many faces of other people an index of this size is
    expected to return at this threshold (index faces x the pack's calibrated false-match
    rate); null for an uncalibrated pack. ``strength`` per match: "strong" or "possible".
    ``default_threshold``: what a search naming none uses (default: the calibrated one)."""
    return {
        "faces_in_selfie": 1,
        "threshold": threshold,
        "model_pack": index.model_pack,
        "index_size": index.size,
        "index_images": len(index.images),
        "dataset": index.dataset,
        "expected_false_matches": calibration.guide(index.size, [threshold])[0][
            "expected_false_matches"],
        "calibrated": calibration.calibrated,
        "default_threshold": (calibration.threshold if default_threshold is None
                              else default_threshold),
        "threshold_guide": calibration.guide(index.size, GUIDE_THRESHOLDS),
        "matches": [
            {"image": m.image, "image_key": m.record.key, "face_id": str(m.face_id),
             "score": m.score, "bbox": list(m.bbox),
             "strength": calibration.strength(m.score, index.size),
             "provenance": m.record.provenance()}
            for m in matches
        ],
    }
