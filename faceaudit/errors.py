"""Domain errors: each has a stable code and a message a person can act on.

Model, image and index code raise these; the CLI and the HTTP layer map them to exit codes and
status codes in one place each. Nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import TypeVar


class FaceAuditError(Exception):
    """Base class. ``code`` is stable and machine-readable; ``str(error)`` is for people."""

    code = "error"
    # Which of a search's several selfies the error is about (1 for the first); None when it
    # is about no one selfie.
    selfie: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnreadableImage(FaceAuditError):
    code = "unreadable_image"


class ImageTooLarge(FaceAuditError):
    code = "image_too_large"


class NoFaceFound(FaceAuditError):
    code = "no_face"


class FaceTooSmall(NoFaceFound):
    code = "face_too_small"


class MultipleFaces(FaceAuditError):
    code = "multiple_faces"

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


class DifferentPeople(FaceAuditError):
    """Selfies searched together that do not all show the same person; ``selfie`` names the
    one that differs most from the others."""

    code = "different_people"

    def __init__(self, message: str, selfie: int) -> None:
        super().__init__(message)
        self.selfie = selfie


E = TypeVar("E", bound=FaceAuditError)


def about_selfie(error: E, number: int) -> E:
    """``error`` (raised about one of several selfies) said of selfie ``number``: "Selfie 2:
    No face was found in the selfie...", with ``selfie`` set."""
    error.message = f"Selfie {number}: {error.message}"
    error.args = (error.message,)
    error.selfie = number
    return error


class ModelFileError(FaceAuditError):
    """A model file is missing, or its SHA-256 is not the one the pack declares."""

    code = "model_file"


class DeviceUnavailable(FaceAuditError):
    code = "device_unavailable"


class IndexNotFound(FaceAuditError):
    code = "index_not_found"


class IncompatibleIndex(FaceAuditError):
    code = "incompatible_index"


class InvalidSetting(FaceAuditError):
    """A setting outside the range it works in; ``setting`` names it (``det_size``, ...)."""

    code = "invalid_setting"

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting
