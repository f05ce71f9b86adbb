"""The state database's tables, and the migration of a database made by an earlier version."""

from __future__ import annotations

import sqlite3

# 1: the first release (no user_version set); 2: status "rejected", the requests' face set
# (for idempotency) and the status links' token hashes; 3: how many selfies and confirmed
# faces each logged search's template held.
SCHEMA_VERSION = 3

_REQUESTS = """
CREATE TABLE IF NOT EXISTS {name} (
    request_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('received', 'sent', 'done', 'rejected')),
    status_changed TEXT NOT NULL,
    contact TEXT,
    face_set TEXT UNIQUE
)"""

_TABLES = (
    _REQUESTS.format(name="removal_requests"),
    """
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
)""",
    """
CREATE TABLE IF NOT EXISTS removal_faces (
    request_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    image_key TEXT NOT NULL,
    face_id INTEGER NOT NULL,
    PRIMARY KEY (request_id, image_key, face_id),
    FOREIGN KEY (request_id, image_key) REFERENCES removal_photos (request_id, image_key)
)""",
    # One row per status link handed out: the same request asked again gets a new link (only
    # a hash of each is kept, so an earlier one cannot be shown again).
    """
CREATE TABLE IF NOT EXISTS removal_tokens (
    token_hash TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES removal_requests (request_id)
)""",
    """
CREATE TABLE IF NOT EXISTS search_log (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    dataset TEXT,
    faces_in_selfie INTEGER NOT NULL,
    results INTEGER NOT NULL,
    threshold REAL NOT NULL,
    outcome TEXT NOT NULL,
    selfies INTEGER NOT NULL DEFAULT 1,
    confirmed INTEGER NOT NULL DEFAULT 0
)""",
)


def create_or_migrate(db: sqlite3.Connection) -> None:
    """Make the tables of SCHEMA_VERSION, or bring an earlier database up to it, in one
    transaction (two processes starting together: the second finds it done). ``db`` must be in
    autocommit mode with foreign keys off (SQLite ignores that pragma inside a transaction)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            columns = {row[1] for row in db.execute("PRAGMA table_info(removal_requests)")}
            for statement in _TABLES:
                db.execute(statement)
            if columns and "face_set" not in columns:
                _rebuild_requests(db)
            logged = {row[1] for row in db.execute("PRAGMA table_info(search_log)")}
            for column, default in (("selfies", 1), ("confirmed", 0)):
                if column not in logged:  # searches logged before: one selfie, none confirmed
                    db.execute(f"ALTER TABLE search_log ADD COLUMN {column} INTEGER NOT NULL "
                               f"DEFAULT {default}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _rebuild_requests(db: sqlite3.Connection) -> None:
    """A version 1 table: its CHECK constraint lacks "rejected", and SQLite cannot alter a
    constraint, so the table is copied into a new one (rowid order kept: requests are listed
    oldest first by it). Requests made before have no face set: asking for the same faces
    again makes a new request, once."""
    db.execute(_REQUESTS.format(name="removal_requests_v2"))
    db.execute("INSERT INTO removal_requests_v2 (request_id, created, status, status_changed, "
               "contact) SELECT request_id, created, status, status_changed, contact "
               "FROM removal_requests ORDER BY rowid")
    db.execute("DROP TABLE removal_requests")
    db.execute("ALTER TABLE removal_requests_v2 RENAME TO removal_requests")
    broken = db.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise sqlite3.IntegrityError(f"migration left {len(broken)} dangling rows")
