"""The search result as one JSON-ready object, shared by `search --json` and the HTTP API, and
the limits every search is held to (no browsing)."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, Protocol

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.search import Match
from faceaudit.models.calibration import Calibration
from faceaudit.models.thresholds import MEANING

# Wide enough for the page's strictness slider (0.20 to 0.90).
GUIDE_THRESHOLDS = [round(0.20 + 0.05 * i, 2) for i in range(15)]


class SearchRefused(FaceAuditError):
    """A search asked for what faceaudit does not run: a threshold below the index's floor or
    more photos than the cap. The message says what to ask for instead."""

    code = "search_refused"


def check_search(calibration: Calibration, index_faces: int, threshold: float, top: int | None,
                 *, max_expected: float, max_results: int,
                 allow_low_threshold: bool = False) -> None:
    """Raise SearchRefused when ``threshold`` is not in (0, 1] or ``top`` under 1, or (unless
    ``allow_low_threshold``, for researchers) when ``threshold`` is below
    ``calibration.min_threshold`` for an index of this size (more than ``max_expected``
    strangers per search expected) or ``top`` is over ``max_results``: the command line's
    bounds, for operators and researchers. The HTTP API is stricter: it never searches below
    the default threshold (faceaudit.service.api.default_threshold)."""
    if not 0 < threshold <= 1:
        raise SearchRefused(f"threshold {threshold:g}: a threshold is a similarity in (0, 1].")
    if top is not None and top < 1:
        raise SearchRefused(f"top {top}: ask for at least 1 photo.")
    if allow_low_threshold:
        return
    floor = calibration.min_threshold(index_faces, max_expected)
    if threshold < floor:
        expected = calibration.expected_false_matches(threshold, index_faces)
        why = ("the model pack is not calibrated, so nothing says how many strangers a lower "
               "one shows" if expected is None else
               f"about {expected:.3g} faces of other people per search are expected at "
               f"{threshold:g} in an index of {index_faces:,} faces, more than {max_expected:g}")
        raise SearchRefused(f"threshold {threshold:g} is below this index's floor {floor:g}: "
                            f"{why}. Use a threshold of at least {floor:g}.")
    if top is not None and top > max_results:
        raise SearchRefused(f"top {top} is over the {max_results} photos a search returns at "
                            "most.")


class Searched(Protocol):
    """What a result says about what was searched: a FaceIndex, or the service's several
    indexes searched as one."""

    @property
    def size(self) -> int: ...
    @property
    def images(self) -> Sized: ...
    @property
    def model_pack(self) -> str: ...
    @property
    def dataset(self) -> str: ...


def search_response(index: Searched, matches: list[Match], threshold: float,
                    calibration: Calibration, default_threshold: float | None = None, *,
                    min_threshold: float | None = None, threshold_requested: float | None = None,
                    operator: bool = False) -> dict[str, Any]:
    """``expected_false_matches``: how many faces of other people an index of this size is
    expected to return at this threshold (index faces x the pack's calibrated false-match
    rate); null for an uncalibrated pack. Per match, ``strength`` ("strong" or "possible")
    and its ``meaning`` in plain words. ``default_threshold``: what a search naming none
    uses (default: the pack's operating threshold at this index's size); ``min_threshold``:
    the lowest one a search may use (default: the pack's floor for one stranger per search,
    the command line's; the HTTP API passes its default threshold); ``threshold_requested``:
    what the search asked for, when it named one (``threshold_clamped`` says whether it was
    raised to ``threshold``).

    A match names its photo by the dataset's identifiers (``image_key``, and the provenance's
    photo id, URLs and SHA-256), never by where it is on disk: in a dataset organised by
    identity (LFW's ``Firstname_Lastname/...``) the path names the person pictured, and a
    "possible" match may be a stranger. ``operator`` (the command line, run by whoever holds
    the dataset) adds the path, ``image``, and ``provenance.source_record``."""
    return {
        "faces_in_selfie": 1,
        "threshold": threshold,
        "threshold_requested": threshold_requested,
        "threshold_clamped": threshold_requested is not None and threshold_requested < threshold,
        "min_threshold": (calibration.min_threshold(index.size) if min_threshold is None
                          else min_threshold),
        "model_pack": index.model_pack,
        "index_size": index.size,
        "index_images": len(index.images),
        "dataset": index.dataset,
        "expected_false_matches": calibration.guide(index.size, [threshold])[0][
            "expected_false_matches"],
        "calibrated": calibration.calibrated,
        "default_threshold": (calibration.operating_threshold(index.size)
                              if default_threshold is None else default_threshold),
        "threshold_guide": calibration.guide(index.size, GUIDE_THRESHOLDS),
        "matches": [_match(m, calibration.strength(m.score, index.size), operator)
                    for m in matches],
    }


# Where a photo is in the dataset: a path, which can name the person pictured.
OPERATOR_PROVENANCE = ("source_record",)


def _match(match: Match, strength: str, operator: bool) -> dict[str, Any]:
    provenance = match.record.provenance()
    if not operator:
        for name in OPERATOR_PROVENANCE:
            del provenance[name]
    return {**({"image": match.image} if operator else {}), "image_key": match.record.key,
            "face_id": str(match.face_id), "score": match.score, "bbox": list(match.bbox),
            "strength": strength, "meaning": MEANING[strength], "provenance": provenance}
