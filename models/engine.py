"""The face engine: detect every face (SCRFD), align it on its 5 landmarks, embed it (ArcFace).

InsightFace's ``model_zoo`` classes do the model-specific work; this module gives them our own
verified sessions (no ``FaceAnalysis``, no downloads) and works in upright-photo pixel
coordinates throughout.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils import face_align
from numpy.typing import NDArray
from skimage.transform import SimilarityTransform

from faceaudit.errors import InvalidSetting
from faceaudit.imaging import DecodedImage
from faceaudit.models.batched_detection import BatchedDetector
from faceaudit.models.calibration_files import load_calibration
from faceaudit.models.packs import ModelPack, read_verified
from faceaudit.models.sessions import CUDA, Device, choose_providers, create_session

log = logging.getLogger(__name__)


# SCRFD's largest stride is 32 (its inputs are rounded up to a multiple of it); at 128 each of
# its three strides still has a grid of at least 4 x 4. Above 4096 a photo's detector input
# alone is 200 MB of float32.
DET_SIZE_RANGE = (128, 4096)
# Under 8 px the five landmarks nearly coincide and alignment makes noise of the face: its
# embedding matches strangers. (16, the default, is where embeddings become reliable.)
MIN_FACE_RANGE = (8, 4096)


@dataclass(frozen=True)
class DetectionSettings:
    """``det_size``: the longer side of the detector input; photos larger than this are
    reduced to it, smaller ones are never enlarged (enlarging a 250 px photo to 640 px costs
    6x the compute and makes SCRFD miss faces that fill the frame). 1024 rather than
    InsightFace's 640 because SCRFD finds faces down to about 10 px of its input: at 1024 a
    20 px background face of a 2048 px photo is still found; at 640 it is lost.
    ``min_face``: faces whose shorter box side is below this many pixels of the full-size
    photo are dropped: below it ArcFace embeddings are too unreliable to match.
    ``threshold``: SCRFD score. Each is checked against the range it works in
    (``DET_SIZE_RANGE``, ``MIN_FACE_RANGE``, a score strictly between 0 and 1)."""

    det_size: int = 1024
    min_face: int = 16
    threshold: float = 0.5

    def __post_init__(self) -> None:
        low, high = DET_SIZE_RANGE
        if not (low <= self.det_size <= high and self.det_size % 32 == 0):
            raise InvalidSetting("det_size", f"the detector size must be a multiple of 32 "
                                 f"from {low} to {high} pixels, not {self.det_size}")
        low, high = MIN_FACE_RANGE
        if not low <= self.min_face <= high:
            raise InvalidSetting("min_face", f"the smallest face must be from {low} to {high} "
                                 f"pixels, not {self.min_face}")
        if not 0 < self.threshold < 1:
            raise InvalidSetting("threshold", "the detector threshold is a score strictly "
                                 f"between 0 and 1, not {self.threshold}")

    @property
    def decode_max_side(self) -> int:
        """Photos are decoded at most this large (JPEGs by DCT scaling, much faster than a
        full decode). Twice the detector input: every face the detector can find (about
        10 px at its scale) keeps at least 20 px to be aligned and embedded from."""
        return 2 * self.det_size

    def as_dict(self) -> dict[str, float | int]:
        return {"det_size": self.det_size, "min_face": self.min_face, "threshold": self.threshold,
                "decode_max_side": self.decode_max_side}


@dataclass(frozen=True)
class DetectedFace:
    """One face, in pixel coordinates of the full-size upright photo."""

    bbox: tuple[float, float, float, float]
    score: float
    landmarks: NDArray[np.float32] = field(repr=False)  # (5, 2): eyes, nose, mouth corners

    @property
    def short_side(self) -> float:
        return min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1])


COARSE_SIZE = 320
# Recognizer crops per run at most: a GPU is kept busy only by large batches; a CPU indexes a
# photo at a time, and 32 bounds the batch of a crowded photo.
CPU_BATCH = 32
GPU_BATCH = 256


def align_face(
    bgr: NDArray[np.uint8], landmarks: NDArray[np.float32], size: int = 112
) -> NDArray[np.uint8]:
    """Warp the face onto InsightFace's ArcFace 5-point template (a similarity transform)."""
    template = face_align.arcface_dst * (size / 112.0)
    transform = SimilarityTransform.from_estimate(landmarks.astype(np.float64), template)
    if not transform:  # degenerate landmarks (all on one point): no similarity exists
        raise ValueError(f"cannot align a face on landmarks {landmarks.tolist()}")
    matrix = transform.params[0:2, :]
    return np.asarray(cv2.warpAffine(bgr, matrix, (size, size), borderValue=0.0), np.uint8)


def _round_up(value: float, multiple: int = 32) -> int:
    return max(multiple, int(math.ceil(value / multiple)) * multiple)


class FaceEngine:
    """Detector + recognizer of one model pack, on one device. Thread-compatible, not
    thread-safe: give each worker thread its own engine or serialise calls.

    ``batch_size``: recognizer crops per run (default 256 on CUDA, 32 on a CPU); the indexing
    pipeline also gathers that many photos per ``detect_all_batch``. ``batched``: whether the
    pipeline detects photos in batches (default: on CUDA only; it works on any device)."""

    def __init__(
        self,
        pack: ModelPack,
        *,
        device: Device = "auto",
        detection: DetectionSettings | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        batched: bool | None = None,
        _verified: dict[str, tuple[bytes, str]] | None = None,
    ) -> None:
        self.pack = pack
        self.detection = detection or DetectionSettings()
        self.threads = threads
        self.providers = choose_providers(device)
        on_gpu = self.providers[0] == CUDA
        self.batch_size = batch_size or (GPU_BATCH if on_gpu else CPU_BATCH)
        self.batched = on_gpu if batched is None else batched
        # On a GPU every run's batch is a power of two (padded with blank inputs): a few fixed
        # shapes, each tuned once by cuDNN, instead of a new one for every odd-sized batch.
        self._fixed_batches = on_gpu
        self._device: Device = device
        self._verified = _verified or {f.role: read_verified(f) for f in pack.files}
        self.sha256 = {f.path.name: self._verified[f.role][1] for f in pack.files}
        sessions = {
            role: create_session(data, self.providers, threads=threads)
            for role, (data, _) in self._verified.items()
        }
        log.info("model pack %s on %s", pack.name, self.providers[0])
        self.calibration = load_calibration(pack, self.sha256[pack.recognizer.path.name])
        self._detector = SCRFD(
            model_file=str(pack.detector.path),
            session=sessions["detector"],
            static_shape_sessions=False,
        )
        self._detector.prepare(0, det_thresh=self.detection.threshold, nms_thresh=0.4)
        # A graph without a batch dimension (some SCRFD exports fold it into the anchors) is
        # run one photo at a time by detect_all_batch.
        self._batched_detector = (
            BatchedDetector(self._detector, fixed_batches=self._fixed_batches)
            if self._detector.batched and self._detector.use_kps else None
        )
        self._recognizer = ArcFaceONNX(
            model_file=str(pack.recognizer.path), session=sessions["recognizer"]
        )
        self.dimension = int(self._recognizer.output_shape[-1])
        self.crop_size = int(self._recognizer.input_size[0])

    def replica(self, threads: int | None = None) -> FaceEngine:
        """Another engine with the same models and settings, for a parallel worker; the model
        bytes already verified are reused, not read and hashed again."""
        return FaceEngine(self.pack, device=self._device, detection=self.detection,
                          threads=threads, batch_size=self.batch_size, batched=self.batched,
                          _verified=self._verified)

    @property
    def device(self) -> str:
        return "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def detector_input_sizes(self, width: int, height: int) -> list[tuple[int, int]]:
        """The detector's input sizes (width, height) for a photo: the photo at ``det_size``
        (never enlarged) and, when that is large, also at ``COARSE_SIZE``: SCRFD misses faces
        over about 330 px of its input, so a close-up filling the frame of a large photo is
        found only at the coarse scale. Detections of both are merged by NMS."""
        sizes = [self._input_size(width, height, self.detection.det_size)]
        if max(sizes[0]) > COARSE_SIZE * 1.5:
            sizes.append(self._input_size(width, height, COARSE_SIZE))
        return sizes

    @staticmethod
    def _input_size(width: int, height: int, longest: int) -> tuple[int, int]:
        scale = min(1.0, longest / max(width, height))
        return _round_up(width * scale), _round_up(height * scale)

    def detect(self, image: DecodedImage) -> list[DetectedFace]:
        """Every face in the photo, best score first, smaller than ``min_face`` dropped."""
        return [f for f in self.detect_all(image) if f.short_side >= self.detection.min_face]

    def detect_all(self, image: DecodedImage) -> list[DetectedFace]:
        """Every face the detector finds, best score first, however small: the small ones are
        not embedded, but the service blurs them too."""
        bgr = np.ascontiguousarray(image.pixels[:, :, ::-1])
        height, width = bgr.shape[:2]
        boxes, landmarks = self._detector.detect(
            bgr, input_size=self.detector_input_sizes(width, height)
        )
        return self._faces(image, boxes, landmarks)

    def detect_all_batch(self, images: Sequence[DecodedImage]
                         ) -> list[list[DetectedFace] | Exception]:
        """``detect_all`` of each photo (the same faces), the detector run on many photos at
        once (see ``batched_detection``). A photo that fails gives its exception in its place;
        the others are unaffected."""
        if self._batched_detector is None:
            return [self._detect_or_error(image) for image in images]
        found = self._batched_detector.detect([image.pixels for image in images],
                                              self.detector_input_sizes)
        results: list[list[DetectedFace] | Exception] = []
        for image, result in zip(images, found, strict=True):
            try:
                results.append(result if isinstance(result, Exception)
                               else self._faces(image, *result))
            except Exception as error:
                results.append(error)
        return results

    def _detect_or_error(self, image: DecodedImage) -> list[DetectedFace] | Exception:
        try:
            return self.detect_all(image)
        except Exception as error:
            return error

    @staticmethod
    def _faces(image: DecodedImage, boxes: NDArray[np.float32], landmarks: NDArray[np.float32]
               ) -> list[DetectedFace]:
        """SCRFD's output in the decoded pixels -> faces in full-size photo coordinates."""
        faces = []
        for box, points in zip(boxes, landmarks, strict=True):
            bbox = tuple(float(v) / image.scale for v in box[:4])
            face = DetectedFace(
                bbox=(
                    max(0.0, bbox[0]),
                    max(0.0, bbox[1]),
                    min(float(image.width), bbox[2]),
                    min(float(image.height), bbox[3]),
                ),
                score=float(box[4]),
                landmarks=(points / image.scale).astype(np.float32),
            )
            faces.append(face)
        return faces

    def align(self, image: DecodedImage, faces: Sequence[DetectedFace]) -> list[NDArray[np.uint8]]:
        """112x112 BGR crops aligned on the ArcFace template, one per face."""
        # The RGB photo warped, then each crop's channels swapped: the same crops as warping a
        # BGR copy of the whole photo, without that copy.
        crops = (align_face(image.pixels, face.landmarks * image.scale, self.crop_size)
                 for face in faces)
        return [np.ascontiguousarray(crop[..., ::-1]) for crop in crops]

    def embed_crops(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """L2-normalised embeddings, (len(crops), dimension), the recognizer run in batches."""
        if not crops:
            return np.empty((0, self.dimension), dtype=np.float32)
        parts = []
        for start in range(0, len(crops), self.batch_size):
            batch = list(crops[start : start + self.batch_size])
            count = len(batch)
            if self._fixed_batches and count & (count - 1):  # see batched_detection
                batch += [np.zeros_like(batch[0])] * ((1 << count.bit_length()) - count)
            parts.append(self._recognizer.get_feat(batch)[:count])
        vectors = np.concatenate(parts).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        return vectors

    def embed(self, image: DecodedImage, faces: Sequence[DetectedFace], *, flip: bool = False
              ) -> NDArray[np.float32]:
        """Embeddings of ``faces``. ``flip``: average each face's embedding with its mirror
        image's (twice the compute; used for selfies, where it raises 1:N recall)."""
        if not flip:
            return self.embed_crops(self.align(image, faces))
        return self.embed_with_mirror(image, faces)[1]

    def embed_with_mirror(self, image: DecodedImage, faces: Sequence[DetectedFace]
                          ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(plain embeddings, mirror-averaged embeddings) of ``faces`` in one batch."""
        crops = self.align(image, faces)
        both = self.embed_crops(crops + [np.ascontiguousarray(c[:, ::-1]) for c in crops])
        plain = both[: len(crops)]
        mean = plain + both[len(crops):]
        return plain, mean / (np.linalg.norm(mean, axis=1, keepdims=True) + 1e-12)
