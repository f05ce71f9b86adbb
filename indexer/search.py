"""Read an index and search it with one person's selfie, or the template of several."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import (
    FaceAuditError,
    FaceTooSmall,
    IncompatibleIndex,
    MultipleFaces,
    NoFaceFound,
    about_selfie,
)
from faceaudit.imaging import DecodedImage
from faceaudit.indexer.ann import VectorSearch
from faceaudit.indexer.store import (
    FACES_DIR,
    IMAGES_FILE,
    SMALL_FACES_DIR,
    BoxTable,
    FaceTable,
    ImageRecord,
    ImageTable,
    read_manifest,
)
from faceaudit.models.engine import DetectedFace, FaceEngine
from faceaudit.models.templates import same_person_template
from faceaudit.models.thresholds import MAX_SELFIES, UNCALIBRATED_THRESHOLD

# The threshold of a pack nobody has calibrated; a calibrated pack brings its own
# (faceaudit.models.calibration_files), which is what search uses when no threshold is given.
DEFAULT_THRESHOLD = UNCALIBRATED_THRESHOLD
# A face in a selfie counts when its box is at least this share of the largest face's, so a
# stranger far behind the user does not make the selfie ambiguous.
SELFIE_FACE_RATIO = 0.4
# Below this (shorter side of the face box, in pixels) a selfie's embedding is too unreliable
# to search with; the person is asked for a closer photo instead of getting poor results.
SELFIE_MIN_FACE = 40


@dataclass(frozen=True)
class Match:
    """A photo found: ``face`` is the row of its best face in the index, ``face_id`` that
    face's stable id, ``record`` the photo's record (where it is, its provenance)."""

    image_id: int
    score: float
    bbox: tuple[float, float, float, float]
    face: int
    face_id: int
    record: ImageRecord

    @property
    def image(self) -> str:
        return self.record.ref

    @property
    def width(self) -> int | None:
        return self.record.width

    @property
    def height(self) -> int | None:
        return self.record.height


def search_vectors(
    vectors: VectorSearch,
    face_image_ids: NDArray[np.integer],
    vector: NDArray[np.float32],
    threshold: float,
    top: int | None = None,
) -> list[tuple[int, float, int]]:
    """(image_id, score, face_id) of every photo with a face scoring above ``threshold``,
    each photo once with its best face, best first (ties by image id), at most ``top``.

    ``face_image_ids[i]`` is the photo of face i (row i of ``vectors``).
    """
    scores, face_ids = vectors.range_search(vector, threshold)
    best: dict[int, tuple[float, int]] = {}
    for score, face_id in zip(scores.tolist(), face_ids.tolist(), strict=True):
        image_id = int(face_image_ids[face_id])
        if image_id not in best or score > best[image_id][0]:
            best[image_id] = (score, face_id)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
    if top is not None:
        ranked = ranked[:top]
    return [(image_id, score, face_id) for image_id, (score, face_id) in ranked]


class FaceIndex:
    """A published index: vectors in FAISS, the face table memory-mapped, image records read
    lazily from Parquet."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest: dict[str, Any] = read_manifest(folder)
        try:
            self.vector_search = VectorSearch.load(folder, self.manifest["index"])
            self.faces = FaceTable.load(folder / FACES_DIR, mmap=True)
            self.small_faces = BoxTable.load(folder / SMALL_FACES_DIR, mmap=True)
            self.images = ImageTable(folder / IMAGES_FILE)
        except (OSError, RuntimeError, ValueError) as error:
            raise IncompatibleIndex(
                f"{folder} is incomplete or damaged ({error}): rebuild it with "
                f"`faceaudit index SOURCE --out {folder} --fresh`."
            ) from error
        if self.vector_search.ntotal != len(self.faces):
            raise IncompatibleIndex(
                f"{folder} is inconsistent: {self.vector_search.ntotal} vectors, "
                f"{len(self.faces)} faces."
            )

    @property
    def model_pack(self) -> str:
        return str(self.manifest["model_pack"]["name"])

    @property
    def size(self) -> int:
        return self.vector_search.ntotal

    @property
    def vectors(self) -> NDArray[np.float16]:
        """Every face's embedding (float16, memory-mapped), row i for face i."""
        return self.vector_search.vectors

    def face_vectors(self, rows: Sequence[int]) -> NDArray[np.float32]:
        """The stored embeddings of the faces at ``rows`` (len(rows) x d, float32 copies of
        the float16 store, renormalised): what a confirmed face adds to a template."""
        if any(not 0 <= row < self.size for row in rows):
            raise IndexError(f"face rows outside 0..{self.size - 1}: {list(rows)}")
        stored = np.asarray(self.vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
        norms = np.linalg.norm(stored, axis=1, keepdims=True)
        return (stored / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    @property
    def dataset_root(self) -> Path:
        return Path(self.manifest["dataset"]["root"])

    @property
    def dataset(self) -> str:
        return str(self.manifest["dataset"]["name"])

    def check_engine(self, engine: FaceEngine) -> None:
        """Refuse to search with a model pack other than the one that built the index."""
        built = {name: f["sha256"] for name, f in self.manifest["model_pack"]["files"].items()}
        if built != engine.sha256:
            raise IncompatibleIndex(
                f"The index {self.folder} was built with model pack {self.model_pack} "
                f"({', '.join(sorted(built))}), but the search uses {engine.pack.name} "
                f"({', '.join(sorted(engine.sha256))}). Embeddings of different models cannot "
                f"be compared: search with --models for {self.model_pack}, or rebuild the index."
            )

    def search(self, vector: NDArray[np.float32], threshold: float, top: int | None = None
               ) -> list[Match]:
        """Photos with a face scoring above ``threshold``, best first, each photo once."""
        matches = []
        found = search_vectors(self.vector_search, self.faces.image_id, vector, threshold, top)
        for image_id, score, face_id in found:
            x1, y1, x2, y2 = (round(float(v), 1) for v in self.faces.bbox[face_id])
            matches.append(Match(image_id, round(score, 4), (x1, y1, x2, y2), face_id,
                                 int(self.faces.face_id[face_id]), self.images[image_id]))
        return matches

    def other_face_boxes(self, image_id: int, face: int) -> NDArray[np.float32]:
        """Boxes (n x 4, upright full-size pixels) of every face found in the photo
        ``image_id`` but the indexed face at row ``face``: embedded faces and those too small
        to embed alike, the faces to blur in any image of it that shows ``face``. Both tables
        are sorted by image id: two binary searches each, whatever the index's size."""
        def rows(image_ids: NDArray[np.integer]) -> slice:
            return slice(int(np.searchsorted(image_ids, image_id, side="left")),
                         int(np.searchsorted(image_ids, image_id, side="right")))

        faces, small = rows(self.faces.image_id), rows(self.small_faces.image_id)
        embedded = np.asarray(self.faces.bbox[faces])
        if faces.start <= face < faces.stop:
            embedded = np.delete(embedded, face - faces.start, axis=0)
        return np.concatenate([embedded, self.small_faces.bbox[small]]).astype(np.float32)


def selfie_face(engine: FaceEngine, selfie: DecodedImage) -> DetectedFace:
    """The one face of a selfie; NoFaceFound / MultipleFaces otherwise."""
    faces = engine.detect(selfie)
    if not faces:
        raise NoFaceFound(
            "No face was found in the selfie. Use a well-lit photo in which your face is "
            "clearly visible, facing the camera, and not too small."
        )
    largest = max(face.short_side for face in faces)
    if largest < SELFIE_MIN_FACE:
        raise FaceTooSmall(
            f"The face in the selfie is only {largest:.0f} pixels across; at least "
            f"{SELFIE_MIN_FACE} are needed to search reliably. Use a closer or larger photo."
        )
    usable = [face for face in faces if face.short_side >= SELFIE_FACE_RATIO * largest]
    if len(usable) > 1:
        raise MultipleFaces(
            f"{len(usable)} faces were found in the selfie, and faceaudit searches for one "
            "person at a time: use a photo of you alone, or crop it to your face.",
            count=len(usable),
        )
    return usable[0]


def selfie_vector(engine: FaceEngine, selfie: DecodedImage) -> NDArray[np.float32]:
    """The embedding (plain and mirror averaged) of the selfie's one face."""
    return engine.embed(selfie, [selfie_face(engine, selfie)], flip=True)[0]


def check_selfie_count(count: int) -> None:
    """FaceAuditError unless 1 to MAX_SELFIES selfies are given."""
    if count < 1:
        raise FaceAuditError("No selfie was given: give a photo of your face.")
    if count > MAX_SELFIES:
        raise FaceAuditError(f"{count} selfies were given: a search takes at most "
                             f"{MAX_SELFIES}. Keep the {MAX_SELFIES} clearest.")


def selfies_template(engine: FaceEngine, selfies: Sequence[DecodedImage]
                     ) -> NDArray[np.float32]:
    """The template of 1 to MAX_SELFIES selfies of one person: each must show one face
    (NoFaceFound / MultipleFaces naming the selfie when there are several) and every pair
    must score above the pack's same-person level (DifferentPeople)."""
    check_selfie_count(len(selfies))
    vectors = []
    for number, selfie in enumerate(selfies, start=1):
        try:
            vectors.append(selfie_vector(engine, selfie))
        except FaceAuditError as error:
            raise (about_selfie(error, number) if len(selfies) > 1 else error) from None
    return same_person_template(vectors, engine.calibration.same_person_threshold)


def search_selfie(
    engine: FaceEngine,
    index: FaceIndex,
    selfie: DecodedImage | Sequence[DecodedImage],
    *,
    threshold: float | None = None,
    top: int | None = None,
) -> list[Match]:
    """Photos of ``index`` with the person of the selfie (or of the template of several
    selfies, see ``selfies_template``), best first. ``threshold`` defaults to the model pack's
    calibrated one."""
    index.check_engine(engine)
    if threshold is None:
        threshold = engine.calibration.threshold
    selfies = [selfie] if isinstance(selfie, DecodedImage) else list(selfie)
    return index.search(selfies_template(engine, selfies), threshold, top)
