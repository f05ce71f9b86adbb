"""What a removal request is made of: its photos and faces, its statuses, and the columns
the maintainers and the opt-out list get."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# received: recorded, its faces hidden; sent: passed on to the dataset's maintainers; done:
# they removed the photos; rejected: they did not (the faces stay hidden here all the same).
STATUSES = ("received", "sent", "done", "rejected")
# What a removal request lists per photo, for the dataset's maintainer.
PHOTO_FIELDS = ("image_key", "photo_id", "image_url", "page_url", "sha256", "source_record",
                "uploader_name", "licence_name")
# The opt-out list: one row per removed photo, enough to find it in any copy of the dataset.
OPT_OUT_COLUMNS = ("dataset", "image_key", "photo_id", "image_url", "page_url", "sha256")
EXPORT_FORMATS = ("csv", "json", "parquet")
SEARCH_OUTCOMES = ("ok", "no_face", "face_too_small", "multiple_faces", "different_people")


@dataclass(frozen=True)
class RemovedPhoto:
    """A photo named in a removal request: which faces of it, and where it comes from."""

    dataset: str
    image_key: str
    face_ids: tuple[int, ...]
    photo_id: str | None = None
    image_url: str | None = None
    page_url: str | None = None
    sha256: str | None = None
    source_record: str | None = None
    uploader_name: str | None = None
    licence_name: str | None = None

    def listing(self) -> dict[str, str | None]:
        """The PHOTO_FIELDS: what the dataset's maintainer needs to find the photo."""
        return {name: getattr(self, name) for name in PHOTO_FIELDS}


@dataclass(frozen=True)
class RemovalRequest:
    request_id: str
    created: str  # ISO 8601, UTC
    status: str
    status_changed: str
    contact: str | None
    photos: tuple[RemovedPhoto, ...]

    @property
    def datasets(self) -> list[str]:
        """The datasets of its photos, in the order they first appear."""
        return list(dict.fromkeys(photo.dataset for photo in self.photos))

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "created": self.created, "status": self.status,
            "status_changed": self.status_changed, "contact": self.contact,
            "photos": [{"dataset": p.dataset, **p.listing(), "face_ids": [str(f) for f in
                                                                         p.face_ids]}
                       for p in self.photos],
        }


@dataclass(frozen=True)
class Submitted:
    """A removal request as recorded: ``new`` False when the same faces had been asked for
    before (that request is returned). ``token`` opens its status link; only its hash is
    kept, so it is handed out here once."""

    request: RemovalRequest
    token: str
    new: bool


def face_set(photos: Iterable[RemovedPhoto]) -> str:
    """A digest of the set of faces a request names (dataset, image key, face id), whatever
    their order and however often each is named: the same set is the same request."""
    faces = sorted({(p.dataset, p.image_key, face) for p in photos for face in p.face_ids})
    text = "\n".join(f"{dataset}\0{key}\0{face}" for dataset, key, face in faces)
    return hashlib.sha256(text.encode()).hexdigest()
