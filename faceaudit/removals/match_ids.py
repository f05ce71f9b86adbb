"""Match ids: what a search hands out so that only faces a search returned can be named in a
removal request."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import struct
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from faceaudit.indexer.search import FaceIndex, Match
from faceaudit.removals.state_dir import check_state_dir, secret_file
from faceaudit.removals.store import (
    MATCH_ID_SECRET,
    ExpiredMatchId,
    InvalidMatchId,
    RemovalStore,
)

# --- match ids -------------------------------------------------------------------------------

# version, index identity, image row, face row, stable face id, expiry, digest of image key
_PAYLOAD = struct.Struct(">B12sIIqQ8s")
_VERSION = 1
_MAC_BYTES = 16
_PURPOSE = b"faceaudit match id\0"
_MATCH_ID_CHARS = -(-(_PAYLOAD.size + _MAC_BYTES) * 4 // 3)  # unpadded base64url
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_identities: weakref.WeakKeyDictionary[FaceIndex, bytes] = weakref.WeakKeyDictionary()


def index_identity(index: FaceIndex) -> bytes:
    """12 bytes naming one published index: a digest of its manifest (which names the
    dataset, counts and the build's time), so that it is the same after a restart and
    differs after any rebuild."""
    identity = _identities.get(index)
    if identity is None:
        manifest = json.dumps(index.manifest, sort_keys=True, default=str).encode()
        identity = _identities[index] = hashlib.sha256(manifest).digest()[:12]
    return identity


def _key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()[:8]


def load_secret(state_dir: Path) -> bytes:
    """The match id secret of the state folder, made on first use. Kept on disk (mode 0600)
    so that match ids survive a restart and are accepted by every worker process of the
    service; created with an atomic link so that two processes starting together agree."""
    return secret_file(state_dir / MATCH_ID_SECRET, damaged="delete it; match ids issued "
                       "before will stop working.")


class MatchIds:
    """Issue and open match ids: HMAC-SHA256 (truncated to 128 bits) over the index's
    identity, the photo's and face's rows, the face's stable id, a digest of the photo's key
    and an expiry. Nothing about the selfie (no score, no embedding) is in it."""

    def __init__(self, secret: bytes, ttl_s: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.secret, _PURPOSE + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, index: FaceIndex, match: Match) -> str:
        payload = _PAYLOAD.pack(_VERSION, index_identity(index), match.image_id, match.face,
                                match.face_id, int(self._clock()) + self.ttl_s,
                                _key_digest(match.record.key))
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def open(self, index: FaceIndex, match_id: str) -> tuple[int, int]:
        """(image row, face row) in ``index`` of a match id a search of this index issued and
        that has not expired; InvalidMatchId (ExpiredMatchId) otherwise."""
        forged = InvalidMatchId("This match id was not issued by a search of this service.")
        if len(match_id) != _MATCH_ID_CHARS or not _BASE64URL.fullmatch(match_id):
            raise forged
        try:
            raw = base64.urlsafe_b64decode(match_id + "=" * (-len(match_id) % 4))
        except (binascii.Error, ValueError):
            raise forged from None
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise forged
        version, identity, image_row, face_row, face_id, expires, key = _PAYLOAD.unpack(payload)
        if version != _VERSION:
            raise forged
        if expires < self._clock():
            raise ExpiredMatchId("This match id has expired: search again, then ask for "
                                 f"removal within {max(1, self.ttl_s // 60)} minutes.")
        if identity != index_identity(index):
            raise InvalidMatchId("This match id was issued for an earlier version of the "
                                 "index, which has been replaced since: search again.")
        if (face_row >= index.size or int(index.faces.image_id[face_row]) != image_row
                or int(index.faces.face_id[face_row]) != face_id
                or _key_digest(index.images[image_row].key) != key):
            raise forged  # a valid signature over rows this index does not have: not ours
        return image_row, face_row


def open_service_state(state_dir: Path, index_dir: Path, ttl_s: int
                       ) -> tuple[RemovalStore, MatchIds]:
    """The service's store and match ids, at start-up: the state folder checked (outside the
    index folder), created when missing, the database and the secret made on first use."""
    check_state_dir(state_dir, index_dir)
    store = RemovalStore(state_dir)
    return store, MatchIds(load_secret(state_dir), ttl_s)


