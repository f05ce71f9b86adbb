"""SCRFD on many photos per run, at a few fixed input shapes: the detection of the CUDA path.

Each photo is scaled and placed exactly as the one-photo path does it (the input sizes of
``FaceEngine.detector_input_sizes``, multiples of 32 px, and SCRFD's own fit into them: top
left, zero padding), and photos of the same input size run together in one ``session.run``:
the results are the one-photo path's. A GPU runs fastest on shapes it has seen before (cuDNN
tunes its algorithms and the memory arena grows once per shape): with ``fixed_batches`` every
run's batch is a power of two, the last one padded with blank photos, so a dataset gives a few
dozen shapes at most (LFW: one size, 256 x 256). ``CANVAS_STEP`` above 32 would pad inputs
further, to fewer shapes, but the padding then changes the scores of faces touching it
(measured at 128: a face filling a 224 px photo had its landmarks moved by 6 px).

SCRFD's own post-processing is reused: ``distance2bbox``/``distance2kps``, its anchor layout
and its NMS, in the order ``SCRFD.detect`` applies them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from insightface.model_zoo.scrfd import SCRFD, distance2bbox, distance2kps
from numpy.typing import NDArray

CANVAS_STEP = 32
# Detector input pixels per run (16 photos at 1024 x 1024, 256 at 256 x 256): SCRFD-500M's
# activations for that many pixels are a few GiB of GPU memory.
RUN_PIXELS = 16 * 1024 * 1024

Size = tuple[int, int]  # (width, height)
Detections = tuple[NDArray[np.float32], NDArray[np.float32]]  # (k, 5) boxes+score, (k, 5, 2)


def fit(width: int, height: int, input_size: Size) -> tuple[int, int, float]:
    """(width, height, scale) of the photo inside the detector input, as SCRFD computes them."""
    image_ratio = float(height) / width
    if image_ratio > float(input_size[1]) / input_size[0]:
        new_height = input_size[1]
        new_width = int(new_height / image_ratio)
    else:
        new_width = input_size[0]
        new_height = int(new_width * image_ratio)
    return new_width, new_height, float(new_height) / height


def canvas_for(input_size: Size) -> Size:
    """The canvas a detector input is padded to: its sides rounded up to ``CANVAS_STEP``."""
    width, height = (-(-side // CANVAS_STEP) * CANVAS_STEP for side in input_size)
    return width, height


@dataclass(frozen=True)
class _Pass:
    """One detector input of one photo (a photo has one, or two with the coarse scale)."""

    photo: int
    order: int  # its place among the photo's input sizes
    width: int
    height: int
    scale: float
    canvas: Size


class BatchedDetector:
    """Runs an ``SCRFD`` (with a batch dimension in its graph: ``scrfd.batched``) on photos
    in batches; the results are ``scrfd.detect``'s, photo by photo."""

    def __init__(self, scrfd: SCRFD, *, fixed_batches: bool, run_pixels: int = RUN_PIXELS
                 ) -> None:
        if not (scrfd.batched and scrfd.use_kps):
            raise ValueError("batched detection needs an SCRFD graph with a batch dimension in "
                             "its outputs and landmarks")
        self.scrfd = scrfd
        self.fixed_batches = fixed_batches
        self.run_pixels = run_pixels
        self._centers: dict[tuple[Size, int], NDArray[np.float32]] = {}

    def detect(self, photos: Sequence[NDArray[np.uint8]],
               input_sizes: Callable[[int, int], list[Size]]) -> list[Detections | Exception]:
        """For each RGB photo, SCRFD's (boxes with scores, landmarks) in its pixel coordinates,
        best first, or the exception that photo raised: one photo's failure is its own.
        ``input_sizes(width, height)``: the detector inputs of a photo of that size."""
        failures: dict[int, Exception] = {}
        groups: dict[Size, list[_Pass]] = defaultdict(list)
        for index, photo in enumerate(photos):
            try:
                height, width = photo.shape[:2]
                for order, size in enumerate(input_sizes(width, height)):
                    groups[canvas_for(size)].append(
                        _Pass(index, order, *fit(width, height, size), canvas_for(size)))
            except Exception as error:
                failures[index] = error
        found: dict[int, dict[int, Detections]] = defaultdict(dict)
        for canvas, passes in groups.items():
            per_run = self._per_run(canvas)
            for start in range(0, len(passes), per_run):
                self._run_passes(photos, passes[start : start + per_run], found, failures)
        return [failures[i] if i in failures else self._merge(found[i])
                for i in range(len(photos))]

    def _per_run(self, canvas: Size) -> int:
        count = max(1, self.run_pixels // (canvas[0] * canvas[1]))
        return 1 << (count.bit_length() - 1) if self.fixed_batches else count

    def _run_passes(self, photos: Sequence[NDArray[np.uint8]], passes: list[_Pass],
                    found: dict[int, dict[int, Detections]], failures: dict[int, Exception]
                    ) -> None:
        """Detect ``passes`` (all of one canvas) in one run; a failure stays the photo's own."""
        passes = [item for item in passes if item.photo not in failures]
        if not passes:
            return
        rows = 1 << (len(passes) - 1).bit_length() if self.fixed_batches else len(passes)
        width, height = passes[0].canvas
        batch = np.zeros((rows, height, width, 3), np.uint8)  # blank rows pad a fixed batch
        ready: list[_Pass] = []
        for item in passes:
            try:
                batch[len(ready), : item.height, : item.width] = cv2.resize(
                    photos[item.photo], (item.width, item.height))
                ready.append(item)
            except Exception as error:
                failures[item.photo] = error
        if not ready:
            return
        try:
            outputs = self._run(batch if self.fixed_batches else batch[: len(ready)])
        except Exception as error:
            if len(ready) == 1:
                failures[ready[0].photo] = error
            else:  # find the photo that broke the run: each again on its own
                for item in ready:
                    self._run_passes(photos, [item], found, failures)
            return
        try:
            decoded = self._decode(outputs, ready)
        except Exception as error:  # arithmetic on the outputs: no one photo's doing
            failures.update((item.photo, error) for item in ready)
            return
        for item, detections in zip(ready, decoded, strict=True):
            found[item.photo][item.order] = detections

    def _run(self, batch: NDArray[np.uint8]) -> list[NDArray[np.float32]]:
        """SCRFD on (n, height, width, 3) RGB photos; its input is normalised as SCRFD does
        (the same float32 values as its ``cv2.dnn.blobFromImage``, several times faster)."""
        scrfd = self.scrfd
        blob = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        blob -= np.float32(scrfd.input_mean)
        blob *= np.float32(1.0 / scrfd.input_std)
        return list(scrfd.session.run(scrfd.output_names, {scrfd.input_name: blob}))

    def _anchor_centers(self, canvas: Size, stride: int) -> NDArray[np.float32]:
        key = (canvas, stride)
        if key not in self._centers:
            rows, cols = canvas[1] // stride, canvas[0] // stride
            xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
            centers = np.stack([xs, ys], axis=-1).astype(np.float32)
            centers = (centers * stride).reshape((-1, 2))
            anchors = self.scrfd._num_anchors
            if anchors > 1:
                centers = np.stack([centers] * anchors, axis=1).reshape((-1, 2))
            self._centers[key] = centers
        return self._centers[key]

    def _decode(self, outputs: list[NDArray[np.float32]], ready: list[_Pass]
                ) -> list[Detections]:
        """``SCRFD.forward`` + ``_detect_candidates`` for the photos of one run (the first
        rows of ``outputs``), each level's candidates found in all rows at once."""
        scrfd = self.scrfd
        fmc, count = scrfd.fmc, len(ready)
        found: list[list[NDArray[np.float32]]] = [[], [], [], []]  # rows, scores, boxes, points
        for level, stride in enumerate(scrfd._feat_stride_fpn):
            scores = outputs[level][:count, :, 0]
            rows, anchors = np.nonzero(scores >= scrfd.det_thresh)
            centers = self._anchor_centers(ready[0].canvas, stride)[anchors]
            points = distance2kps(centers, outputs[level + 2 * fmc][rows, anchors] * stride)
            for kept, value in zip(found, (
                    rows, scores[rows, anchors],
                    distance2bbox(centers, outputs[level + fmc][rows, anchors] * stride),
                    points.reshape((len(rows), points.shape[1] // 2, 2))), strict=True):
                kept.append(value)
        photo_rows = np.concatenate(found[0])
        by_row = np.argsort(photo_rows, kind="stable")  # per photo, still in SCRFD's order
        bounds = np.searchsorted(photo_rows[by_row], np.arange(count + 1))
        scores, boxes, points = (np.concatenate(values)[by_row] for values in found[1:])
        results = []
        for row, item in enumerate(ready):
            part = slice(bounds[row], bounds[row + 1])
            order = np.argsort(-scores[part], kind="stable")
            candidates = np.hstack((boxes[part] / item.scale, scores[part, None]))
            results.append((candidates.astype(np.float32, copy=False)[order],
                            (points[part] / item.scale)[order]))
        return results

    def _merge(self, passes: dict[int, Detections]) -> Detections:
        """``SCRFD.detect``'s merge of a photo's input sizes: score order, then NMS."""
        kept = [passes[order] for order in sorted(passes) if passes[order][0].shape[0]]
        if not kept:
            return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
        candidates = np.vstack([boxes for boxes, _ in kept]).astype(np.float32, copy=False)
        order = np.argsort(-candidates[:, 4], kind="stable")
        candidates = candidates[order]
        points = np.vstack([points for _, points in kept])[order]
        keep = self.scrfd.nms(candidates)
        return candidates[keep], points[keep]
