"""Thumbnails of indexed photos, reachable only through signed, expiring links.

A search result names its photos by a token: HMAC-SHA256, under a random per-process secret,
over the image id and an expiry time. The thumbnail route accepts nothing else, so no path from
a request reaches the filesystem, and nobody can page through the dataset's photos without
having searched with a face that is in them.
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
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from PIL import Image

from faceaudit.errors import FaceAuditError, ImageTooLarge, UnreadableImage
from faceaudit.imaging import decode_image

_PAYLOAD = struct.Struct(">IQ")  # image id, expiry (unix seconds)
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

    def issue(self, image_id: int) -> str:
        payload = _PAYLOAD.pack(image_id, int(self._clock()) + self.ttl_s)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def verify(self, token: str) -> int:
        """The image id of a valid, unexpired token; ThumbnailNotFound otherwise."""
        invalid = ThumbnailNotFound(
            "This thumbnail link is invalid or has expired: search again for fresh links."
        )
        if len(token) != _TOKEN_CHARS or not _BASE64URL.fullmatch(token):
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise invalid from None
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid
        image_id, expires = _PAYLOAD.unpack(payload)
        if expires < self._clock():
            raise invalid
        return int(image_id)


def photo_path(root: Path, relative: str) -> Path:
    """``relative`` (a path from the index) under ``root``; never outside it."""
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise PhotoUnavailable(f"The index names the photo {relative!r} outside the dataset.")
    return root.joinpath(*rel.parts)


def render_thumbnail(path: Path, relative: str, size: int) -> bytes:
    """JPEG of the upright photo with its longer side at most ``size`` pixels."""
    if not path.is_file():
        raise PhotoUnavailable(
            f"The photo {relative} is no longer in the dataset folder (moved or deleted since "
            "the index was built)."
        )
    try:
        decoded = decode_image(path, max_side=size)
    except (UnreadableImage, ImageTooLarge) as error:
        raise PhotoUnavailable(f"The photo {relative} cannot be read any more.") from error
    out = io.BytesIO()
    Image.fromarray(decoded.pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()
