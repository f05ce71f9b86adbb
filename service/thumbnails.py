"""Thumbnails of indexed photos and close-ups of their faces, reachable only through signed,
expiring links, with every face but the matched one blurred.

A search result names its photos by a token: HMAC-SHA256, under a random secret of the index
being served (renewed when a new index is published there), over what it shows (the whole photo
or a close-up), which of the served indexes, the image id, the matched face's row and an expiry
time. The thumbnail routes accept nothing else, so no path from a request reaches the
filesystem, nobody can page through the dataset's photos without having searched with a face
that is in them, and the only face a link shows unblurred is the one the search matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import logging
import math
import re
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from faceaudit.errors import FaceAuditError, ImageTooLarge, UnreadableImage
from faceaudit.imaging import DecodedImage, decode_image
from faceaudit.indexer.readers.base import UnreadableFile, read_location, safe_relative
from faceaudit.indexer.search import FaceIndex
from faceaudit.indexer.store import ImageRecord

# view, index (its position among the indexes served), image id, face row, expiry (unix s)
_PAYLOAD = struct.Struct(">BBIQQ")
_TOKEN_BYTES = _PAYLOAD.size + hashlib.sha256().digest_size
_TOKEN_CHARS = math.ceil(_TOKEN_BYTES * 4 / 3)  # unpadded base64url
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_PURPOSE = b"faceaudit thumbnail\0"  # domain separation, should the secret ever sign more

log = logging.getLogger(__name__)


class ThumbnailNotFound(FaceAuditError):
    code = "not_found"


class PhotoUnavailable(FaceAuditError):
    code = "photo_unavailable"


class View(IntEnum):
    """What a link shows, signed into it: a photo link cannot be used as a close-up link, nor
    the other way round."""

    PHOTO = 1  # the whole photo
    CLOSE_UP = 2  # a square around the matched face


class ThumbnailTokens:
    """Issue and check the thumbnail tokens of the index served at position ``slot``.
    ``secret`` and ``clock`` are for tests."""

    def __init__(self, ttl_s: int, *, slot: int = 0, secret: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not 0 <= slot < 256:
            raise ValueError(f"index slot {slot} out of range")
        self.ttl_s = ttl_s
        self.slot = slot
        self._secret = secret or secrets.token_bytes(32)
        self._clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _PURPOSE + payload, hashlib.sha256).digest()

    def issue(self, view: View, image_id: int, face: int) -> str:
        """A token for ``view`` of the photo ``image_id``, in which the face at row ``face``
        of the index (the one the search matched) is the only one left unblurred."""
        payload = _PAYLOAD.pack(view, self.slot, image_id, face,
                                int(self._clock()) + self.ttl_s)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def verify(self, view: View, token: str) -> tuple[int, int]:
        """(image id, face row) of a valid, unexpired token for ``view``; ThumbnailNotFound
        otherwise (a token for the other view included)."""
        invalid = _invalid()
        raw = _decoded(token)
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise invalid
        signed_view, slot, image_id, face, expires = _PAYLOAD.unpack(payload)
        if signed_view != view or slot != self.slot or expires < self._clock():
            raise invalid
        return int(image_id), int(face)


def token_slot(token: str) -> int:
    """Which served index a token names, read before its signature is checked (by that
    index's ``ThumbnailTokens.verify``); ThumbnailNotFound for what is not a token at all."""
    return int(_PAYLOAD.unpack(_decoded(token)[: _PAYLOAD.size])[1])


def _decoded(token: str) -> bytes:
    if len(token) != _TOKEN_CHARS or not _BASE64URL.fullmatch(token):
        raise _invalid()
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise _invalid() from None


def _invalid() -> ThumbnailNotFound:
    return ThumbnailNotFound(
        "This thumbnail link is invalid or has expired: search again for fresh links."
    )


@dataclass(frozen=True)
class LinkedFace:
    """What a verified link shows: the photo, the matched face's box and the boxes of every
    other face found in it (to blur), in pixels of the full-size upright photo."""

    record: ImageRecord
    bbox: tuple[float, float, float, float]
    others: NDArray[np.float32]


def linked_face(index: FaceIndex, image_id: int, face: int) -> LinkedFace:
    """The face a verified link names, in the index being served; ThumbnailNotFound when it
    is not a face of that photo there (a link of an index served before)."""
    if face >= index.size or int(index.faces.image_id[face]) != image_id:
        raise ThumbnailNotFound("This link is not for a face of this index: search again.")
    x1, y1, x2, y2 = (float(v) for v in index.faces.bbox[face])
    return LinkedFace(index.images[image_id], (x1, y1, x2, y2),
                      index.other_face_boxes(image_id, face))


def photo_bytes(root: Path, record: ImageRecord) -> bytes:
    """The bytes of an indexed photo, from where the index says they are under ``root`` (a
    file, or a member of an img2dataset tar); never from outside ``root``, and only if they
    are the bytes indexed: their SHA-256 is the record's. Anything else (a download redone in
    place, ``--dataset`` naming another copy, an edited photo) would be shown with the boxes
    of another photo's faces, its people unblurred: PhotoUnavailable, and the record is
    logged by its image key (never its path, which may name the person pictured). A record
    without a SHA-256 cannot be checked, so it is not shown either (every record with a face
    has one: the indexer hashes the bytes before it decodes them). The width and height
    recorded follow from the bytes, so the hash covers them."""
    unavailable = PhotoUnavailable(
        "This photo is no longer available from this service: it was moved, deleted or "
        "changed since the index was built. Search again later.")
    location = record.location
    if location is None or safe_relative(location.path) != location.path:
        log.warning("photo %s: the index names a place outside the dataset", record.key)
        raise unavailable
    try:
        data = read_location(root, location)
    except UnreadableFile as error:
        log.warning("photo %s cannot be read from the dataset folder: %s", record.key, error)
        raise unavailable from None
    if record.sha256 is None:
        log.warning("photo %s has no SHA-256 in the index: not shown (rebuild the index)",
                    record.key)
        raise unavailable
    # The length first: a cheap refusal of most changed files, before hashing.
    if ((record.bytes is not None and len(data) != record.bytes)
            or hashlib.sha256(data).hexdigest() != record.sha256):
        log.warning("photo %s is not the one indexed: its bytes changed since the index was "
                    "built (SHA-256 %s indexed); not shown. Rebuild the index, or point "
                    "--dataset at the photos indexed", record.key, record.sha256)
        raise unavailable
    return data


# A face close-up is a square of the face box's longer side plus this share of it on each
# side (hair, chin, a little context), at most FACE_SIZE pixels a side.
FACE_MARGIN = 0.4
FACE_SIZE = 160

# Other people's faces: each box is enlarged by BLUR_MARGIN of its longer side on every side
# (hair, ears, and the detector's box being a little off), by SMALL_BLUR_MARGIN when it is under
# SMALL_BLUR_FACE pixels in the image sent (there a pixel of error is a large share of the box,
# and resizing spreads the face over its neighbours), and by at least BLUR_MIN_PAD pixels.
BLUR_MARGIN = 0.3
SMALL_BLUR_MARGIN = 0.5
SMALL_BLUR_FACE = 16
BLUR_MIN_PAD = 2
# The enlarged box is then reduced to the means of cells a third of its shorter side across (the
# face itself covers about 2 x 2 of them) and drawn back as a smooth gradient between those
# means: a few colours per face, nothing a detector finds, nothing to de-blur.
BLUR_CELLS = 3

Box = Sequence[float]
Boxes = NDArray[np.floating] | Sequence[Box]  # n x 4: x1, y1, x2, y2


def _pixel_box(box: Box | NDArray[np.float64], pad: float, width: int, height: int
               ) -> tuple[int, int, int, int]:
    """``box`` grown by ``pad`` each way, rounded outwards, clipped to the image."""
    x1, y1, x2, y2 = box
    return (max(math.floor(x1 - pad), 0), max(math.floor(y1 - pad), 0),
            min(math.ceil(x2 + pad), width), min(math.ceil(y2 + pad), height))


def _smeared(region: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``region`` as a smooth gradient between the means of a coarse grid of cells."""
    height, width = region.shape[:2]
    cell = max(min(height, width) / BLUR_CELLS, 1.0)
    rows = np.linspace(0, height, min(max(round(height / cell), 1), height) + 1).astype(np.intp)
    cols = np.linspace(0, width, min(max(round(width / cell), 1), width) + 1).astype(np.intp)
    sums = np.add.reduceat(np.add.reduceat(region.astype(np.float32), rows[:-1], axis=0),
                           cols[:-1], axis=1)
    means = sums / np.outer(np.diff(rows), np.diff(cols))[:, :, None]
    grid = Image.fromarray(np.clip(means + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(grid.resize((width, height), Image.Resampling.BILINEAR))


def blur_faces(pixels: NDArray[np.uint8], others: Boxes, keep: Box | None = None
               ) -> NDArray[np.uint8]:
    """``pixels`` with every box of ``others`` (in its pixel coordinates) irreversibly
    smeared, with a margin, except inside the box ``keep``: the matched face stays sharp even
    where another face's margin reaches over it, and only the sliver of another face that lies
    inside the matched face's own box is left as it was. Returns a new array."""
    out = np.array(pixels, dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    for box in np.asarray(others, dtype=np.float64).reshape(-1, 4):
        side = max(box[2] - box[0], box[3] - box[1], 0.0)
        margin = SMALL_BLUR_MARGIN if side < SMALL_BLUR_FACE else BLUR_MARGIN
        x1, y1, x2, y2 = _pixel_box(box, max(margin * side, BLUR_MIN_PAD), width, height)
        if x2 > x1 and y2 > y1:
            out[y1:y2, x1:x2] = _smeared(out[y1:y2, x1:x2])
    if keep is not None and len(others):
        x1, y1, x2, y2 = _pixel_box(keep, 0, width, height)
        out[y1:y2, x1:x2] = pixels[y1:y2, x1:x2]
    return out


def _scaled(boxes: Boxes, scale: float,
            origin: tuple[float, float] = (0.0, 0.0)) -> NDArray[np.float64]:
    """Full-size boxes in the pixels of an image decoded at ``scale``, from ``origin`` on."""
    shift = np.array([origin[0], origin[1], origin[0], origin[1]])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale - shift


def _decode_photo(data: bytes, name: str, max_side: int | None) -> DecodedImage:
    try:
        return decode_image(data, max_side=max_side, name=name)
    except (UnreadableImage, ImageTooLarge) as error:
        raise PhotoUnavailable(f"The photo {name} cannot be read any more.") from error


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def render_thumbnail(data: bytes, name: str, size: int, *, keep: Box | None,
                     others: Boxes) -> bytes:
    """JPEG of the upright photo with its longer side at most ``size`` pixels, the faces at
    ``others`` blurred but not the matched one at ``keep`` (boxes in upright full-size pixels).
    The photo is decoded at the thumbnail's size and blurred there, so the pixels blurred are
    exactly the pixels sent."""
    decoded = _decode_photo(data, name, size)
    kept = None if keep is None else _scaled([keep], decoded.scale)[0]
    pixels = blur_faces(decoded.pixels, _scaled(others, decoded.scale), kept)
    return _jpeg(Image.fromarray(pixels))


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
                photo_size: tuple[int, int] | None, size: int = FACE_SIZE, *,
                others: Boxes) -> bytes:
    """JPEG of a square close-up of the face at ``bbox`` (upright full-size pixels), at most
    ``size`` pixels a side, with the parts of the faces at ``others`` that reach into it
    blurred (before it is reduced). ``photo_size``: the photo's full upright size as indexed,
    if known, so that a large photo is decoded only as finely as the close-up needs."""
    max_side = None
    if photo_size is not None:
        left, _, right, _ = face_square(bbox, *photo_size)
        side = right - left
        if side > size:
            max_side = math.ceil(max(photo_size) * size / side)
    decoded = _decode_photo(data, name, max_side)
    pixels = decoded.pixels
    scaled = [v * decoded.scale for v in bbox]
    left, top, right, bottom = (round(v) for v in face_square(scaled, pixels.shape[1],
                                                              pixels.shape[0]))
    origin = (float(left), float(top))
    square = blur_faces(pixels[top:bottom, left:right], _scaled(others, decoded.scale, origin),
                        _scaled([bbox], decoded.scale, origin)[0])
    crop = Image.fromarray(square)
    if crop.width > size or crop.height > size:
        crop = crop.resize((size, size), Image.Resampling.LANCZOS)
    return _jpeg(crop)
