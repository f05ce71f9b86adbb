"""Batch search for a consenting cohort: per participant one selfie (an image file named by the
participant id) or up to MAX_SELFIES selfies of them (a folder named by the participant id),
searched in one or more indexes under the same limits as the service, results as rows for a
researcher.

Each selfie is decoded, its one face found and embedded in memory, a participant's several
selfies checked to show one person and fused into one template, searched in every index and
dropped: nothing about them is written but the result rows (no embedding, no crop). The
limits are those of the HTTP API, which searches several indexes as one: the default
threshold and the floor follow the indexes' combined size (so searching more datasets does
not loosen the bound on strangers per participant) and the template searched (a template of
several selfies has its own, higher, default), a requested threshold below that floor is
refused (unless ``allow_low_threshold``, researchers only), at most ``MAX_RESULTS`` photos per
participant in all the indexes together, best first, and the faces whose removal was requested
left out (with a state folder).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError, MultipleFaces
from faceaudit.imaging import decode_image
from faceaudit.indexer.expansion import expand_search
from faceaudit.indexer.results import check_search
from faceaudit.indexer.search import FaceIndex, Match, selfies_template
from faceaudit.models.engine import FaceEngine
from faceaudit.models.thresholds import (
    MAX_EXPECTED_STRANGERS,
    MAX_RESULTS,
    MEANING,
)
from faceaudit.removals import suppressed_faces, visible, widen
from faceaudit.research.cohort_selfies import naming_file, participant_selfies

RESULT_COLUMNS = ("participant", "dataset", "photo_id", "image", "image_key", "page_url",
                  "image_url", "licence_name", "licence_url", "score", "strength", "meaning",
                  "threshold", "sha256", "expanded")
SUMMARY_COLUMNS = ("participant", "status", "reason", "photos_found", "strong", "possible",
                   "datasets_found", "photos_in_several_datasets", "capped_in", "selfies",
                   "threshold", "expanded")
OK = "ok"
DUPLICATE = "duplicate_participant"


@dataclass(frozen=True)
class CohortIndex:
    """An index to search, with the threshold and cap every participant's search uses (the
    same for every index: those of their combined size; ``threshold`` is that of one selfie,
    ``requested`` the one asked for, None for the default of each participant's template)
    and the faces left out for removal requests."""

    index: FaceIndex
    threshold: float
    top: int | None
    hidden: frozenset[tuple[str, int]] = frozenset()
    requested: float | None = None
    allow_low_threshold: bool = False


@dataclass(frozen=True)
class ParticipantResult:
    """What one participant's selfie found: ``status`` "ok" or the error's code (then
    ``reason`` says what went wrong and ``rows`` is empty); ``capped_in``: the datasets where
    the search returned the most it may (there may be more photos); ``selfies``: how many
    selfies were searched as one template, at ``threshold``; ``expanded``: faces that joined
    a one-selfie template automatically (faceaudit.indexer.expansion)."""

    participant: str
    status: str
    reason: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    capped_in: list[str] = field(default_factory=list)
    selfies: int = 0
    threshold: float | None = None
    expanded: int = 0


def open_indexes(engine: FaceEngine, folders: Sequence[Path], *, threshold: float | None,
                 top: int | None, allow_low_threshold: bool, state_dir: Path | None
                 ) -> list[CohortIndex]:
    """Every index, checked before any selfie is read: built with ``engine``'s model pack,
    and ``threshold`` (default: the operating threshold for the indexes' combined size) and
    ``top`` (default: MAX_RESULTS, for all the indexes together) within what the service
    allows a search of these indexes (SearchRefused)."""
    if not folders:
        raise FaceAuditError("Name at least one index to search: --index INDEX_DIR.")
    if top is None and not allow_low_threshold:
        top = MAX_RESULTS
    indexes = [FaceIndex(folder) for folder in folders]
    for index in indexes:
        index.check_engine(engine)
    # As the service: a participant's search of several indexes is one search of all their
    # faces, held to the bound on strangers that one index of that size would be.
    combined = sum(index.size for index in indexes)
    chosen = (engine.calibration.operating_threshold(combined) if threshold is None
              else threshold)
    check_search(engine.calibration, combined, chosen, top,
                 max_expected=MAX_EXPECTED_STRANGERS, max_results=MAX_RESULTS,
                 allow_low_threshold=allow_low_threshold)
    return [CohortIndex(index, chosen, top,
                        suppressed_faces(state_dir, index.dataset) if state_dir is not None
                        else frozenset(), threshold, allow_low_threshold)
            for index in indexes]


def template_threshold(engine: FaceEngine, indexes: Sequence[CohortIndex], selfies: int
                       ) -> float:
    """The threshold a participant with ``selfies`` selfies is searched at: the one asked
    for, else the default of a template of that many selfies at the indexes' combined size;
    SearchRefused when the one asked for is below that template's floor (unless allowed)."""
    target = indexes[0]
    if selfies == 1:
        return target.threshold
    combined = sum(t.index.size for t in indexes)
    calibration = engine.calibration.for_template(selfies)
    if target.requested is None:
        return calibration.operating_threshold(combined)
    check_search(calibration, combined, target.requested, target.top,
                 max_expected=MAX_EXPECTED_STRANGERS, max_results=MAX_RESULTS,
                 allow_low_threshold=target.allow_low_threshold)
    return target.requested


def search_participant(engine: FaceEngine, participant: str, selfie: Path,
                       indexes: Sequence[CohortIndex], expand: bool = True
                       ) -> ParticipantResult:
    """One participant's selfie (or the template of their folder of selfies) searched in every
    index; selfies that cannot be searched (unreadable, no face, several faces, a face too
    small, different people, a threshold under their template's floor) are a result with
    its reason, naming the selfie when there are several. One selfie searched at or above
    the default is expanded automatically unless ``expand`` is false."""
    paths: list[Path] = []
    try:
        paths = participant_selfies(participant, selfie)
        images = [decode_image(path, name=f"The selfie {path.name} of {participant}")
                  for path in paths]
        vector = selfies_template(engine, images)
        threshold = template_threshold(engine, indexes, len(paths))
    except MultipleFaces as error:
        where = f"selfie {error.selfie}: " if error.selfie else ""
        return ParticipantResult(participant, error.code,
                                 f"{where}{error.count} faces in the selfie")
    except FaceAuditError as error:
        return ParticipantResult(participant, error.code, naming_file(error, paths))
    calibration = engine.calibration.for_template(len(paths))
    combined = sum(target.index.size for target in indexes)
    capped: set[str] = set()  # datasets that may hold more photos than those listed

    def search_all(template: NDArray[np.float32], at: float) -> list[Hit]:
        found, full = _search_indexes(indexes, template, at)
        capped.update(full)
        return found

    found = search_all(vector, threshold)
    marks = [False] * len(found)
    joined = 0
    # Never below the floor that an allowed lower threshold already left.
    if expand and len(paths) == 1 and threshold >= calibration.operating_threshold(combined):
        grown = expand_search(
            vector, found, score=lambda hit: hit[2].score,
            key=lambda hit: (hit[0], hit[2].image_id),
            face_vectors=lambda hits: np.concatenate(
                [hit[1].index.face_vectors([hit[2].face]) for hit in hits]),
            search=search_all, calibration=engine.calibration, index_faces=combined,
            default_for=lambda c: c.operating_threshold(combined),
            threshold=threshold, top=indexes[0].top)
        if grown is not None:
            found = [hit for hit, _ in grown.found]
            marks = [mark for _, mark in grown.found]
            calibration, threshold, joined = grown.calibration, grown.threshold, grown.joined
    rows: list[dict[str, Any]] = []
    for (_, target, match), mark in zip(found, marks, strict=True):
        index = target.index
        provenance = match.record.provenance()
        strength = calibration.strength(match.score, combined)
        rows.append({
            "participant": participant,
            "dataset": provenance["dataset"] or index.dataset,
            "photo_id": provenance["photo_id"], "image": match.image,
            "image_key": match.record.key,
            "page_url": provenance["page_url"], "image_url": provenance["image_url"],
            "licence_name": provenance["licence_name"],
            "licence_url": provenance["licence_url"], "score": match.score,
            "strength": strength, "meaning": MEANING[strength],
            "threshold": threshold, "sha256": provenance["sha256"], "expanded": mark,
        })
    return ParticipantResult(participant, OK, None, rows,
                             [t.index.dataset for t in indexes if t.index.dataset in capped],
                             len(paths), threshold, joined)


Hit = tuple[int, CohortIndex, Match]


def _search_indexes(indexes: Sequence[CohortIndex], vector: NDArray[np.float32],
                    threshold: float) -> tuple[list[Hit], set[str]]:
    """The photos of every index with a face scoring above ``threshold``, best first, at most
    ``top`` in all, removed faces left out; and the datasets that may hold more."""
    found: list[Hit] = []
    capped: set[str] = set()
    for slot, target in enumerate(indexes):
        matches = visible(target.index.search(vector, threshold,
                                              widen(target.top, target.hidden)),
                          target.hidden, target.top)
        if target.top is not None and len(matches) >= target.top:
            capped.add(target.index.dataset)
        found += [(slot, target, match) for match in matches]
    found.sort(key=lambda item: (-item[2].score, item[0], item[2].image_id))
    top = indexes[0].top if indexes else None
    if top is not None:  # at most top photos in all, as the service's one search returns
        capped.update(target.index.dataset for _, target, _ in found[top:])
        found = found[:top]
    return found, capped


def run_cohort(engine: FaceEngine, selfies: Sequence[tuple[str, Path]],
               indexes: Sequence[CohortIndex],
               progress: Callable[[int, int], None] | None = None, expand: bool = True
               ) -> list[ParticipantResult]:
    """Every participant's search, in order. A participant id given twice (``a.jpg`` and
    ``a.png``) is searched once, and the second selfie reported as a duplicate."""
    results, seen = [], set()
    for done, (participant, selfie) in enumerate(selfies, start=1):
        if participant in seen:
            results.append(ParticipantResult(
                participant, DUPLICATE, f"a second selfie for this participant ({selfie.name}) "
                "was not searched: rename it or remove it"))
        else:
            seen.add(participant)
            results.append(search_participant(engine, participant, selfie, indexes, expand))
        if progress:
            progress(done, len(selfies))
    return results


def _shared_photos(rows: Sequence[dict[str, Any]]) -> set[str]:
    """SHA-256 of the photos among ``rows`` found in more than one dataset."""
    datasets: dict[str, set[str]] = {}
    for row in rows:
        if row["sha256"]:
            datasets.setdefault(row["sha256"], set()).add(row["dataset"])
    return {digest for digest, names in datasets.items() if len(names) > 1}


def summary_rows(results: Sequence[ParticipantResult]) -> list[dict[str, Any]]:
    """One row per participant: status and reason, photos found (strong / possible), the
    datasets they were found in, photos found in several datasets (same SHA-256)."""
    rows = []
    for result in results:
        strengths = Counter(row["strength"] for row in result.rows)
        datasets = sorted({row["dataset"] for row in result.rows})
        rows.append({
            "participant": result.participant, "status": result.status,
            "reason": result.reason or "", "photos_found": len(result.rows),
            "strong": strengths["strong"], "possible": strengths["possible"],
            "datasets_found": ";".join(datasets),
            "photos_in_several_datasets": len(_shared_photos(result.rows)),
            "capped_in": ";".join(result.capped_in),
            "selfies": result.selfies or "", "threshold": result.threshold or "",
            "expanded": result.expanded,
        })
    return rows


def cohort_totals(results: Sequence[ParticipantResult]) -> dict[str, Any]:
    """Counts over the cohort: participants, searched, found in at least one photo, photos
    found, datasets, distinct photos found in more than one dataset, failures by status,
    participants whose one-selfie search was expanded."""
    rows = [row for result in results for row in result.rows]
    return {
        "participants": len(results),
        "searched": sum(1 for r in results if r.status == OK),
        "found": sum(1 for r in results if r.rows),
        "photos_found": len(rows),
        "datasets": sorted({row["dataset"] for row in rows}),
        "photos_in_several_datasets": len(_shared_photos(rows)),
        "errors": dict(Counter(r.status for r in results if r.status != OK)),
        "expanded": sum(1 for r in results if r.expanded),
    }


def summary_path(out: Path) -> Path:
    """``results.csv`` -> ``results.summary.csv``."""
    return out.with_name(f"{out.stem}.summary{out.suffix or '.csv'}")


def write_cohort(results: Sequence[ParticipantResult], out: Path) -> tuple[Path, Path]:
    """The result rows to ``out`` and the per-participant summary beside it (CSV, UTF-8)."""
    summary = summary_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, RESULT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(row for result in results for row in result.rows)
    with open(summary, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary_rows(results))
    return out, summary
