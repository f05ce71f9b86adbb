"""One search across every index served: the selfie is embedded once (by an engine replica),
then each index is searched with that vector without holding any engine, and the results are
merged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from faceaudit.imaging import decode_image
from faceaudit.indexer.search import Match, selfie_face
from faceaudit.models.engine import FaceEngine
from faceaudit.removals import RemovalStore, visible, widen
from faceaudit.service.catalog import IndexGroup
from faceaudit.service.settings import ServiceSettings


@dataclass(frozen=True)
class Found:
    """A match and the slot of the index it is from."""

    slot: int
    match: Match


def embed_selfie(engine: FaceEngine, selfie: bytes, settings: ServiceSettings
                 ) -> NDArray[np.float32]:
    """The embedding of the selfie's one face. Decoded here, while the search holds an engine,
    so that searches waiting for one hold only their upload's bytes, not its pixels."""
    decoded = decode_image(selfie, max_pixels=settings.max_upload_pixels,
                           max_side=settings.selfie_max_side)
    face = selfie_face(engine, decoded)
    return engine.embed(decoded, [face], flip=True)[0]


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
