"""1:N self-search: each identity's first image searches a gallery of everybody's other images.

For every identity with at least two images, its first image (sorted) is the selfie and its
other images are in the gallery, indexed with all their faces as ``index`` does and searched
with ``search_vectors``, the core of ``FaceIndex.search``. Identities with a single image give
the non-mated searches (FPIR). A mated selfie without a face counts as a search that found
nothing; a non-mated selfie without a face is left out of FPIR, as it tests nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.indexer.ann import VectorSearch
from faceaudit.indexer.search import search_vectors
from faceaudit.research.evaluation.dataset import Dataset, ExtractedFaces, selfie_vector
from faceaudit.research.metrics.identification import (
    SearchHits,
    SearchPoint,
    best_recall_at_fpir,
    search_point,
    search_sweep,
)

MAX_FPIR = 0.01
# Examples a report lists (false matches here, images without a face in the protocol).
EXAMPLES = 20


@dataclass(frozen=True)
class SearchReport:
    searches: int  # mated: the selfie's person has photos in the gallery
    nonmated_searches: int
    gallery_images: int
    gallery_faces: int
    selfies_without_face: int  # mated; counted as searches that found nothing
    nonmated_selfies_without_face: int  # left out of FPIR
    threshold: float
    recall: float
    fnir: float
    fpir: float
    false_matches_per_search: float
    non_centre_hits: int
    fpir_labelled_only: float
    recall_at_fpir_1pct: dict[str, float] | None
    sweep: list[SearchPoint]
    false_match_examples: list[dict[str, Any]]  # at ``threshold``, best score first


@dataclass
class _Gallery:
    """The gallery as ``index`` would build it: every face of every gallery image."""

    paths: list[str] = field(default_factory=list)
    identity: list[str] = field(default_factory=list)
    labelled_face: list[int] = field(default_factory=list)  # global face row, -1 if none
    vectors: list[NDArray[np.float32]] = field(default_factory=list)
    face_image: list[int] = field(default_factory=list)

    def add(self, path: str, identity: str, faces: ExtractedFaces) -> None:
        first = len(self.face_image)
        labelled = faces.labelled
        self.labelled_face.append(-1 if labelled is None else first + labelled)
        self.face_image.extend([len(self.paths)] * len(faces.vectors))
        self.vectors.extend(faces.vectors)
        self.paths.append(path)
        self.identity.append(identity)


def self_search(
    dataset: Dataset,
    extracted: Mapping[str, ExtractedFaces],
    thresholds: NDArray[np.floating],
    threshold: float,
) -> SearchReport:
    """1:N: each identity's first image searches a gallery of everybody's other images."""
    gallery = _Gallery()
    mated: list[tuple[str, str, int]] = []  # (identity, selfie, own photos in the gallery)
    nonmated: list[tuple[str, str]] = []
    for name, paths in dataset.identities.items():
        if len(paths) >= 2:
            mated.append((name, paths[0], len(paths) - 1))
            for path in paths[1:]:
                gallery.add(path, name, extracted[path])
        else:
            nonmated.append((name, paths[0]))
    dimension = next((f.vectors.shape[1] for f in extracted.values() if len(f.vectors)), 1)
    vectors = (np.array(gallery.vectors, np.float32) if gallery.vectors
               else np.empty((0, dimension), np.float32))
    index = VectorSearch.in_memory(vectors)
    face_image = np.array(gallery.face_image, np.int64)
    lowest = float(min(np.min(thresholds), threshold))

    searchable_nonmated = [(n, p) for n, p in nonmated if extracted[p].labelled is not None]
    searches = [(n, p, total) for n, p, total in mated] + [(n, p, 0)
                                                          for n, p in searchable_nonmated]
    own_total, hit_search, hit_score, hit_own, hit_labelled = [], [], [], [], []
    examples: list[dict[str, Any]] = []
    for number, (name, selfie, total) in enumerate(searches):
        own_total.append(total)
        query = selfie_vector(extracted[selfie])
        if query is None:
            continue
        for image_id, score, face_id in search_vectors(index, face_image, query, lowest):
            labelled = gallery.labelled_face[image_id]
            labelled_score = score if face_id == labelled else float(np.dot(query,
                                                                           vectors[labelled]))
            own = gallery.identity[image_id] == name
            hit_search.append(number)
            hit_score.append(score)
            hit_own.append(own)
            hit_labelled.append(labelled_score)
            if not own and score > threshold:
                examples.append({"selfie": selfie, "photo": gallery.paths[image_id],
                                 "score": score, "mated": total > 0,
                                 "labelled_face": labelled_score > threshold})
    hits = SearchHits(
        own_total=np.array(own_total, np.int64),
        search=np.array(hit_search, np.int64),
        score=np.array(hit_score, np.float64),
        own=np.array(hit_own, bool),
        labelled_score=np.array(hit_labelled, np.float64),
    )
    sweep = search_sweep(hits, thresholds)
    at = search_point(hits, threshold)
    best = best_recall_at_fpir(sweep, MAX_FPIR)
    examples.sort(key=lambda e: -e["score"])
    return SearchReport(
        searches=len(mated),
        nonmated_searches=len(searchable_nonmated),
        gallery_images=len(gallery.paths),
        gallery_faces=len(vectors),
        selfies_without_face=sum(1 for _, p, _ in mated if extracted[p].labelled is None),
        nonmated_selfies_without_face=len(nonmated) - len(searchable_nonmated),
        threshold=at.threshold,
        recall=at.recall,
        fnir=at.fnir,
        fpir=at.fpir,
        false_matches_per_search=at.false_matches_per_search,
        non_centre_hits=at.non_centre_hits,
        fpir_labelled_only=at.fpir_labelled_only,
        recall_at_fpir_1pct=(None if best is None else
                             {"threshold": best.threshold, "recall": best.recall,
                              "fpir": best.fpir}),
        sweep=sweep,
        false_match_examples=examples[:EXAMPLES],
    )
