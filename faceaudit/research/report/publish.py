"""The report's JSON tree: every figure placed under its name, every count registered with
``Cells`` (with the additive relations between them), then small counts withheld.

One section holds the figures of a set of photos: all the indexes together at the top level
of ``report.json``, and, with several indexes, each one under ``datasets``. Cells of the
all-together section equal the sum of the datasets' cells where the figure adds up (images,
faces, licences, bins...): those sums are relations too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faceaudit.research.report.figures import DatasetFigures
from faceaudit.research.report.licences import CATEGORIES, NON_COMMERCIAL
from faceaudit.research.report.people import MANY_PHOTOS, IdentityFigures, UploaderFigures
from faceaudit.research.report.suppression import Cells, Histogram, pointer

HISTOGRAMS = ("faces_per_image", "face_sizes", "detection_scores", "photos_per_uploader",
              "photos_per_identity")


@dataclass
class Section:
    """The figures of one set of photos, histograms already coded (``code_histograms``)."""

    figures: DatasetFigures
    uploaders: UploaderFigures
    people: IdentityFigures | None
    histograms: dict[str, Histogram]


class _Writer:
    """Puts counts into a section's tree, registered under ``prefix`` + their path, and
    remembers each by a key that names the same figure in every section."""

    def __init__(self, cells: Cells, prefix: tuple[str | int, ...]) -> None:
        self.cells, self.prefix = cells, prefix
        self.by_key: dict[str, str] = {}

    def count(self, tree: dict[str, Any], path: tuple[str | int, ...], value: int,
              key: str | None = None) -> str:
        node: Any = tree
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = int(value)
        where = pointer(*self.prefix, *path)
        self.cells.add(where, value)
        self.by_key[key or "/".join(str(p) for p in path)] = where
        return where

    def relate(self, total: str, parts: list[str]) -> None:
        self.cells.relate(total, parts)

    def relate_if_exact(self, total: str, parts: list[str]) -> None:
        self.cells.relate_if_exact(total, parts)


def section_tree(cells: Cells, prefix: tuple[str | int, ...], section: Section
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """(the section's JSON tree, key -> pointer of each of its counts)."""
    f = section.figures
    tree: dict[str, Any] = {}
    w = _Writer(cells, prefix)
    images = w.count(tree, ("images",), f.images)
    with_faces = w.count(tree, ("images_with_faces",), f.images_with_faces)
    without = w.count(tree, ("images_without_faces",), f.images_without_faces)
    failed = w.count(tree, ("failed_images",), f.failed_images)
    w.relate(images, [with_faces, without, failed])
    faces = w.count(tree, ("faces",), f.faces)
    not_embedded = w.count(tree, ("faces_not_embedded",), f.faces_not_embedded)
    detected = w.count(tree, ("detected_faces",), f.detected_faces)
    w.relate(detected, [faces, not_embedded])
    w.count(tree, ("bystander_faces",), f.bystander_faces)
    w.count(tree, ("photos_with_bystanders",), f.photos_with_bystanders)

    tree["failures_by_reason"] = {}
    reasons = [w.count(tree, ("failures_by_reason", r), c) for r, c in
               sorted(f.failures_by_reason.items(), key=lambda rc: (-rc[1], rc[0]))]
    w.relate_if_exact(failed, reasons)

    cov = f.coverage
    tree["coverage"] = {"not_downloaded": {}}
    rows = w.count(tree, ("coverage", "rows"), cov.get("rows", 0))
    downloaded = w.count(tree, ("coverage", "downloaded"), cov.get("downloaded", 0))
    missing = [w.count(tree, ("coverage", "not_downloaded", r), c) for r, c in
               sorted(cov.get("not_downloaded", {}).items(), key=lambda rc: (-rc[1], rc[0]))]
    malformed = w.count(tree, ("coverage", "malformed"), cov.get("malformed", 0))
    duplicates = w.count(tree, ("coverage", "duplicates"), cov.get("duplicates", 0))
    indexed = w.count(tree, ("coverage", "indexed"), f.indexed)
    w.relate(images, [indexed, failed])
    w.relate_if_exact(rows, [downloaded, *missing, malformed])
    w.relate_if_exact(rows, [downloaded, *missing])
    w.relate_if_exact(downloaded, [images, duplicates])

    tree["licences"], tree["licence_categories"] = {}, {}
    licences = [w.count(tree, ("licences", name), c) for name, c in
                sorted(f.licences.items(), key=lambda nc: (-nc[1], nc[0]))]
    w.relate(images, licences)
    categories = [w.count(tree, ("licence_categories", name), f.licence_categories[name])
                  for name in CATEGORIES]
    w.relate(images, categories)
    non_commercial = w.count(tree, ("non_commercial_photos",), f.non_commercial_photos)
    w.relate(non_commercial, [w.by_key[f"licence_categories/{NON_COMMERCIAL}"]])
    w.relate_if_exact(non_commercial, [w.by_key[f"licences/{name}"]
                                       for name in sorted(f.non_commercial_licences)])

    u = section.uploaders
    uploaders = w.count(tree, ("uploaders",), u.uploaders)
    w.count(tree, ("photos_without_uploader",), u.photos_without_uploader)

    people = section.people
    identities = None
    if people is not None:
        identities = w.count(tree, ("identities_estimated",), people.identities)
        w.count(tree, ("people_photographed_by_others",), people.photographed_by_others)
        many = w.count(tree, (f"identities_in_{MANY_PHOTOS}_or_more_photos",),
                       people.in_many_photos)
    else:
        tree["identities_estimated"] = tree["people_photographed_by_others"] = None

    totals = {"faces_per_image": indexed, "face_sizes": faces, "detection_scores": faces,
              "photos_per_uploader": uploaders, "photos_per_identity": identities}
    for name, histogram in section.histograms.items():
        tree[name] = {"measure": histogram.measure, "counts": histogram.counts_what,
                      "bins": [{"label": b.label, "low": b.low, "high": b.high}
                               for b in histogram.bins]}
        bins = [w.count(tree, (name, "bins", i, "count"), b.count, key=f"{name}/{b.label}")
                for i, b in enumerate(histogram.bins)]
        total = totals[name]
        if total is not None:
            w.relate(total, bins)
        if name == "faces_per_image":
            w.relate_if_exact(with_faces, [p for p, b in zip(bins, histogram.bins,
                                                              strict=True) if b.low >= 1])
        if name == "photos_per_identity" and people is not None:
            w.relate_if_exact(many, [p for p, b in zip(bins, histogram.bins, strict=True)
                                     if b.low >= MANY_PHOTOS])
    return tree, w.by_key


def relate_sections(cells: Cells, total: Mapping[str, str], parts: Sequence[Mapping[str, str]]
                    ) -> None:
    """Register total = sum of the datasets' for every figure where it adds up (a figure a
    dataset lacks is a published zero there)."""
    for key, where in total.items():
        cells.relate_if_exact(where, [p[key] for p in parts if key in p])


def withhold(tree: dict[str, Any], hidden: set[str], value: Any = None) -> None:
    """Replace the counts at the pointers ``hidden`` by null (or ``value``)."""
    for where in hidden:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in where.split("/")[1:]]
        node: Any = tree
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value


def add_shares(tree: dict[str, Any]) -> None:
    """``licence_shares`` and ``non_commercial_share``: published licence counts over the
    published image count."""
    images = tree.get("images")

    def share(count: int | None) -> float | None:
        return round(count / images, 4) if count is not None and images else None

    tree["licence_shares"] = {name: share(count) for name, count in tree["licences"].items()}
    tree["non_commercial_share"] = share(tree["non_commercial_photos"])
