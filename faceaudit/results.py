"""The search result as one JSON-ready object, shared by `search --json` and the HTTP API."""

from __future__ import annotations

from typing import Any

from faceaudit.indexer.search import FaceIndex, Match


def search_response(index: FaceIndex, matches: list[Match], threshold: float) -> dict[str, Any]:
    return {
        "faces_in_selfie": 1,
        "threshold": threshold,
        "model_pack": index.model_pack,
        "index_size": index.size,
        "matches": [
            {"image": m.image, "score": m.score, "bbox": list(m.bbox)} for m in matches
        ],
    }
