"""The CUDA path (batched detection, large recognizer batches), run on the CPU: with a faked
CUDA provider it must choose that path, and its faces must be the per-photo path's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from faceaudit.imaging import DecodedImage, decode_image
from faceaudit.indexer.face_inference import ProcessedImage, default_inference_workers
from faceaudit.indexer.pipeline import process_images
from faceaudit.indexer.store import STATUS_FAILED
from faceaudit.models import engine as engine_module
from faceaudit.models.engine import CPU_BATCH, GPU_BATCH, DetectedFace, FaceEngine
from faceaudit.models.sessions import CPU, CUDA, create_session


def _demo_photos(collection: tuple[Path, Path]) -> list[str]:
    root = collection[0]
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".jpg", ".png"))


def _assert_same_faces(expected: list[DetectedFace], found: list[DetectedFace]) -> list[int]:
    """Each expected face has a found one within 1 px (box and landmarks); their indexes."""
    assert len(found) == len(expected)
    matches = []
    for face in expected:
        distances = [max(abs(a - b) for a, b in zip(face.bbox, other.bbox, strict=True))
                     for other in found]
        best = int(np.argmin(distances))
        assert distances[best] <= 1.0, (face.bbox, found[best].bbox)
        assert np.abs(face.landmarks - found[best].landmarks).max() <= 1.0
        matches.append(best)
    assert len(set(matches)) == len(matches)
    return matches


def test_batched_detection_finds_the_per_photo_faces(engine: FaceEngine,
                                                     collection: tuple[Path, Path]) -> None:
    images = [decode_image(collection[0] / path, max_side=engine.detection.decode_max_side)
              for path in _demo_photos(collection)]
    found = engine.detect_all_batch(images)
    assert sum(len(faces) for faces in found if isinstance(faces, list)) > 90
    for image, faces in zip(images, found, strict=True):
        assert isinstance(faces, list)
        _assert_same_faces(engine.detect_all(image), faces)


def test_a_photo_that_breaks_the_detector_fails_alone(engine: FaceEngine,
                                                      collection: tuple[Path, Path]) -> None:
    good = decode_image(collection[0] / "portraits" / "hanks.jpg")
    broken = [DecodedImage(np.zeros((0, 0, 3), np.uint8), 0, 0),  # no pixels
              DecodedImage(np.zeros((40, 30, 4), np.uint8), 30, 40)]  # four channels
    found = engine.detect_all_batch([good, broken[0], good, broken[1]])
    assert isinstance(found[1], Exception) and isinstance(found[3], Exception)
    for faces in (found[0], found[2]):
        assert isinstance(faces, list)
        _assert_same_faces(engine.detect_all(good), faces)


class _RecordingSession:
    """An onnxruntime session that records the shape of every input it is run on, and can be
    told to fail runs of more than one photo."""

    def __init__(self, session: ort.InferenceSession, runs: list[tuple[int, ...]],
                 fail_batches: bool) -> None:
        self._session, self._runs, self._fail_batches = session, runs, fail_batches

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        shape = next(iter(feeds.values())).shape
        self._runs.append(shape)
        if self._fail_batches and shape[0] > 1 and shape[2] != 112:
            raise RuntimeError("CUDA failure: out of memory")
        return self._session.run(names, feeds)


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, *, fail_batches: bool = False
               ) -> list[tuple[int, ...]]:
    """onnxruntime offers CUDA; sessions asked for it are CPU sessions that record their runs."""
    runs: list[tuple[int, ...]] = []

    def session_factory(model: bytes, providers: list[str], *, threads: int | None = None
                        ) -> ort.InferenceSession | _RecordingSession:
        if providers[0] != CUDA:
            return create_session(model, providers, threads=threads)
        return _RecordingSession(create_session(model, [CPU], threads=threads), runs,
                                 fail_batches)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(engine_module, "create_session", session_factory)
    return runs


def _by_ref(results: list[ProcessedImage]) -> dict[str, ProcessedImage]:
    return {result.record.ref: result for result in results}


def test_cuda_takes_the_batched_path_with_the_per_photo_results(
        engine: FaceEngine, collection: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    runs = _fake_cuda(monkeypatch)
    gpu = FaceEngine(engine.pack, device="auto")
    assert (gpu.device, gpu.batched, gpu.batch_size) == ("cuda", True, GPU_BATCH)
    assert (engine.batched, engine.batch_size) == (False, CPU_BATCH)
    assert default_inference_workers(gpu) == 2

    assert gpu.replica(threads=1).batched
    root, paths = tmp_path / "photos", _demo_photos(collection)
    shutil.copytree(collection[0], root)
    (root / "corrupt.jpg").write_bytes((root / paths[0]).read_bytes()[:300])
    expected = _by_ref(list(process_images(engine, root, paths + ["corrupt.jpg"])))
    # Photos of one detector input size are detected together: give most photos a twin.
    twins = {f"twin_{Path(path).name}": path for path in paths if "yao_behind" not in path}
    for twin, path in twins.items():
        shutil.copy(root / path, root / twin)
    paths = paths[:4] + ["corrupt.jpg"] + paths[4:] + list(twins)
    results = list(process_images(gpu, root, paths, inference_workers=1))
    assert [r.record.ref for r in results] == paths
    assert _by_ref(results)["corrupt.jpg"].record.status == STATUS_FAILED
    for ref, result in _by_ref(results).items():
        want = expected[twins.get(ref, ref)]
        assert (result.record.status, result.record.faces) == (want.record.status,
                                                                want.record.faces)
        matches = _assert_same_faces(want.faces + want.small_faces,
                                     result.faces + result.small_faces)
        for i, j in enumerate(matches[: len(want.faces)]):
            assert float(want.vectors[i] @ result.vectors[j]) > 0.99

    detector_batches = [shape[0] for shape in runs if shape[2] != 112]
    recognizer_batches = [shape[0] for shape in runs if shape[2] == 112]
    assert max(detector_batches) > 1  # photos detected together...
    assert max(recognizer_batches) > CPU_BATCH  # crops of many photos in one run
    # A few fixed shapes: power-of-two batches
    assert all(n & (n - 1) == 0 for n in detector_batches + recognizer_batches)


def test_a_failing_batch_run_is_retried_photo_by_photo(
        engine: FaceEngine, collection: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _fake_cuda(monkeypatch, fail_batches=True)
    gpu = FaceEngine(engine.pack, device="cuda")
    images = [decode_image(collection[0] / path) for path in _demo_photos(collection)[:4]] * 2
    found = gpu.detect_all_batch(images)
    assert any(shape[0] > 1 for shape in runs)
    for image, faces in zip(images, found, strict=True):
        assert isinstance(faces, list)
        _assert_same_faces(engine.detect_all(image), faces)


@pytest.mark.gpu
@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="no CUDA provider here")
def test_a_real_gpu_finds_the_cpu_faces(engine: FaceEngine,
                                        collection: tuple[Path, Path]) -> None:
    gpu = FaceEngine(engine.pack, device="cuda")
    images = [decode_image(collection[0] / path, max_side=engine.detection.decode_max_side)
              for path in _demo_photos(collection)] * 3
    for image, faces in zip(images, gpu.detect_all_batch(images), strict=True):
        assert isinstance(faces, list)
        expected = engine.detect(image)
        found = [face for face in faces if face.short_side >= engine.detection.min_face]
        matches = _assert_same_faces(expected, found)
        cosines = np.sum(engine.embed(image, expected) * gpu.embed(image, found)[matches], axis=1)
        assert np.all(cosines > 0.99)
