"""Confirmed matches: the photos a person ticked "this is me" in an answer, named by their
match ids, whose faces join the selfies' template in the next search.

The faces' embeddings are read from the index (an embedding never comes from the client), and
each must score at or above the selfies' own default threshold against the selfies' template
alone: a confirmation can name only a face the selfies found, so confirming adds no reach
beyond what the selfies showed, and a chain of confirmations cannot walk to someone else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError
from faceaudit.removals import InvalidMatchId, MatchIds, RemovalStore
from faceaudit.service.catalog import IndexGroup
from faceaudit.service.errors import STATUS

CONFIRMED_FIELD = "confirmed"


class ConfirmationRefused(FaceAuditError):
    """A confirmed match that cannot join the template: removed, not found by the selfies, or
    sent where the service issues no match ids."""

    code = "confirmation_refused"


STATUS.update({ConfirmationRefused: 422})

@dataclass(frozen=True)
class Confirmed:
    """A confirmed face: its place in the form (1 for the first ``confirmed`` sent), and
    where it is (the index's slot in the group, the photo's and the face's rows)."""

    number: int
    slot: int
    image_row: int
    face_row: int


def open_confirmed(group: IndexGroup, match_ids: MatchIds | None,
                   removals: RemovalStore | None, ids: Sequence[str]) -> list[Confirmed]:
    """The faces that the match ids ``ids`` name, each once (the first time it is named), in
    whichever index of ``group`` each was issued for. InvalidMatchId (expired, forged, of an
    earlier index) or ConfirmationRefused (a face whose removal was requested; a service with
    removals off, which issues no match ids), naming the confirmed photo."""
    if not ids:
        return []
    if match_ids is None:
        raise ConfirmationRefused(
            "This service issues no match ids (its removal requests are off), so no photo can "
            "be confirmed: search with your selfies only.")
    found: dict[tuple[int, int], Confirmed] = {}
    suppressed = {slot: removals.suppressed(published.index.dataset)
                  for slot, published in enumerate(group.published)} if removals else {}
    for number, match_id in enumerate(ids, start=1):
        slot, (image_row, face_row) = _open(group, match_ids, match_id, number)
        index = group.published[slot].index
        face = (index.images[image_row].key, int(index.faces.face_id[face_row]))
        if face in suppressed.get(slot, frozenset()):
            raise ConfirmationRefused(
                f"Confirmed photo {number}: its removal was requested, so it is no longer "
                "searched, nor searched with. Untick it and search again.")
        found.setdefault((slot, face_row), Confirmed(number, slot, image_row, face_row))
    return list(found.values())


def _open(group: IndexGroup, match_ids: MatchIds, match_id: str, number: int
          ) -> tuple[int, tuple[int, int]]:
    """(slot, (image row, face row)) of a match id: each id names the index it was issued
    for, so at most one of the group accepts it."""
    refused: InvalidMatchId | None = None
    for slot, published in enumerate(group.published):
        try:
            return slot, match_ids.open(published.index, match_id)
        except InvalidMatchId as error:
            refused = error
    assert refused is not None  # a service serves at least one index
    raise type(refused)(f"Confirmed photo {number}: {refused.message}") from None


def confirmed_vectors(group: IndexGroup, confirmed: Sequence[Confirmed]
                      ) -> NDArray[np.float32]:
    """The stored embeddings of the confirmed faces (len(confirmed) x d), from the indexes."""
    if not confirmed:
        return np.empty((0, 0), np.float32)
    return np.concatenate([group.published[c.slot].index.face_vectors([c.face_row])
                           for c in confirmed])


def admit_confirmed(confirmed: Sequence[Confirmed], vectors: NDArray[np.float32],
                    selfies_template: NDArray[np.float32], selfies_threshold: float,
                    room: int) -> list[int]:
    """Positions (in ``confirmed``) of the faces that join the template: every confirmed face
    must score at or above ``selfies_threshold`` (the selfies' default threshold) against
    ``selfies_template`` (else ConfirmationRefused, naming the first that does not); of them
    the ``room`` that score highest join, in that order."""
    if not confirmed:
        return []
    scores = vectors @ np.asarray(selfies_template, dtype=np.float32)
    for item, score in zip(confirmed, scores.tolist(), strict=True):
        if score < selfies_threshold:
            raise ConfirmationRefused(
                f"Confirmed photo {item.number} is not one your selfies found at this "
                f"service's default threshold ({selfies_threshold:g}): only photos your "
                "selfies find can be confirmed. Untick it, or search with your selfies first.")
    order = sorted(range(len(confirmed)), key=lambda i: (-scores[i], confirmed[i].number))
    return order[:max(0, room)]
