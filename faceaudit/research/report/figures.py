"""The figures of one index, computed over whole columns: images.parquet read column by column
with pyarrow, the face tables memory-mapped with numpy. No per-face (or per-image) Python
object is made, so an index of 10^7 faces takes seconds, not hours.

These are raw counts; ``faceaudit.research.report.publish`` applies small-count suppression before
anything is written.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from faceaudit.indexer.store import IMAGES_FILE, STATUS_FAILED
from faceaudit.research.report.index_files import IndexFiles
from faceaudit.research.report.licences import NON_COMMERCIAL, licence_category, licence_label
from faceaudit.research.report.suppression import (
    OTHER_REASONS,
    Histogram,
    float_histogram,
    integer_histogram,
)

FACES_PER_IMAGE_EDGES = (0, 1, 2, 3, 4, 5, 10, 20, 50)
FACE_SIZE_EDGES = (0, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
SCORE_EDGES = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
# A bystander (see ``bystanders``): smaller than this share of the photo's largest face, or
# with its centre outside the middle band of the photo, this share of each side from the edge.
BYSTANDER_SIZE_RATIO = 0.5
BYSTANDER_EDGE_SHARE = 0.2
_URL = re.compile(r"\b(?:https?|ftp)://\S+", re.IGNORECASE)


@dataclass
class DatasetFigures:
    """The additive figures of one index (or of several, summed by ``combine``)."""

    images: int = 0
    images_with_faces: int = 0
    images_without_faces: int = 0  # indexed, no embedded face
    failed_images: int = 0
    faces: int = 0
    faces_not_embedded: int = 0  # found but too small to embed, or removal requested
    detected_faces: int = 0  # faces + faces_not_embedded
    bystander_faces: int = 0
    photos_with_bystanders: int = 0
    non_commercial_photos: int = 0
    faces_per_image: Histogram | None = None
    face_sizes: Histogram | None = None
    detection_scores: Histogram | None = None
    failures_by_reason: Counter[str] = field(default_factory=Counter)
    licences: Counter[str] = field(default_factory=Counter)
    licence_categories: Counter[str] = field(default_factory=Counter)
    non_commercial_licences: set[str] = field(default_factory=set)  # labels of NC photos
    coverage: dict[str, Any] = field(default_factory=dict)

    @property
    def indexed(self) -> int:
        return self.images - self.failed_images


def dataset_figures(index: IndexFiles) -> DatasetFigures:
    """Everything about ``index`` but its uploaders and identities (``people``)."""
    columns = pq.read_table(index.folder / IMAGES_FILE,
                            columns=["status", "width", "height", "licence_name",
                                     "licence_url"])
    figures = DatasetFigures(images=columns.num_rows)
    failed = _as_bool(pc.equal(columns.column("status"), STATUS_FAILED))
    figures.failed_images = int(failed.sum())

    image_of_face = np.asarray(index.faces.image_id)
    per_image = np.bincount(image_of_face, minlength=figures.images)
    figures.faces = len(image_of_face)
    figures.images_with_faces = int(np.count_nonzero(per_image))
    figures.images_without_faces = figures.indexed - figures.images_with_faces
    figures.faces_per_image = integer_histogram(
        per_image[~failed], FACES_PER_IMAGE_EDGES, "faces found in the photo", "photos")

    boxes = np.asarray(index.faces.bbox)
    figures.face_sizes = float_histogram(
        _short_side(boxes), FACE_SIZE_EDGES, "face size (shorter side of its box)", "faces",
        " px")
    figures.detection_scores = float_histogram(
        np.asarray(index.faces.score), SCORE_EDGES, "detection score", "faces")

    small_boxes = np.asarray(index.small_faces.bbox)
    figures.faces_not_embedded = len(small_boxes)
    figures.detected_faces = figures.faces + figures.faces_not_embedded
    sizes = np.stack([_column(columns, "width"), _column(columns, "height")], axis=1)
    figures.bystander_faces, figures.photos_with_bystanders = bystanders(
        np.concatenate([image_of_face, np.asarray(index.small_faces.image_id)]),
        np.concatenate([boxes, small_boxes]), sizes)

    figures.licences, figures.licence_categories, figures.non_commercial_licences = \
        licence_counts(columns)
    figures.non_commercial_photos = figures.licence_categories[NON_COMMERCIAL]
    figures.failures_by_reason = failure_reasons(index.manifest, figures.failed_images)
    figures.coverage = coverage(index.manifest)
    return figures


def _as_bool(array: pa.ChunkedArray | pa.Array) -> NDArray[np.bool_]:
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _column(table: pa.Table, name: str) -> NDArray[np.float64]:
    return np.asarray(table.column(name).fill_null(0).to_numpy(zero_copy_only=False),
                      dtype=np.float64)


def _short_side(boxes: NDArray[np.floating]) -> NDArray[np.float32]:
    if not len(boxes):
        return np.empty(0, np.float32)
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def bystanders(image_of_face: NDArray[np.integer], boxes: NDArray[np.floating],
               image_sizes: NDArray[np.floating]) -> tuple[int, int]:
    """(bystander faces, photos with at least one) among every face found (``boxes``, n x 4,
    in pixels of the upright photo; ``image_sizes`` (images x 2) width and height).

    A face is a bystander when its photo has a larger face (a longer shorter-side) and it is
    either small (shorter side under BYSTANDER_SIZE_RATIO of the photo's largest face's) or
    off-centre (the centre of its box within BYSTANDER_EDGE_SHARE of the photo's width from
    the left or right edge, or of its height from the top or bottom). The largest face of a
    photo (all of them on a tie) is never a bystander."""
    if not len(boxes):
        return 0, 0
    short = _short_side(boxes).astype(np.float64)
    largest = np.zeros(len(image_sizes), np.float64)
    np.maximum.at(largest, image_of_face, short)
    of_photo = largest[image_of_face]
    width, height = image_sizes[image_of_face, 0], image_sizes[image_of_face, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = cx / width, cy / height
    edge = BYSTANDER_EDGE_SHARE
    off_centre = (width > 0) & (height > 0) & ((x < edge) | (x > 1 - edge) | (y < edge)
                                               | (y > 1 - edge))
    bystander = (short < of_photo) & ((short < BYSTANDER_SIZE_RATIO * of_photo) | off_centre)
    photos = np.bincount(image_of_face[bystander], minlength=len(image_sizes))
    return int(bystander.sum()), int(np.count_nonzero(photos))


def licence_counts(columns: pa.Table) -> tuple[Counter[str], Counter[str], set[str]]:
    """(licence label -> photos, licence category -> photos, labels of non-commercial
    photos): grouped by pyarrow first, so only the distinct (name, URL) pairs are looked at
    in Python."""
    grouped = columns.select(["licence_name", "licence_url"]).group_by(
        ["licence_name", "licence_url"], use_threads=False).aggregate([([], "count_all")])
    labels: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    non_commercial: set[str] = set()
    for name, url, count in zip(grouped.column("licence_name").to_pylist(),
                                grouped.column("licence_url").to_pylist(),
                                grouped.column("count_all").to_pylist(), strict=True):
        labels[licence_label(name, url)] += count
        category = licence_category(name, url)
        categories[category] += count
        if category == NON_COMMERCIAL:
            non_commercial.add(licence_label(name, url))
    return labels, categories, non_commercial


def failure_reasons(manifest: dict[str, Any], failed: int) -> Counter[str]:
    """Why images failed, from the manifest (which names no file): URLs are taken out, and
    the images beyond the reasons the manifest lists are counted as "other reasons"."""
    reasons: Counter[str] = Counter()
    for reason, count in (manifest.get("failure_reasons") or {}).items():
        reasons[_URL.sub("<a URL>", reason)] += int(count)
    unlisted = failed - sum(reasons.values())
    if unlisted > 0:
        reasons[OTHER_REASONS] += unlisted
    return reasons


def coverage(manifest: dict[str, Any]) -> dict[str, Any]:
    """The source's coverage as the build measured it: rows, downloaded, not downloaded by
    reason, malformed rows, duplicates (counts only)."""
    found = manifest.get("coverage") or {}
    not_downloaded: Counter[str] = Counter()
    for reason, count in (found.get("not_downloaded") or {}).items():
        not_downloaded[_URL.sub("<a URL>", reason)] += int(count)
    return {"rows": int(found.get("rows", 0)), "downloaded": int(found.get("downloaded", 0)),
            "not_downloaded": not_downloaded, "malformed": int(found.get("malformed", 0)),
            "duplicates": int(found.get("duplicates", 0))}


def combine(parts: list[DatasetFigures]) -> DatasetFigures:
    """The figures of several indexes together: counts, counters and histogram bins summed."""
    total = DatasetFigures()
    for f in fields(DatasetFigures):
        values = [getattr(p, f.name) for p in parts]
        if f.name == "coverage":
            merged: dict[str, Any] = {"not_downloaded": Counter()}
            for value in values:
                for key, count in value.items():
                    merged[key] = merged.get(key, 0) + count
            setattr(total, f.name, merged)
        elif isinstance(values[0], Histogram):
            first = values[0]
            bins = tuple(type(b)(b.low, b.high, sum(v.bins[i].count for v in values), b.label)
                         for i, b in enumerate(first.bins))
            setattr(total, f.name, Histogram(first.measure, first.counts_what, bins, first.unit))
        elif isinstance(values[0], Counter):
            setattr(total, f.name, sum(values, Counter()))
        elif isinstance(values[0], set):
            setattr(total, f.name, set().union(*values))
        else:
            setattr(total, f.name, sum(values))
    return total
