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

from faceaudit.removals.export import rows_csv, write_export
from faceaudit.removals.match_ids import MatchIds, index_identity, load_secret, open_service_state
from faceaudit.removals.store import (
    DATABASE,
    EXPORT_FORMATS,
    MATCH_ID_SECRET,
    OPT_OUT_COLUMNS,
    PHOTO_FIELDS,
    SEARCH_OUTCOMES,
    STATUSES,
    ExpiredMatchId,
    InvalidMatchId,
    RemovalRequest,
    RemovalStore,
    RemovedPhoto,
    RequestNotFound,
    StateDirError,
    check_state_dir,
    now_iso,
    open_state,
    photos_to_remove,
    suppressed_face_ids,
    suppressed_faces,
    visible,
    widen,
)

__all__ = [
    "DATABASE", "EXPORT_FORMATS", "MATCH_ID_SECRET", "OPT_OUT_COLUMNS", "PHOTO_FIELDS",
    "SEARCH_OUTCOMES", "STATUSES", "ExpiredMatchId", "InvalidMatchId", "MatchIds",
    "RemovalRequest", "RemovalStore", "RemovedPhoto", "RequestNotFound", "StateDirError",
    "check_state_dir", "index_identity", "load_secret", "now_iso", "open_service_state",
    "open_state", "photos_to_remove", "rows_csv", "suppressed_face_ids", "suppressed_faces",
    "visible", "widen", "write_export",
]
