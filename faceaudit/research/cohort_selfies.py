"""A cohort's participants and their selfies: one image, or a folder of up to MAX_SELFIES."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from faceaudit.errors import FaceAuditError
from faceaudit.imaging import IMAGE_SUFFIXES
from faceaudit.models.thresholds import MAX_SELFIES


class NoSelfie(FaceAuditError):
    code = "no_selfie"


class TooManySelfies(FaceAuditError):
    code = "too_many_selfies"


def images_in(folder: Path) -> list[Path]:
    """The images directly in ``folder``, sorted by name (hidden files left out)."""
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and not path.name.startswith(".")
                  and path.suffix.lower() in IMAGE_SUFFIXES)


def cohort_selfies(folder: Path) -> list[tuple[str, Path]]:
    """(participant id, selfie or folder of selfies) for each image and each folder directly in
    ``folder``, sorted by name: the participant id is the file name without its extension, or
    the folder's name (its images, up to MAX_SELFIES, are that participant's selfies)."""
    if not folder.is_dir():
        raise FaceAuditError(f"The selfie folder {folder} does not exist or is not a folder.")
    entries = sorted([*images_in(folder), *(path for path in folder.iterdir()
                                          if path.is_dir() and not path.name.startswith("."))])
    if not entries:
        raise FaceAuditError(f"{folder} holds no selfies (images named PARTICIPANT.jpg, "
                             f"PARTICIPANT.png, ..., or folders named PARTICIPANT holding up "
                             f"to {MAX_SELFIES} selfies each).")
    return [(path.name if path.is_dir() else path.stem, path) for path in entries]


def participant_selfies(participant: str, selfie: Path) -> list[Path]:
    """The selfies of a participant: the image, or the images of the folder (NoSelfie,
    TooManySelfies when it holds none or more than MAX_SELFIES)."""
    if not selfie.is_dir():
        return [selfie]
    images = images_in(selfie)
    if not images:
        raise NoSelfie(f"the folder {selfie.name} holds no selfie")
    if len(images) > MAX_SELFIES:
        raise TooManySelfies(f"the folder {selfie.name} holds {len(images)} selfies: at most "
                             f"{MAX_SELFIES} are searched together; keep the clearest")
    return images


def naming_file(error: FaceAuditError, paths: Sequence[Path]) -> str:
    """The error's message, naming the file of the selfie it is about ("Selfie 2" is the
    second of the folder's files in sorted order)."""
    number = getattr(error, "selfie", None)
    if isinstance(number, int) and len(paths) > 1 and 1 <= number <= len(paths):
        return f"{error.message} (selfie {number} is {paths[number - 1].name})"
    return error.message
