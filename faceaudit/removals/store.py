"""The removal requests' store (SQLite in the service's state folder), the faces they
suppress, and the search audit log."""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
