"""The eval's ``templates`` section: false-match curves of templates of 1 to 5 faces (selfies
only, and selfies with confirmed faces) checked on held-out people, the "same person" level
between two selfies, and recall at the default threshold for 10^4, 10^6 and 10^8 faces with
1, 2, 3 and 5 selfies, with and without automatic expansion.

Everything is seeded and bounded: at most ``PER_PERSON`` templates per person for K > 1 (every
one-face photo for K = 1) and ``MAX_TEMPLATES`` per kind, ``MAX_SELFIE_PAIRS_FROM`` selfies for
the same-person level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.models.calibration import Calibration
from faceaudit.models.template_tails import CONFIRMED, SELFIES, TemplateCalibration, TemplateTail
from faceaudit.models.thresholds import EXPAND_JOIN_EXPECTED, MAX_TEMPLATE_FACES, THRESHOLD_STEP
from faceaudit.research.evaluation.dataset import Dataset, ExtractedFaces
from faceaudit.research.evaluation.template_fits import SPLITS, counts_behind, template_tail
from faceaudit.research.evaluation.templates import (
    FaceTable,
    Templates,
    best_scores,
    draw_confirmed,
    draw_selfies,
    face_table,
    impostors,
    label_errors,
    unit,
)

FUSION = "plain mean of the faces' unit vectors, renormalised"
PER_PERSON = 20
MAX_TEMPLATES = 4000
SEED = 15
SIZES = (10**4, 10**6, 10**8)
RECALL_SELFIES = (1, 2, 3, 5)
# The same-person level: different people's selfie pairs exceed it at this rate.
PAIR_FMR = 1e-3
MAX_SELFIE_PAIRS_FROM = 4000
# Automatic expansion joins the faces above the level where fewer than this many strangers are
# expected in the whole index (issue 15: "very likely you").
JOIN_EXPECTED = EXPAND_JOIN_EXPECTED
# Two identities are one person when two of their labelled faces score where fewer than this
# many impostor pairs are expected among all the labelled pairs (a label error, not a stranger).
LABEL_ERROR_EXPECTED = 1.0
# The group the goal is stated for: people with 6 to 40 photos.
GROUP = (6, 40)


@dataclass(frozen=True)
class TemplatesReport:
    fitted: dict[str, Any]
    same_person: dict[str, Any] | None
    tails: list[dict[str, Any]]  # TemplateTail fields, plus the counts behind the tail
    recall: list[dict[str, Any]]
    thresholds_from: str
    not_fitted: list[str] = field(default_factory=list)


def same_person_level(table: FaceTable, same_person: NDArray[np.bool_],
                      pair_fmr: float = PAIR_FMR) -> dict[str, Any] | None:
    """The score that pairs of different people's selfies exceed at ``pair_fmr`` (rounded up
    to the threshold step), and the share of one person's selfie pairs it refuses."""
    rows = np.flatnonzero(table.selfie_row >= 0)
    if len(rows) > MAX_SELFIE_PAIRS_FROM:
        rows = np.sort(np.random.default_rng(SEED).choice(rows, MAX_SELFIE_PAIRS_FROM,
                                                          replace=False))
    vectors = table.selfie[table.selfie_row[rows]]
    person = table.photo_identity[rows]
    scores = vectors @ vectors.T
    upper = np.triu(np.ones(scores.shape, bool), 1)
    same = person[:, None] == person[None, :]
    alias = same_person[person][:, person] & ~same
    genuine, impostor = scores[upper & same], scores[upper & ~same & ~alias]
    allowed = math.floor(pair_fmr * len(impostor) + 1e-9)
    if len(impostor) == 0 or allowed == 0:
        return None
    highest = float(np.partition(impostor, len(impostor) - 1 - allowed)[-1 - allowed])
    level = round(math.ceil(highest / THRESHOLD_STEP - 1e-9) * THRESHOLD_STEP, 6)
    return {"level": level, "pair_fmr": pair_fmr, "different_person_pairs": len(impostor),
            "same_person_pairs": len(genuine),
            "same_person_refused": float((genuine <= level).mean()) if len(genuine) else None,
            "selfies": len(rows)}


def _recall(table: FaceTable, templates: Templates, found: NDArray[np.bool_],
            people: set[int] | None) -> tuple[float | None, int]:
    """Mean over people of their templates' mean share of other photos found."""
    photos_of = table.photos_of()
    per_person: dict[int, list[float]] = {}
    for row, who in enumerate(templates.person.tolist()):
        if people is not None and who not in people:
            continue
        others = np.setdiff1d(photos_of[who], templates.photos[row])
        if len(others):
            per_person.setdefault(who, []).append(float(found[row, others].mean()))
    if not per_person:
        return None, 0
    return float(np.mean([np.mean(v) for v in per_person.values()])), len(per_person)


def _top(scores: NDArray[np.float32], allowed: NDArray[np.bool_], most: int) -> NDArray[np.bool_]:
    """Each row's ``most`` best allowed columns."""
    keep = np.zeros(allowed.shape, bool)
    if most <= 0:
        return keep
    ranked = np.where(allowed, scores, -np.inf)
    best = np.argsort(-ranked, axis=1)[:, :most]
    np.put_along_axis(keep, best, True, axis=1)
    return keep & allowed


def _recall_rows(table: FaceTable, templates: Templates, k: int, calibration: Calibration,
                 same: NDArray[np.bool_]) -> list[dict[str, Any]]:
    """Recall at the default for each index size, without and with expansion: faces above
    the level of JOIN_EXPECTED strangers join the template (its best, up to the template cap),
    which searches again at the default of a template with that many confirmed faces; its
    answer keeps the first pass's faces above the join level."""
    best = best_scores(table, templates.vectors)
    face_scores = templates.vectors @ table.plain.T
    own_photo = np.zeros(face_scores.shape, bool)
    for column in templates.photos.T:
        own_photo |= table.photo[None, :] == column[:, None]
    group = {p for p, photos in enumerate(table.photos_of())
             if GROUP[0] <= len(photos) <= GROUP[1]}
    selfie_sum = table.selfie[table.selfie_row[templates.photos]].sum(axis=1)
    single = calibration.for_template(k)
    rows = []
    for size in SIZES:
        default = single.operating_threshold(size)
        found = best > default
        row: dict[str, Any] = {"faces": size, "selfies": k, "default": default}
        row["recall"], row["people"] = _recall(table, templates, found, None)
        row["recall_6_40"], row["people_6_40"] = _recall(table, templates, found, group)
        join = single.threshold_for(size, JOIN_EXPECTED)
        if join is None:
            row["expanded"] = None
            rows.append(row)
            continue
        joined = _top(face_scores, (face_scores > join) & ~own_photo, MAX_TEMPLATE_FACES - k)
        count = joined.sum(axis=1)
        grown = unit(selfie_sum + joined.astype(np.float32) @ table.plain)
        again = best_scores(table, grown)
        by_count = {int(c): calibration.for_template(k, int(c)).operating_threshold(size)
                    for c in np.unique(count)}
        limits = np.array([by_count[int(c)] for c in count])
        expanded = np.where(count[:, None] > 0,
                            (again > limits[:, None]) | (best > join), found)
        stranger = joined & ~same[templates.person][:, table.photo_identity[table.photo]] \
            & table.labelled[None, :]
        row["expanded"] = {
            "join_above": join,
            "grew": float((count > 0).mean()) if len(count) else None,
            "joined_mean": float(count.mean()) if len(count) else None,
            "joined_labelled_strangers": int(stranger.sum()),
            "default_max": float(limits.max()) if len(limits) else None,
        }
        row["expanded"]["recall"], _ = _recall(table, templates, expanded, None)
        row["expanded"]["recall_6_40"], _ = _recall(table, templates, expanded, group)
        rows.append(row)
    return rows


def template_report(dataset: Dataset, extracted: Mapping[str, ExtractedFaces],
                    base: Calibration, thresholds_from: str, splits: int = SPLITS
                    ) -> TemplatesReport:
    """Fit every template kind's curve on this dataset and measure recall with them, the
    thresholds read from ``base`` (the one-photo calibration) plus these curves."""
    return table_report(face_table(dataset, extracted), base, thresholds_from, splits)


def table_report(table: FaceTable, base: Calibration, thresholds_from: str,
                 splits: int = SPLITS) -> TemplatesReport:
    """``template_report`` on faces already tabled; ``splits``: halvings of the people for
    the held-out check of each curve."""
    labelled = int((table.labelled_row >= 0).sum())
    error_level = (base.threshold_for(max(1, labelled * (labelled - 1) // 2),
                                      LABEL_ERROR_EXPECTED) if base.calibrated else None)
    same = label_errors(table, error_level)
    curves: list[TemplateTail] = []
    counts: dict[tuple[str, int], list[dict[str, float]]] = {}
    kept: dict[int, Templates] = {}
    not_fitted: list[str] = []
    kinds = [(SELFIES, k) for k in range(1, MAX_TEMPLATE_FACES + 1)]
    kinds += [(CONFIRMED, n) for n in range(2, MAX_TEMPLATE_FACES + 1)]
    for kind, faces in kinds:
        if kind == SELFIES:
            templates = draw_selfies(table, faces, None if faces == 1 else PER_PERSON,
                                     SEED + faces, MAX_TEMPLATES)
        else:
            templates = draw_confirmed(table, faces, PER_PERSON, SEED + 10 + faces,
                                       MAX_TEMPLATES, join_above=base.threshold)
        if kind == SELFIES and faces in RECALL_SELFIES and len(templates):
            kept[faces] = templates
        found = impostors(table, templates, same)
        try:
            curve = template_tail(kind, faces, found, table.people, splits)
        except ValueError as error:
            not_fitted.append(f"{kind} {faces}: {error}")
            continue
        curves.append(curve)
        counts[(kind, faces)] = counts_behind(curve, found.values())
    pair_level = same_person_level(table, same)
    calibration = base
    if curves and pair_level is not None:
        calibration = replace(base, templates=TemplateCalibration(
            same_person_threshold=pair_level["level"], tails=curves))
    recall = [row for k, templates in sorted(kept.items())
              for row in _recall_rows(table, templates, k, calibration, same)]
    return TemplatesReport(
        fitted={"data": {"photos": table.photos, "faces": len(table.photo),
                         "one_face_photos": int((table.selfie_row >= 0).sum()),
                         "people": table.people},
                "fusion": FUSION, "per_person": PER_PERSON, "max_templates": MAX_TEMPLATES,
                "seed": SEED, "confirmed_join_above": base.threshold,
                "impostors": "a template against the labelled face of every photo of another "
                             "identity", "expansion_joins_below": JOIN_EXPECTED,
                "label_errors": {"above": error_level,
                                 "identity_pairs": int(np.triu(same, 1).sum())}},
        same_person=pair_level,
        tails=[{**asdict(c), "counts": counts[(c.kind, c.faces)]} for c in curves],
        recall=recall, thresholds_from=thresholds_from, not_fitted=not_fitted)

