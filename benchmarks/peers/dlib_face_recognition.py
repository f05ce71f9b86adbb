"""Peer: dlib (HOG detector + ResNet 128-d descriptor) called through face_recognition.

Runs in benchmarks/peers/.venvs/dlib (see setup.sh). Calls the API the way its README does:
``load_image_file`` (Pillow, RGB; no EXIF rotation), ``face_locations`` (HOG, upsample 1) and
``face_encodings`` (5-point landmarks, 1 jitter), one image at a time.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from peer_common import Extractor, Faces, UnreadableImage, main, stack_faces

DIM = 128
METRIC_NOTE = (
    "dlib compares raw descriptors by Euclidean distance, match if <= 0.6 (face_recognition "
    "tolerance). raw_vectors holds them as returned (norms near, not exactly, 1); vectors holds "
    "them L2-normalised for the cosine protocol (dot product)."
)


def load() -> Extractor:
    import face_recognition  # loads dlib's models at import

    def extract(path: Path) -> Faces:
        try:
            image = face_recognition.load_image_file(path)
        except (OSError, ValueError) as error:
            raise UnreadableImage(str(error)) from error
        locations = face_recognition.face_locations(image)  # (top, right, bottom, left)
        encodings = face_recognition.face_encodings(image, locations)
        boxes = [(left, top, right, bottom) for top, right, bottom, left in locations]
        height, width = image.shape[:2]
        return stack_faces(boxes, encodings, DIM, width, height)

    versions = (f"dlib-bin {version('dlib-bin')}, face_recognition {version('face_recognition')}, "
                f"face_recognition_models {version('face_recognition_models')}, "
                f"numpy {np.__version__}")
    return Extractor("dlib-face_recognition", DIM, METRIC_NOTE, versions, extract,
                     keep_raw_vectors=True)


if __name__ == "__main__":
    sys.exit(main(__doc__.splitlines()[0], load))
