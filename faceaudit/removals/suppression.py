"""The faces removal requests name, left out of searches and builds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from faceaudit.indexer.search import FaceIndex, Match
from faceaudit.removals.store import PHOTO_FIELDS, RemovedPhoto, open_state


def suppressed_faces(state_dir: Path, dataset: str) -> frozenset[tuple[str, int]]:
    """(image key, stable face id) of the faces of ``dataset`` that removal requests name."""
    return open_state(state_dir).suppressed(dataset)


def suppressed_face_ids(state_dir: Path, dataset: str) -> set[int]:
    """The stable ids of the faces of ``dataset`` that removal requests name: the indexer
    leaves them out of the next build."""
    return {face for _, face in suppressed_faces(state_dir, dataset)}


def visible(matches: Sequence[Match], suppressed: frozenset[tuple[str, int]],
            top: int | None = None) -> list[Match]:
    """``matches`` without those whose face is suppressed, at most ``top``. Search with
    ``top + len(suppressed)`` (``widen``) so that ``top`` remain when there are that many."""
    kept = [m for m in matches if (m.record.key, m.face_id) not in suppressed]
    return kept if top is None else kept[:top]


def widen(top: int | None, suppressed: frozenset[tuple[str, int]]) -> int | None:
    """How many matches to ask for so that ``top`` remain once suppressed faces are dropped:
    each suppressed face removes at most one match."""
    return None if top is None else top + len(suppressed)


def linked_face_removed(index: FaceIndex, image_id: int, face: int,
                        suppressed: frozenset[tuple[str, int]]) -> bool:
    """Whether the face at row ``face`` of photo ``image_id`` (what a thumbnail link names)
    is one a removal request named. False for rows the index does not have (the link is then
    refused for that)."""
    if not 0 <= face < index.size or int(index.faces.image_id[face]) != image_id:
        return False
    return (index.images[image_id].key, int(index.faces.face_id[face])) in suppressed


def photos_to_remove(index: FaceIndex, rows: Iterable[tuple[int, int]]) -> list[RemovedPhoto]:
    """The photos of (image row, face row) pairs, each once with all its faces named, in the
    order first named, with their provenance from the index."""
    faces: dict[int, list[int]] = {}
    for image_row, face_row in rows:
        face_id = int(index.faces.face_id[face_row])
        if face_id not in faces.setdefault(image_row, []):
            faces[image_row].append(face_id)
    photos = []
    for image_row, face_ids in faces.items():
        record = index.images[image_row]
        provenance = record.provenance()
        photos.append(RemovedPhoto(
            dataset=provenance["dataset"] or index.dataset, image_key=record.key,
            face_ids=tuple(sorted(face_ids)),
            **{name: provenance[name] for name in PHOTO_FIELDS if name != "image_key"}))
    return photos
