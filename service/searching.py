"""One search across every index served: the selfies are embedded (by an engine replica) and
fused into one template with the faces the person confirmed, then each index is searched with
it without holding any engine, and the results are merged.

The thresholds are those of the template searched: its default (and the public floor) comes
from the calibration of a template of that many selfies and confirmed faces
(``Calibration.for_template``), which never falls as a template grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError, about_selfie
from faceaudit.imaging import decode_image
from faceaudit.indexer.expansion import expand_search
from faceaudit.indexer.search import Match, selfie_vector
from faceaudit.models.calibration import Calibration
from faceaudit.models.engine import FaceEngine
from faceaudit.models.templates import fuse_template, same_person_template
from faceaudit.models.thresholds import MAX_TEMPLATE_FACES
from faceaudit.removals import RemovalStore, visible, widen
from faceaudit.service.catalog import IndexGroup
from faceaudit.service.confirmations import Confirmed, admit_confirmed, confirmed_vectors
from faceaudit.service.settings import ServiceSettings


@dataclass(frozen=True)
class Found:
    """A match and the slot of the index it is from. ``new``: a match that the selfies alone,
    at their own default threshold, would not have returned (only with confirmed faces).
    ``expanded``: a match found only by the second pass of an automatic expansion."""

    slot: int
    match: Match
    new: bool = False
    expanded: bool = False


@dataclass(frozen=True)
class TemplateSearch:
    """What a search found, and with what: ``calibration`` is that of the template searched,
    ``default`` its default threshold (the floor), ``threshold`` the one used;
    ``selfies_default``: the default of the selfies alone, which each confirmed face had to
    reach and against which ``Found.new`` is told; ``expanded``: faces that joined the
    template automatically (see faceaudit.indexer.expansion)."""

    found: list[Found]
    calibration: Calibration
    threshold: float
    default: float
    selfies: int
    confirmed: int = 0
    confirmed_sent: int = 0
    selfies_default: float = 0.0
    expanded: int = 0

    def template(self) -> dict[str, Any]:
        """The response's ``template``: how many selfies and confirmed faces it holds."""
        left_out = self.confirmed_sent - self.confirmed
        note = None
        if left_out:
            note = (f"{self.confirmed_sent} confirmed photos were sent; a search uses at most "
                    f"{MAX_TEMPLATE_FACES} faces, so the {self.confirmed} most like your "
                    f"selfies joined them and {left_out} did not.")
        return {"selfies": self.selfies, "confirmed": self.confirmed,
                "confirmed_sent": self.confirmed_sent, "max_faces": MAX_TEMPLATE_FACES,
                "selfies_default_threshold": self.selfies_default, "expanded": self.expanded,
                "note": note}


def default_threshold(calibration: Calibration, faces: int, settings: ServiceSettings
                      ) -> float:
    """The threshold a search of ``faces`` faces runs at with ``calibration`` (that of the
    template searched), and the lowest any search over HTTP may use: the operating threshold,
    where at most target_expected_strangers (0.1) faces of other people are expected per
    search; the operator's threshold instead when it is higher."""
    floor = calibration.operating_threshold(faces, settings.target_expected_strangers)
    return floor if settings.threshold is None else max(settings.threshold, floor)


def embed_selfie(engine: FaceEngine, selfie: bytes, settings: ServiceSettings
                 ) -> NDArray[np.float32]:
    """The embedding of the selfie's one face. Decoded here, while the search holds an engine,
    so that searches waiting for one hold only their upload's bytes, not its pixels."""
    decoded = decode_image(selfie, max_pixels=settings.max_upload_pixels,
                           max_side=settings.selfie_max_side)
    return selfie_vector(engine, decoded)


def embed_selfies(engine: FaceEngine, selfies: Sequence[bytes], settings: ServiceSettings
                  ) -> list[NDArray[np.float32]]:
    """Each selfie's embedding, one after the other; an error about one of several selfies
    names it ("Selfie 2: ...")."""
    vectors = []
    for number, selfie in enumerate(selfies, start=1):
        try:
            vectors.append(embed_selfie(engine, selfie, settings))
        except FaceAuditError as error:
            raise (about_selfie(error, number) if len(selfies) > 1 else error) from None
    return vectors


def search_group(group: IndexGroup, vector: NDArray[np.float32], threshold: float, top: int,
                 removals: RemovalStore | None) -> list[Found]:
    """The photos of every index of ``group`` with a face scoring above ``threshold``, without
    the faces removal requests named, best first, at most ``top`` in all."""
    found: list[Found] = []
    for slot, published in enumerate(group.published):
        index = published.index
        hidden: frozenset[tuple[str, int]] = (
            removals.suppressed(index.dataset) if removals is not None else frozenset())
        matches = index.search(vector, threshold, widen(top, hidden))
        found += [Found(slot, match) for match in visible(matches, hidden, top)]
    found.sort(key=lambda f: (-f.match.score, f.slot, f.match.image_id))
    return found[:top]


def search_template(group: IndexGroup, selfies: Sequence[NDArray[np.float32]],
                    confirmed: Sequence[Confirmed], requested: float | None, top: int,
                    calibration: Calibration, settings: ServiceSettings,
                    removals: RemovalStore | None) -> TemplateSearch:
    """Search ``group`` with the template of ``selfies`` (DifferentPeople unless they show one
    person) and of the ``confirmed`` faces that may join it (see
    ``confirmations.admit_confirmed``), at ``requested`` (None: the default), never below the
    default of the template searched."""
    count = len(selfies)
    selfies_template = same_person_template(selfies, calibration.same_person_threshold)
    selfies_default = default_threshold(calibration.for_template(count), group.size, settings)
    stored = confirmed_vectors(group, confirmed)
    joined = admit_confirmed(confirmed, stored, selfies_template, selfies_default,
                             MAX_TEMPLATE_FACES - count)
    template = (fuse_template([*selfies, *(stored[i] for i in joined)]) if joined
                else selfies_template)
    searched = calibration.for_template(count, len(joined))
    default = default_threshold(searched, group.size, settings)
    threshold = default if requested is None else max(requested, default)
    found = search_group(group, template, threshold, top, removals)
    if settings.expand and count == 1 and not confirmed:
        return _expanded(group, selfies_template, top, calibration, settings, removals,
                         TemplateSearch(found, searched, threshold, default, count,
                                        selfies_default=selfies_default))
    if joined:
        # "new": what the selfies alone, at their default, would not have returned
        before = {(f.slot, f.match.image_id)
                  for f in search_group(group, selfies_template, selfies_default, top, removals)}
        found = [Found(f.slot, f.match, (f.slot, f.match.image_id) not in before)
                 for f in found]
    return TemplateSearch(found, searched, threshold, default, count, len(joined),
                          len(confirmed), selfies_default)


def _expanded(group: IndexGroup, selfie: NDArray[np.float32], top: int,
              calibration: Calibration, settings: ServiceSettings,
              removals: RemovalStore | None, plain: TemplateSearch) -> TemplateSearch:
    """``plain`` (a one-selfie search without confirmed faces) with its automatic expansion,
    when a face joins (see faceaudit.indexer.expansion)."""
    grown = expand_search(
        selfie, plain.found, score=lambda f: f.match.score,
        key=lambda f: (f.slot, f.match.image_id),
        face_vectors=lambda items: np.concatenate(
            [group.published[f.slot].index.face_vectors([f.match.face]) for f in items]),
        search=lambda vector, threshold: search_group(group, vector, threshold, top, removals),
        calibration=calibration, index_faces=group.size,
        default_for=lambda c: default_threshold(c, group.size, settings),
        threshold=plain.threshold, top=top)
    if grown is None:
        return plain
    found = [Found(f.slot, f.match, expanded=only_second) for f, only_second in grown.found]
    return replace(plain, found=found, calibration=grown.calibration,
                   threshold=grown.threshold, default=grown.default, expanded=grown.joined)
