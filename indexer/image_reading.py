"""Reading one image: its record from the source's fields, its bytes, hash and key, its pixels."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faceaudit.errors import FaceAuditError
from faceaudit.imaging import DecodedImage, decode_image
from faceaudit.indexer.readers.base import (
    ByteLocation,
    SourceItem,
    UnreadableFile,
    read_location,
)
from faceaudit.indexer.readers.flickr import complete_flickr_fields
from faceaudit.indexer.store import STATUS_FAILED, STATUS_OK, ImageRecord, image_key

# Decides, from an image's key and SHA-256, whether an earlier build already holds it: its
# bytes are then neither decoded nor run through the models. Returns where it is, or None.
Reusable = Callable[[str, str], str | None]


@dataclass
class LoadedImage:
    """One image read: its record, and its pixels unless it failed or an earlier build holds
    it (``reused_from``: where)."""

    record: ImageRecord
    image: DecodedImage | None
    reused_from: str | None = None



def new_record(item: SourceItem, dataset: str) -> ImageRecord:
    location = item.location or ByteLocation("")
    fields = complete_flickr_fields(item.fields)
    record = ImageRecord(key="", ref=item.ref, status=STATUS_OK,
                         path=location.path if item.location else None,
                         offset=location.offset, size=location.size, dataset=dataset,
                         source_record=item.source_record or item.ref)
    for name, value in fields.items():
        if hasattr(record, name) and name not in ("dataset", "sha256", "source_record"):
            setattr(record, name, value)
    return record


def read_and_decode(item: SourceItem, root: Path, dataset: str, *, max_pixels: int,
                    max_side: int | None, reusable: Reusable | None = None) -> LoadedImage:
    """Read the item's bytes, hash them, key the image, and decode it unless an earlier build
    holds it unchanged. Never raises for a bad image."""
    record = new_record(item, dataset)

    def failed(reason: str, retry: bool = False) -> LoadedImage:
        record.status, record.error, record.retry = STATUS_FAILED, reason, retry
        record.key = image_key(dataset, record.photo_id, record.sha256, record.ref)
        return LoadedImage(record, None)

    if item.error:
        return failed(item.error)
    data = item.data
    if data is None:
        if item.location is None:
            return failed("the source gives no image for this row")
        try:
            data = read_location(root, item.location)
        except UnreadableFile as error:
            return failed(str(error), retry=error.transient)
    if not data:
        return failed("an empty (zero-byte) file")
    record.bytes, record.sha256 = len(data), hashlib.sha256(data).hexdigest()
    record.key = image_key(dataset, record.photo_id, record.sha256, record.ref)
    if reusable is not None:
        where = reusable(record.key, record.sha256)
        if where is not None:
            return LoadedImage(record, None, where)
    try:
        image = decode_image(data, max_pixels=max_pixels, max_side=max_side, name=item.ref)
    except FaceAuditError as error:
        return failed(error.message)
    except Exception as error:  # a corrupt file can make any decoder raise anything
        return failed(f"{item.ref} is corrupt: the decoder failed with "
                      f"{type(error).__name__}: {error}")
    record.width, record.height = image.width, image.height
    return LoadedImage(record, image)
