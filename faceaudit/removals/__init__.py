"""Removal requests, the faces they suppress, and the search audit log.

All of it lives in one SQLite database (WAL, every write one transaction, synchronous=FULL) in
the state folder (``default_state_dir``: ``FACEAUDIT_STATE_DIR``, else
``$XDG_STATE_HOME/faceaudit``, else ``~/.local/state/faceaudit``), shared by the service and
every command, and outside the index folder: publishing an index replaces that folder whole,
and removals must outlive every rebuild.

What is stored, and what never is:

- a removal request: its id, time, status (received / sent / done / rejected), the optional
  contact address the person gave, a digest of the set of faces it names (the same set asked
  again is the same request), a SHA-256 of each status link's token, and per photo its
  dataset, image key, the stable ids of the faces to remove and the photo's provenance as the
  dataset states it (photo id, image and page URL, SHA-256, source record, uploader, licence);
- a search: its time, the dataset, how many faces the selfie had, how many photos were
  returned, the threshold used and the outcome.

Never the selfie, an embedding, a similarity score or a client's address.

Match ids (``MatchIds``) are what a search hands out so that only faces a search returned can
be named in a removal request: an HMAC over the index's identity, the photo and the face,
and an expiry, under a secret kept in the state folder.
"""

from faceaudit.removals.export import rows_csv, write_export
from faceaudit.removals.match_ids import MatchIds, index_identity, load_secret, open_service_state
from faceaudit.removals.records import (
    EXPORT_FORMATS,
    OPT_OUT_COLUMNS,
    PHOTO_FIELDS,
    SEARCH_OUTCOMES,
    STATUSES,
    RemovalRequest,
    RemovedPhoto,
    Submitted,
    face_set,
)
from faceaudit.removals.state_dir import (
    StateDirError,
    check_state_dir,
    default_state_dir,
    resolve_state_dir,
)
from faceaudit.removals.store import (
    DATABASE,
    MATCH_ID_SECRET,
    ExpiredMatchId,
    FaceRemoved,
    InvalidMatchId,
    RemovalStore,
    RequestNotFound,
    now_iso,
    open_state,
)
from faceaudit.removals.suppression import (
    linked_face_removed,
    photos_to_remove,
    suppressed_face_ids,
    suppressed_faces,
    visible,
    widen,
)

__all__ = [
    "DATABASE", "EXPORT_FORMATS", "MATCH_ID_SECRET", "OPT_OUT_COLUMNS", "PHOTO_FIELDS",
    "SEARCH_OUTCOMES", "STATUSES", "ExpiredMatchId", "FaceRemoved", "InvalidMatchId",
    "MatchIds", "RemovalRequest", "RemovalStore", "RemovedPhoto", "RequestNotFound",
    "StateDirError", "Submitted", "check_state_dir", "default_state_dir", "face_set",
    "index_identity", "linked_face_removed", "load_secret", "now_iso", "open_service_state",
    "open_state", "photos_to_remove", "resolve_state_dir", "rows_csv", "suppressed_face_ids",
    "suppressed_faces", "visible", "widen", "write_export",
]
