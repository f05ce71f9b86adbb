"""Thumbnails of indexed photos and close-ups of their faces, reachable only through signed,
expiring links.

A search result names its photos by a token: HMAC-SHA256, under a random per-process secret,
over the image id, a face id (or none, for the whole photo) and an expiry time. The thumbnail
routes accept nothing else, so no path from a request reaches the filesystem, nobody can page
through the dataset's photos without having searched with a face that is in them, and a
close-up can only be had of a face that a search returned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import math
import re
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from faceaudit.errors import FaceAuditError, ImageTooLarge, UnreadableImage
from faceaudit.imaging import DecodedImage, decode_image
from faceaudit.indexer.readers.base import UnreadableFile, read_location, safe_relative
from faceaudit.indexer.store import ImageRecord

_PAYLOAD = struct.Struct(">IIQ")  # image id, face id (or WHOLE_PHOTO), expiry (unix seconds)
WHOLE_PHOTO = 0xFFFFFFFF
_TOKEN_BYTES = _PAYLOAD.size + hashlib.sha256().digest_size
_TOKEN_CHARS = math.ceil(_TOKEN_BYTES * 4 / 3)  # unpadded base64url
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_PURPOSE = b"faceaudit thumbnail\0"  # domain separation, should the secret ever sign more


class ThumbnailNotFound(FaceAuditError):
    code = "not_found"


class PhotoUnavailable(FaceAuditError):
    code = "photo_unavailable"


class ThumbnailTokens:
    """Issue and check thumbnail tokens. ``secret`` and ``clock`` are for tests."""

    def __init__(self, ttl_s: int, *, secret: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._secret = secret or secrets.token_bytes(32)
        self._clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _PURPOSE + payload, hashlib.sha256).digest()

    def issue(self, image_id: int, face_id: int | None = None) -> str:
        """A token for the photo ``image_id``, or with ``face_id`` for a close-up of that
        face of it."""
        face = WHOLE_PHOTO if face_id is None else face_id
        payload = _PAYLOAD.pack(image_id, face, int(self._clock()) + self.ttl_s)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def verify(self, token: str) -> int:
        """The image id of a valid, unexpired photo token; ThumbnailNotFound otherwise (a face
        token included)."""
        image_id, face_id = self._open(token)
        if face_id is not None:
            raise _invalid()
        return image_id

    def verify_face(self, token: str) -> tuple[int, int]:
        """(image id, face id) of a valid, unexpired face token; ThumbnailNotFound otherwise
        (a photo token included)."""
        image_id, face_id = self._open(token)
        if face_id is None:
            raise _invalid()
        return image_id, face_id

    def _open(self, token: str) -> tuple[int, int | None]:
        invalid = _invalid()
        if len(token) != _TOKEN_CHARS or not _BASE64URL.fullmatch(token):
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid
        image_id, face_id, expires = _PAYLOAD.unpack(payload)
        if expires < self._clock():
            raise invalid
        return int(image_id), None if face_id == WHOLE_PHOTO else int(face_id)


def _invalid() -> ThumbnailNotFound:
    return ThumbnailNotFound(
        "This thumbnail link is invalid or has expired: search again for fresh links."
    )


def photo_bytes(root: Path, record: ImageRecord) -> bytes:
    """The bytes of an indexed photo, from where the index says they are under ``root`` (a
    file, or a member of an img2dataset tar); never from outside ``root``."""
    location = record.location
    if location is None or safe_relative(location.path) != location.path:
        raise PhotoUnavailable(f"The index names the photo {record.ref!r} outside the dataset.")
    try:
        return read_location(root, location)
    except UnreadableFile as error:
        raise PhotoUnavailable(
            f"The photo {record.ref} cannot be read from the dataset folder any more ({error}); "
            "it was moved or deleted since the index was built."
        ) from None


# A face close-up is a square of the face box's longer side plus this share of it on each
# side (hair, chin, a little context), at most FACE_SIZE pixels a side.
FACE_MARGIN = 0.4
FACE_SIZE = 160


def _decode_photo(data: bytes, name: str, max_side: int | None) -> DecodedImage:
    try:
        return decode_image(data, max_side=max_side, name=name)
    except (UnreadableImage, ImageTooLarge) as error:
        raise PhotoUnavailable(f"The photo {name} cannot be read any more.") from error


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def render_thumbnail(data: bytes, name: str, size: int) -> bytes:
    """JPEG of the upright photo with its longer side at most ``size`` pixels."""
    return _jpeg(Image.fromarray(_decode_photo(data, name, size).pixels))


def face_square(bbox: Sequence[float], width: float, height: float,
                margin: float = FACE_MARGIN) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a square around ``bbox`` with ``margin`` of its longer
    side added each way, moved (not cut) to stay inside a ``width`` x ``height`` photo, and
    shrunk only where the photo is narrower than the square."""
    x1, y1, x2, y2 = bbox
    side = min(max(x2 - x1, y2 - y1) * (1 + 2 * margin), width, height)
    left = min(max((x1 + x2 - side) / 2, 0.0), width - side)
    top = min(max((y1 + y2 - side) / 2, 0.0), height - side)
    return left, top, left + side, top + side


def render_face(data: bytes, name: str, bbox: Sequence[float],
                photo_size: tuple[int, int] | None, size: int = FACE_SIZE) -> bytes:
    """JPEG of a square close-up of the face at ``bbox`` (upright full-size pixels), at most
    ``size`` pixels a side. ``photo_size``: the photo's full upright size as indexed, if known,
    so that a large photo is decoded only as finely as the close-up needs."""
    max_side = None
    if photo_size is not None:
        left, _, right, _ = face_square(bbox, *photo_size)
        side = right - left
        if side > size:
            max_side = math.ceil(max(photo_size) * size / side)
    decoded = _decode_photo(data, name, max_side)
    pixels = decoded.pixels
    scaled = [v * decoded.scale for v in bbox]
    left, top, right, bottom = face_square(scaled, pixels.shape[1], pixels.shape[0])
    crop = Image.fromarray(pixels).crop((round(left), round(top), round(right), round(bottom)))
    if crop.width > size or crop.height > size:
        crop = crop.resize((size, size), Image.Resampling.LANCZOS)
    return _jpeg(crop)
