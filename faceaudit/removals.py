"""Removal requests, the faces they suppress, and the search audit log.

All of it lives in one SQLite database (WAL, every write one transaction, synchronous=FULL) in
the service's state folder, ``FACEAUDIT_STATE_DIR``, which must be outside the index folder:
publishing an index replaces that folder whole, and removals must outlive every rebuild.

What is stored, and what never is:

- a removal request: its id, time, status (received / sent / done), the optional contact
  address the person gave, and per photo its dataset, image key, the stable ids of the faces
  to remove and the photo's provenance as the dataset states it (photo id, image and page URL,
  SHA-256, source record, uploader, licence);
- a search: its time, the dataset, how many faces the selfie had, how many photos were
  returned, the threshold used and the outcome.

Never the selfie, an embedding, a similarity score or a client's address.

Match ids (``MatchIds``) are what a search hands out so that only faces a search returned can
be named in a removal request: an HMAC over the index's identity, the photo and the face,
and an expiry, under a secret kept in the state folder.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import sqlite3
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.search import FaceIndex, Match

log = logging.getLogger(__name__)

DATABASE = "faceaudit.sqlite3"
MATCH_ID_SECRET = "match-id.key"
STATUSES = ("received", "sent", "done")
# What a removal request lists per photo, for the dataset's maintainer.
PHOTO_FIELDS = ("image_key", "photo_id", "image_url", "page_url", "sha256", "source_record",
                "uploader_name", "licence_name")
# The opt-out list: one row per removed photo, enough to find it in any copy of the dataset.
OPT_OUT_COLUMNS = ("dataset", "image_key", "photo_id", "image_url", "page_url", "sha256")
EXPORT_FORMATS = ("csv", "json", "parquet")
SEARCH_OUTCOMES = ("ok", "no_face", "face_too_small", "multiple_faces")


class StateDirError(FaceAuditError):
    code = "state_dir"


class RequestNotFound(FaceAuditError):
    code = "request_not_found"


class InvalidMatchId(FaceAuditError):
    code = "invalid_match_id"


class ExpiredMatchId(InvalidMatchId):
    code = "match_id_expired"


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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS removal_requests (
    request_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('received', 'sent', 'done')),
    status_changed TEXT NOT NULL,
    contact TEXT
);
CREATE TABLE IF NOT EXISTS removal_photos (
    request_id TEXT NOT NULL REFERENCES removal_requests (request_id),
    position INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    image_key TEXT NOT NULL,
    photo_id TEXT,
    image_url TEXT,
    page_url TEXT,
    sha256 TEXT,
    source_record TEXT,
    uploader_name TEXT,
    licence_name TEXT,
    PRIMARY KEY (request_id, image_key)
);
CREATE TABLE IF NOT EXISTS removal_faces (
    request_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    image_key TEXT NOT NULL,
    face_id INTEGER NOT NULL,
    PRIMARY KEY (request_id, image_key, face_id),
    FOREIGN KEY (request_id, image_key) REFERENCES removal_photos (request_id, image_key)
);
CREATE TABLE IF NOT EXISTS search_log (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    dataset TEXT,
    faces_in_selfie INTEGER NOT NULL,
    results INTEGER NOT NULL,
    threshold REAL NOT NULL,
    outcome TEXT NOT NULL
);
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_state_dir(state_dir: Path, index_dir: Path) -> None:
    """StateDirError when the state folder would be lost with the index folder (inside it)."""
    state, index = state_dir.resolve(), index_dir.resolve()
    if state == index or index in state.parents:
        raise StateDirError(
            f"The state folder {state_dir} is inside the index folder {index_dir}, which is "
            "replaced whole whenever a new index is published: removal requests kept there "
            f"would be lost. Use a folder outside it, e.g. {index_dir}.state."
        )


class RemovalStore:
    """The state database in ``state_dir`` (created, mode 0700, when missing).

    Each operation opens its own connection, so the store can be used from any thread, and
    from several processes at once (the service's workers and the CLI): SQLite's WAL lets
    readers run beside the one writer, and writers wait up to ``busy_timeout_s`` for the lock.
    """

    def __init__(self, state_dir: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.state_dir = state_dir
        self.path = state_dir / DATABASE
        self._timeout = busy_timeout_s
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._connect() as db:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise StateDirError(f"{self.path}: SQLite cannot use WAL there ({mode}).")
                db.executescript(_SCHEMA)
            os.chmod(self.path, 0o600)  # contact addresses are personal data
        except (OSError, sqlite3.Error) as error:
            raise StateDirError(
                f"The state folder {state_dir} cannot hold the removal database ({error}): "
                "give FACEAUDIT_STATE_DIR a writable folder of your own."
            ) from error
        self._lock = threading.Lock()
        self._seen_rowid = 0
        self._suppressed: dict[str, frozenset[tuple[str, int]]] = {}

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")  # a 201 means the request is on disk
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- removal requests --------------------------------------------------------------

    def record_request(self, photos: Iterable[RemovedPhoto], contact: str | None = None
                       ) -> RemovalRequest:
        """Store a new request (status "received") in one transaction: after a crash it is
        either all there or not at all."""
        request_id = secrets.token_hex(8)
        created = now_iso()
        stored: list[RemovedPhoto] = []
        with self._transaction() as db:
            db.execute("INSERT INTO removal_requests VALUES (?, ?, 'received', ?, ?)",
                       (request_id, created, created, contact))
            for position, photo in enumerate(photos):
                db.execute(
                    "INSERT INTO removal_photos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (request_id, position, photo.dataset, *(photo.listing()[name]
                                                            for name in PHOTO_FIELDS)))
                db.executemany("INSERT INTO removal_faces VALUES (?, ?, ?, ?)",
                               [(request_id, photo.dataset, photo.image_key, face)
                                for face in photo.face_ids])
                stored.append(photo)
            if not stored:
                raise ValueError("a removal request needs at least one photo")
        log.info("removal request %s recorded: %d photos", request_id, len(stored))
        return RemovalRequest(request_id, created, "received", created, contact, tuple(stored))

    def requests(self, *, dataset: str | None = None, status: str | None = None,
                 request_id: str | None = None) -> list[RemovalRequest]:
        """Requests, oldest first; with ``dataset``, those naming a photo of it (and only
        those photos); with ``status``, those in it."""
        where, args = [], []
        if request_id is not None:
            where.append("r.request_id = ?")
            args.append(request_id)
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        if dataset is not None:
            where.append("p.dataset = ?")
            args.append(dataset)
        sql = ("SELECT r.request_id, r.created, r.status, r.status_changed, r.contact, "
               "p.dataset, " + ", ".join(f"p.{name}" for name in PHOTO_FIELDS) +
               " FROM removal_requests r JOIN removal_photos p USING (request_id)" +
               (" WHERE " + " AND ".join(where) if where else "") +
               " ORDER BY r.rowid, p.position")
        with self._connect() as db:
            rows = db.execute(sql, args).fetchall()
            faces: dict[tuple[str, str], list[int]] = {}
            for found, key, face in db.execute(
                    "SELECT request_id, image_key, face_id FROM removal_faces"
                    + (" WHERE request_id = ?" if request_id else "") + " ORDER BY face_id",
                    (request_id,) if request_id else ()):
                faces.setdefault((found, key), []).append(int(face))
        grouped: dict[str, tuple[tuple[Any, ...], list[RemovedPhoto]]] = {}
        for row in rows:
            photo_row = row[5:]
            photo = RemovedPhoto(photo_row[0], photo_row[1],
                                 tuple(faces.get((row[0], photo_row[1]), [])), *photo_row[2:])
            grouped.setdefault(row[0], (row[:5], []))[1].append(photo)
        return [RemovalRequest(request_id=head[0], created=head[1], status=head[2],
                               status_changed=head[3], contact=head[4], photos=tuple(photos))
                for head, photos in grouped.values()]

    def request(self, request_id: str) -> RemovalRequest:
        for found in self.requests(request_id=request_id):
            return found
        raise RequestNotFound(f"There is no removal request {request_id!r}: "
                              "`faceaudit removals list` shows them.")

    def set_status(self, request_id: str, status: str) -> RemovalRequest:
        if status not in STATUSES:
            raise FaceAuditError(f"Unknown status {status!r}: use one of {', '.join(STATUSES)}.")
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE removal_requests SET status = ?, status_changed = ? "
                "WHERE request_id = ?", (status, now_iso(), request_id)).rowcount
        if not changed:
            raise RequestNotFound(f"There is no removal request {request_id!r}: "
                                  "`faceaudit removals list` shows them.")
        return self.request(request_id)

    # --- suppression -------------------------------------------------------------------

    def suppressed(self, dataset: str) -> frozenset[tuple[str, int]]:
        """(image key, stable face id) of every face of ``dataset`` named in any removal
        request, whatever its status. Only rows added since the last call are read (faces are
        never deleted, so their rowids only grow), so this is cheap enough for every search,
        and sees requests written by other processes."""
        with self._lock:
            with self._connect() as db:
                rows = db.execute("SELECT rowid, dataset, image_key, face_id FROM removal_faces "
                                  "WHERE rowid > ? ORDER BY rowid", (self._seen_rowid,)
                                  ).fetchall()
            added: dict[str, set[tuple[str, int]]] = {}
            for rowid, name, key, face in rows:
                added.setdefault(name, set()).add((key, int(face)))
                self._seen_rowid = max(self._seen_rowid, rowid)
            for name, faces in added.items():
                self._suppressed[name] = self._suppressed.get(name, frozenset()) | faces
            return self._suppressed.get(dataset, frozenset())

    def opt_out_rows(self, dataset: str | None = None) -> list[dict[str, str | None]]:
        """One row per photo ever named in a removal request (the OPT_OUT_COLUMNS and when it
        was first requested), by dataset and image key."""
        sql = ("SELECT p.dataset, p.image_key, p.photo_id, p.image_url, p.page_url, p.sha256, "
               "MIN(r.created) FROM removal_photos p JOIN removal_requests r "
               "USING (request_id)" + (" WHERE p.dataset = ?" if dataset else "") +
               " GROUP BY p.dataset, p.image_key ORDER BY p.dataset, p.image_key")
        with self._connect() as db:
            rows = db.execute(sql, (dataset,) if dataset else ()).fetchall()
        return [dict(zip((*OPT_OUT_COLUMNS, "requested"), row, strict=True)) for row in rows]

    # --- the search audit log ----------------------------------------------------------

    def log_search(self, *, dataset: str | None, faces_in_selfie: int, results: int,
                   threshold: float, outcome: str = "ok") -> None:
        """One row per search: counts and the threshold, nothing about the face or the
        client."""
        if outcome not in SEARCH_OUTCOMES:
            raise ValueError(f"unknown search outcome {outcome!r}")
        with self._transaction() as db:
            db.execute("INSERT INTO search_log (time, dataset, faces_in_selfie, results, "
                       "threshold, outcome) VALUES (?, ?, ?, ?, ?, ?)",
                       (now_iso(), dataset, faces_in_selfie, results, float(threshold),
                        outcome))

    def search_log(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(
                "SELECT time, dataset, faces_in_selfie, results, threshold, outcome "
                "FROM search_log ORDER BY id")]


def open_state(state_dir: Path) -> RemovalStore:
    """The store of an existing state folder; StateDirError when the folder does not exist
    (a mistyped path must not silently mean "nothing was ever removed")."""
    if not state_dir.is_dir():
        raise StateDirError(f"The state folder {state_dir} does not exist: give the "
                            "FACEAUDIT_STATE_DIR the service runs with.")
    return RemovalStore(state_dir)


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


# --- the opt-out list ------------------------------------------------------------------------

def rows_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_export(rows: list[dict[str, Any]], fmt: str, out: BinaryIO) -> None:
    """The opt-out list as CSV, a JSON array or Parquet (all columns strings)."""
    columns = (*OPT_OUT_COLUMNS, "requested")
    if fmt == "csv":
        out.write(rows_csv(rows, columns).encode("utf-8"))
    elif fmt == "json":
        out.write((json.dumps(rows, indent=1) + "\n").encode("utf-8"))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(name, pa.string()) for name in columns])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    else:
        raise FaceAuditError(f"Unknown export format {fmt!r}: use {', '.join(EXPORT_FORMATS)}.")


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
    path = state_dir / MATCH_ID_SECRET
    if not path.exists():
        staged = state_dir / f".{MATCH_ID_SECRET}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staged, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            staged.unlink()
    secret = path.read_bytes()
    if len(secret) < 32:
        raise StateDirError(f"{path} is damaged (under 32 bytes): delete it; match ids "
                            "issued before will stop working.")
    return secret


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
