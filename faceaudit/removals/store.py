"""The removal requests' store (SQLite in the service's state folder), the faces they
suppress, the status links, and the search audit log."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from faceaudit.errors import FaceAuditError
from faceaudit.removals.records import (
    OPT_OUT_COLUMNS,
    PHOTO_FIELDS,
    SEARCH_OUTCOMES,
    STATUSES,
    RemovalRequest,
    RemovedPhoto,
    Submitted,
    face_set,
)
from faceaudit.removals.schema import create_or_migrate
from faceaudit.removals.state_dir import StateDirError

log = logging.getLogger(__name__)

DATABASE = "faceaudit.sqlite3"
MATCH_ID_SECRET = "match-id.key"


class RequestNotFound(FaceAuditError):
    code = "request_not_found"


class InvalidMatchId(FaceAuditError):
    code = "invalid_match_id"


class ExpiredMatchId(InvalidMatchId):
    code = "match_id_expired"


class FaceRemoved(FaceAuditError):
    """A link to a face whose removal was requested: it shows nothing any more."""

    code = "removed"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _token_hash(token: str) -> str:
    return hashlib.sha256(b"faceaudit status link\0" + token.encode()).hexdigest()


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
            with self._connect(foreign_keys=False) as db:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise StateDirError(f"{self.path}: SQLite cannot use WAL there ({mode}).")
                create_or_migrate(db)
            os.chmod(self.path, 0o600)  # contact addresses are personal data
        except (OSError, sqlite3.Error) as error:
            raise StateDirError(
                f"The state folder {state_dir} cannot hold the removal database ({error}): "
                "give FACEAUDIT_STATE_DIR a writable folder of your own."
            ) from error
        self._lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None
        self._seen_version: int | None = None
        self._seen_rowid = 0
        self._suppressed: dict[str, frozenset[tuple[str, int]]] = {}

    @contextmanager
    def _connect(self, *, foreign_keys: bool = True) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")  # a 201 means the request is on disk
            db.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
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

    def submit(self, photos: Iterable[RemovedPhoto], contact: str | None = None) -> Submitted:
        """Record a request (status "received") in one transaction, so that after a crash it
        is either all there or not at all, with a new status link. When a request already
        names the same set of faces, nothing new is recorded but the link: that request is
        returned (``new`` False), as it is stored."""
        request_id, created = secrets.token_hex(8), now_iso()
        token = secrets.token_urlsafe(32)
        stored: dict[str, RemovedPhoto] = {}  # by image key: a photo named twice is one
        with self._transaction() as db:
            db.execute("SAVEPOINT new_request")
            db.execute("INSERT INTO removal_requests (request_id, created, status, "
                       "status_changed, contact) VALUES (?, ?, 'received', ?, ?)",
                       (request_id, created, created, contact))
            for photo in photos:
                first = stored.get(photo.image_key)
                if first is None:
                    db.execute(
                        "INSERT INTO removal_photos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (request_id, len(stored), photo.dataset,
                         *(photo.listing()[name] for name in PHOTO_FIELDS)))
                faces = sorted(set(photo.face_ids) - set(first.face_ids if first else ()))
                db.executemany("INSERT INTO removal_faces VALUES (?, ?, ?, ?)",
                               [(request_id, photo.dataset, photo.image_key, face)
                                for face in faces])
                stored[photo.image_key] = dataclasses.replace(
                    first or photo, face_ids=tuple(sorted(
                        set(photo.face_ids) | set(first.face_ids if first else ()))))
            if not stored:
                raise ValueError("a removal request needs at least one photo")
            digest = face_set(stored.values())
            earlier = db.execute("SELECT request_id FROM removal_requests WHERE face_set = ?",
                                 (digest,)).fetchone()
            if earlier is None:
                db.execute("UPDATE removal_requests SET face_set = ? WHERE request_id = ?",
                           (digest, request_id))
            else:
                db.execute("ROLLBACK TO new_request")  # nothing of it is kept
                request_id = earlier[0]
            db.execute("RELEASE new_request")
            db.execute("INSERT INTO removal_tokens VALUES (?, ?)",
                       (_token_hash(token), request_id))
        if earlier is not None:
            log.info("removal request %s asked again", request_id)
            return Submitted(self.request(request_id), token, new=False)
        log.info("removal request %s recorded: %d photos", request_id, len(stored))
        return Submitted(RemovalRequest(request_id, created, "received", created, contact,
                                        tuple(stored.values())), token, new=True)

    def record_request(self, photos: Iterable[RemovedPhoto], contact: str | None = None
                       ) -> RemovalRequest:
        """``submit`` without the status link."""
        return self.submit(photos, contact).request

    def followed(self, request_id: str, token: str) -> RemovalRequest:
        """The request a status link names; RequestNotFound, saying the same whatever is
        wrong, for an unknown request or a token that is not one of its links."""
        given = _token_hash(token)
        with self._connect() as db:
            hashes = [stored for (stored,) in db.execute(
                "SELECT token_hash FROM removal_tokens WHERE request_id = ?", (request_id,))]
        if not any(hmac.compare_digest(given, stored) for stored in hashes):
            raise RequestNotFound("There is no removal request at this link: check that it "
                                  "was copied whole.")
        return self.request(request_id)

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
        request, whatever its status. Cheap enough for every search and every thumbnail: one
        long-lived connection asks SQLite's ``PRAGMA data_version``, which changes when any
        other connection, in this process or another, has committed; only then are the rows
        added since the last call read (faces are never deleted, so their rowids only grow).
        """
        with self._lock:
            if self._watch is None:
                self._watch = sqlite3.connect(self.path, timeout=self._timeout,
                                              isolation_level=None, check_same_thread=False)
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
            if version != self._seen_version:
                # Read after the version: a commit in between is read now or at the next call.
                rows = self._watch.execute(
                    "SELECT rowid, dataset, image_key, face_id FROM removal_faces "
                    "WHERE rowid > ? ORDER BY rowid", (self._seen_rowid,)).fetchall()
                added: dict[str, set[tuple[str, int]]] = {}
                for rowid, name, key, face in rows:
                    added.setdefault(name, set()).add((key, int(face)))
                    self._seen_rowid = max(self._seen_rowid, rowid)
                for name, faces in added.items():
                    self._suppressed[name] = self._suppressed.get(name, frozenset()) | faces
                self._seen_version = version
            return self._suppressed.get(dataset, frozenset())

    def close(self) -> None:
        """Close the long-lived connection of ``suppressed`` (reopened if needed)."""
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch, self._seen_version = None, None

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
                   threshold: float, outcome: str = "ok", selfies: int = 1,
                   confirmed: int = 0) -> None:
        """One row per search: counts (of the selfies and confirmed faces its template held,
        too) and the threshold, nothing about the faces or the client."""
        if outcome not in SEARCH_OUTCOMES:
            raise ValueError(f"unknown search outcome {outcome!r}")
        with self._transaction() as db:
            db.execute("INSERT INTO search_log (time, dataset, faces_in_selfie, results, "
                       "threshold, outcome, selfies, confirmed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (now_iso(), dataset, faces_in_selfie, results, float(threshold),
                        outcome, selfies, confirmed))

    def search_log(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(
                "SELECT time, dataset, faces_in_selfie, results, threshold, outcome, selfies, "
                "confirmed FROM search_log ORDER BY id")]


def open_state(state_dir: Path) -> RemovalStore:
    """The store of an existing state folder; StateDirError when the folder does not exist
    (a mistyped path must not silently mean "nothing was ever removed")."""
    if not state_dir.is_dir():
        raise StateDirError(f"The state folder {state_dir} does not exist: give the "
                            "FACEAUDIT_STATE_DIR the service runs with.")
    return RemovalStore(state_dir)

