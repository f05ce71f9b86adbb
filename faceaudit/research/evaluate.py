"""Evaluate the face pipeline on a labelled dataset: 1:1 verification, 1:N self-search and the
impostor false-match rate, all from one extraction of every image.

The dataset has one folder per identity (LFW layout, ``Name/Name_0001.jpg``). Each image's
label is about one face; following LFW, that is the face nearest the image centre (the
"labelled" face). Extraction is pluggable: ``run_eval`` takes ``ExtractedFaces`` per image, so
any detector and embedder with L2-normalised vectors goes through the same protocol;
``extract_with_engine`` builds them with the exact pipeline that ``faceaudit index`` runs.

Choices a reader should know:

- Verification: a pair in which either image has no face scores ``NO_FACE_SCORE`` (-1, the
  lowest cosine), so it is decided "different": wrong for a same-person pair, right for a
  different-person one. This is the usual honest choice; the count is reported.
- 1:N: for every identity with at least two images, its first image (sorted) is the selfie
  and its other images are in the gallery, indexed with all their faces as ``index`` does
  and searched with ``search_vectors``, the core of ``FaceIndex.search``. Identities with a
  single image give the non-mated searches (FPIR). A mated selfie without a face counts as a
  search that found nothing; a non-mated selfie without a face is left out of FPIR, as it
  tests nothing.
- Clustering: every face of every image is clustered as ``faceaudit cluster`` clusters an
  index (``faceaudit.research.cluster``), and the labelled faces, whose identity is known,
  are scored (pairwise and BCubed precision and recall, and the identity count against the
  true one). Faces of unlabelled people in the background take part, as in a real dataset,
  but are not scored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.ann import VectorSearch
from faceaudit.indexer.pipeline import StageTimes, process_images
from faceaudit.indexer.readers.folder import scan_folder
from faceaudit.indexer.search import DEFAULT_THRESHOLD, search_vectors
from faceaudit.indexer.store import STATUS_FAILED
from faceaudit.models.calibration import Calibration
from faceaudit.models.engine import FaceEngine
from faceaudit.research import cluster, metrics

log = logging.getLogger(__name__)

SWEEP = np.round(np.arange(0.20, 0.70 + 1e-9, 0.025), 3)
# Wider, for calibration: the false-match-rate curve must reach the scores of strong matches.
CALIBRATION_SWEEP = np.round(np.arange(0.10, 0.90 + 1e-9, 0.025), 3)
# Finer, for fitting the tail of the impostor scores (faceaudit.models.calibration.fit_tail).
TAIL_GRID = np.round(np.arange(0.0, 1.0 + 1e-9, 0.005), 3)
FAR_LEVELS = (1e-2, 1e-3)
MAX_FPIR = 0.01
NO_FACE_SCORE = -1.0
# Impostor comparisons are counted block by block over all pairs of labelled faces; above
# this many faces a deterministic sample of them is used (n^2/2 comparisons grow fast).
MAX_IMPOSTOR_FACES = 20_000
IMPOSTOR_BLOCK = 1024
EXAMPLES = 20
# Clustering thresholds reported: from where lfw-dev's strangers start to chain people
# together to what an index of about 10^7 faces uses.
CLUSTER_SWEEP = np.round(np.arange(0.30, 0.60 + 1e-9, 0.025), 3)


@dataclass(frozen=True)
class Dataset:
    """Images by identity: ``identities[name]`` are the sorted paths (relative to ``root``)."""

    root: Path
    identities: dict[str, tuple[str, ...]]

    @property
    def paths(self) -> list[str]:
        return sorted(path for paths in self.identities.values() for path in paths)


def load_dataset(root: Path) -> Dataset:
    """Every image under ``root``, its identity being its folder (relative to ``root``).
    Images directly in ``root`` have no identity and are left out."""
    if not root.is_dir():
        raise FaceAuditError(f"Dataset folder {root} does not exist or is not a folder.")
    identities: dict[str, list[str]] = {}
    loose = 0
    for path, _ in scan_folder(root):
        folder = Path(path).parent.as_posix()
        if folder == ".":
            loose += 1
            continue
        identities.setdefault(folder, []).append(path)
    if loose:
        log.warning("%d images directly in %s have no identity folder: left out", loose, root)
    if not identities:
        raise FaceAuditError(f"{root} has no identity folders with images (expected "
                             "Name/Name_0001.jpg, as LFW).")
    return Dataset(root, {name: tuple(sorted(paths)) for name, paths in sorted(identities.items())})


@dataclass(frozen=True)
class ExtractedFaces:
    """The faces found in one image by some extractor: boxes (n, 4) as x1, y1, x2, y2 in
    pixels of the upright photo, L2-normalised vectors (n, d), the photo's size, and the error
    when the image could not be processed (then n = 0)."""

    boxes: NDArray[np.float32]
    vectors: NDArray[np.float32]
    width: int
    height: int
    error: str | None = None
    query_vectors: NDArray[np.float32] | None = None  # as the image is embedded as a selfie

    @property
    def labelled(self) -> int | None:
        """Index of the face whose box centre is nearest the image centre (LFW's label)."""
        if len(self.boxes) == 0:
            return None
        centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2
        offsets = centres - np.array([self.width / 2, self.height / 2], np.float32)
        return int(np.argmin((offsets**2).sum(axis=1)))


def extract_with_engine(
    engine: FaceEngine,
    dataset: Dataset,
    *,
    workers: int = 2,
    times: StageTimes | None = None,
    progress: Callable[[int, int], None] | None = None,
    embed_selfies: bool = True,
) -> dict[str, ExtractedFaces]:
    """Every image of ``dataset`` through ``process_images``, the pipeline of ``index``; the
    images that serve as selfies are also embedded as ``search`` embeds a selfie (unless
    ``embed_selfies`` is false: then only what ``index`` computes)."""
    paths = dataset.paths
    selfies = {images[0] for images in dataset.identities.values()} if embed_selfies else set()
    extracted: dict[str, ExtractedFaces] = {}
    for done, item in enumerate(
        process_images(engine, dataset.root, paths, workers=workers, times=times,
                       query_paths=selfies), start=1
    ):
        record = item.record
        boxes = np.array([face.bbox for face in item.faces], np.float32).reshape(-1, 4)
        error = record.error if record.status == STATUS_FAILED else None
        extracted[record.path] = ExtractedFaces(boxes, item.vectors, record.width or 0,
                                                record.height or 0, error, item.query_vectors)
        if progress:
            progress(done, len(paths))
    return extracted


@dataclass(frozen=True)
class VerificationReport:
    pairs: int
    same_pairs: int
    different_pairs: int
    folds: int
    fold_source: str
    pairs_with_missing_face: int
    accuracy: float  # mean over folds, threshold chosen on the other folds
    accuracy_std: float  # population std over folds, as LFW results report it
    threshold: float  # mean of the chosen thresholds
    threshold_std: float
    balanced_accuracy: float  # over all out-of-fold decisions
    balanced_threshold: float
    auc: float
    tar_at_far: dict[str, float]
    tar_at_far_threshold: dict[str, float]  # accept scores above it


@dataclass(frozen=True)
class ImpostorReport:
    faces: int  # labelled faces compared
    comparisons: int  # pairs of them with different identities
    sampled: bool
    max_score: float
    fmr: list[dict[str, float]]  # {"threshold", "fmr"} per sweep threshold
    counts_above: list[dict[str, float]]  # {"threshold", "count"} per TAIL_GRID threshold


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
    sweep: list[metrics.SearchPoint]
    false_match_examples: list[dict[str, Any]]  # at ``threshold``, best score first


@dataclass(frozen=True)
class ClusteringReport:
    """Identity clustering (``faceaudit cluster``) scored on the labelled faces.
    ``scores``: ``metrics.ClusterScores`` at ``threshold`` with its ``identities_error``;
    ``without_guard``: the same with the chaining guard off (connected components);
    ``sweep``: the scores per threshold, each with ``index_faces``, the index size whose
    default threshold it is (None below the base threshold, or uncalibrated)."""

    faces: int  # every face found, all clustered
    scored_faces: int  # the labelled ones, scored
    k: int
    min_link: float
    threshold: float
    method: str
    scores: dict[str, Any]
    without_guard: dict[str, Any]
    sweep: list[dict[str, Any]]


@dataclass(frozen=True)
class EvalReport:
    images: int
    identities: int
    no_face_images: int
    failed_images: int
    no_face_examples: list[str]
    verification: VerificationReport | None
    search: SearchReport
    impostor: ImpostorReport
    clustering: ClusteringReport | None = None


def _labelled_vector(faces: ExtractedFaces) -> NDArray[np.float32] | None:
    index = faces.labelled
    return None if index is None else faces.vectors[index]


def _selfie_vector(faces: ExtractedFaces) -> NDArray[np.float32] | None:
    """The labelled face as a selfie is embedded (``query_vectors`` when the extractor gives
    them: faceaudit embeds selfies with their mirror image), else as any photo is."""
    index = faces.labelled
    if index is None:
        return None
    return (faces.query_vectors if faces.query_vectors is not None else faces.vectors)[index]


def check_pairs(pairs: metrics.Pairs, images: Container[str]) -> None:
    """Raise when the pairs name images that the dataset does not have."""
    missing = sorted({p for p in pairs.left + pairs.right if p not in images})
    if missing:
        raise FaceAuditError(
            f"{len(missing)} images named in the pairs file are not in the dataset, e.g. "
            f"{', '.join(missing[:5])}: is the pairs file for this dataset?")


def verify_pairs(pairs: metrics.Pairs, extracted: Mapping[str, ExtractedFaces]
                 ) -> VerificationReport:
    """LFW verification on the labelled faces of each pair."""
    check_pairs(pairs, extracted)
    scores = np.full(len(pairs), NO_FACE_SCORE)
    for k, (left, right) in enumerate(zip(pairs.left, pairs.right, strict=True)):
        a, b = _labelled_vector(extracted[left]), _labelled_vector(extracted[right])
        if a is not None and b is not None:
            scores[k] = float(np.dot(a, b))
    same = pairs.same
    plain = metrics.kfold_verification(scores, same, pairs.fold)
    balanced = metrics.kfold_verification(scores, same, pairs.fold, balanced=True)
    tar, tar_threshold = {}, {}
    for far in FAR_LEVELS:
        tar[f"{far:g}"], tar_threshold[f"{far:g}"] = metrics.tar_at_far(
            scores[same], scores[~same], far)
    return VerificationReport(
        pairs=len(pairs),
        same_pairs=int(same.sum()),
        different_pairs=int((~same).sum()),
        folds=pairs.folds,
        fold_source=pairs.fold_source,
        pairs_with_missing_face=int((scores == NO_FACE_SCORE).sum()),
        accuracy=float(plain.fold_scores.mean()),
        accuracy_std=float(plain.fold_scores.std()),
        threshold=float(plain.thresholds.mean()),
        threshold_std=float(plain.thresholds.std()),
        balanced_accuracy=metrics.balanced_accuracy(balanced.predicted, same),
        balanced_threshold=float(balanced.thresholds.mean()),
        auc=metrics.roc_auc(scores, same),
        tar_at_far=tar,
        tar_at_far_threshold=tar_threshold,
    )


def impostor_fmr(dataset: Dataset, extracted: Mapping[str, ExtractedFaces],
                 thresholds: NDArray[np.floating]) -> ImpostorReport:
    """FMR per comparison over every pair of labelled faces of different identities."""
    rows, owners = [], []
    for number, paths in enumerate(dataset.identities.values()):
        for path in paths:
            vector = _labelled_vector(extracted[path])
            if vector is not None:
                rows.append(vector)
                owners.append(number)
    sampled = len(rows) > MAX_IMPOSTOR_FACES
    if sampled:
        keep = np.sort(np.random.default_rng(0).choice(len(rows), MAX_IMPOSTOR_FACES,
                                                       replace=False))
        rows, owners = [rows[i] for i in keep], [owners[i] for i in keep]
    vectors = np.array(rows, np.float32)
    identity = np.array(owners, np.int64)
    counts = np.zeros(len(thresholds), np.int64)
    tail_counts = np.zeros(len(TAIL_GRID), np.int64)
    comparisons, max_score = 0, float("nan")
    for start in range(0, len(vectors), IMPOSTOR_BLOCK):
        stop = min(start + IMPOSTOR_BLOCK, len(vectors))
        similarity = vectors[start:stop] @ vectors[start:].T  # each pair once: columns >= row
        row = np.arange(start, stop)[:, None]
        column = np.arange(start, len(vectors))[None, :]
        impostor = (column > row) & (identity[start:stop, None] != identity[None, start:])
        scores = similarity[impostor]
        counts += metrics.count_above(scores, thresholds)
        tail_counts += metrics.count_above(scores, TAIL_GRID)
        comparisons += len(scores)
        if len(scores):
            max_score = float(np.nanmax([max_score, scores.max()]))
    fmr = counts / comparisons if comparisons else np.full(len(thresholds), np.nan)
    return ImpostorReport(
        faces=len(vectors), comparisons=comparisons, sampled=sampled, max_score=max_score,
        fmr=[{"threshold": float(t), "fmr": float(f)} for t, f in zip(thresholds, fmr,
                                                                       strict=True)],
        counts_above=[{"threshold": float(t), "count": int(n)}
                      for t, n in zip(TAIL_GRID, tail_counts, strict=True)],
    )


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
        query = _selfie_vector(extracted[selfie])
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
    hits = metrics.SearchHits(
        own_total=np.array(own_total, np.int64),
        search=np.array(hit_search, np.int64),
        score=np.array(hit_score, np.float64),
        own=np.array(hit_own, bool),
        labelled_score=np.array(hit_labelled, np.float64),
    )
    sweep = metrics.search_sweep(hits, thresholds)
    at = metrics.search_point(hits, threshold)
    best = metrics.best_recall_at_fpir(sweep, MAX_FPIR)
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


def _scores(true: NDArray[np.int64], predicted: NDArray[np.int64]) -> dict[str, Any]:
    scores = metrics.cluster_scores(true, predicted)
    return {**asdict(scores), "identities_error": scores.identities_error}


def cluster_quality(
    dataset: Dataset,
    extracted: Mapping[str, ExtractedFaces],
    *,
    threshold: float | None = None,
    calibration: Calibration | None = None,
    thresholds: Sequence[float] | NDArray[np.floating] = CLUSTER_SWEEP,
    k: int = cluster.DEFAULT_K,
    min_link: float = cluster.DEFAULT_MIN_LINK,
) -> ClusteringReport:
    """Cluster every extracted face and score the labelled ones. ``threshold`` defaults to
    what ``faceaudit cluster`` uses for an index of this many faces under ``calibration``
    (BASE_THRESHOLD without one)."""
    vectors: list[NDArray[np.float32]] = []
    labelled_rows: list[int] = []
    owners: list[int] = []
    for number, paths in enumerate(dataset.identities.values()):
        for path in paths:
            faces = extracted[path]
            if faces.labelled is not None:
                labelled_rows.append(len(vectors) + faces.labelled)
                owners.append(number)
            vectors.extend(faces.vectors)
    dimension = next((f.vectors.shape[1] for f in extracted.values() if len(f.vectors)), 1)
    matrix = (np.array(vectors, np.float32) if vectors
              else np.empty((0, dimension), np.float32))
    if threshold is None:
        threshold = (cluster.default_threshold(calibration, len(matrix)) if calibration
                     else cluster.BASE_THRESHOLD)
    sweep = sorted({float(t) for t in thresholds})
    search = cluster.neighbour_search(VectorSearch.in_memory(matrix))
    graph = cluster.knn_graph(matrix, k, min([threshold, *sweep]), search)
    rows, true = np.array(labelled_rows, np.int64), np.array(owners, np.int64)

    def scored(at: float, guard: float) -> dict[str, Any]:
        groups = cluster.agglomerate(graph.above(at), min_link=guard)
        return _scores(true, cluster.number_by_size(groups)[0][rows])

    return ClusteringReport(
        faces=len(matrix), scored_faces=len(rows), k=k, min_link=min_link,
        threshold=threshold, method=cluster.METHOD,
        scores=scored(threshold, min_link), without_guard=scored(threshold, 0.0),
        sweep=[{"threshold": t, "index_faces": (None if calibration is None else
                                                cluster.index_size_for(calibration, t)),
                **scored(t, min_link)} for t in sweep],
    )


def run_eval(
    dataset: Dataset,
    extracted: Mapping[str, ExtractedFaces],
    pairs: metrics.Pairs | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    thresholds: Sequence[float] | NDArray[np.floating] = SWEEP,
    cluster_threshold: float | None = None,
    calibration: Calibration | None = None,
) -> EvalReport:
    """The whole protocol on faces already extracted for every image of ``dataset``.

    ``threshold`` is the search threshold reported on its own (the service's default);
    ``thresholds`` the sweep, also used for the impostor FMR curve. ``cluster_threshold``:
    the clustering threshold reported on its own (default: ``faceaudit cluster``'s for this
    many faces under ``calibration``).
    """
    sweep = np.asarray(thresholds, np.float64)
    paths = dataset.paths
    absent = [p for p in paths if p not in extracted]
    if absent:
        raise ValueError(f"no extracted faces for {len(absent)} images, e.g. {absent[:3]}")
    no_face = [p for p in paths if extracted[p].error is None and len(extracted[p].boxes) == 0]
    return EvalReport(
        images=len(paths),
        identities=len(dataset.identities),
        no_face_images=len(no_face),
        failed_images=sum(1 for p in paths if extracted[p].error is not None),
        no_face_examples=no_face[:EXAMPLES],
        verification=None if pairs is None else verify_pairs(pairs, extracted),
        search=self_search(dataset, extracted, sweep, threshold),
        impostor=impostor_fmr(dataset, extracted, sweep),
        clustering=cluster_quality(dataset, extracted, threshold=cluster_threshold,
                                   calibration=calibration),
    )


@dataclass(frozen=True)
class EvalRun:
    """A report and how it was made: model pack, detection settings, time."""

    report: EvalReport
    model_pack: str
    model_sha256: dict[str, str]
    detection: dict[str, float | int]
    seconds: float
    stages: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes null, floats keep 6 significant digits."""
        data = asdict(self.report)
        data.update(
            model_pack=self.model_pack, model_sha256=self.model_sha256,
            detection=self.detection, seconds=self.seconds, stages=self.stages,
            images_per_second=self.report.images / self.seconds if self.seconds > 0 else 0.0,
        )
        return _clean(data)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(f"{float(value):.6g}")
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def evaluate_dataset(
    engine: FaceEngine,
    root: Path,
    *,
    pairs_file: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    thresholds: Sequence[float] | NDArray[np.floating] = SWEEP,
    cluster_threshold: float | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> EvalRun:
    """Extract every image of the dataset at ``root`` once with ``engine``, then run the
    protocol (``run_eval``). ``pairs_file``: LFW pairs for verification (optional).
    ``cluster_threshold``: as for ``run_eval`` (default: under the engine's calibration).
    ``progress(done, total)`` is called after each image."""
    started = time.perf_counter()
    pairs = None
    if pairs_file is not None:
        try:
            pairs = metrics.parse_pairs(pairs_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise FaceAuditError(f"Cannot read the pairs file {pairs_file}: {error}") from error
    dataset = load_dataset(root.resolve())
    if pairs is not None:
        check_pairs(pairs, set(dataset.paths))  # before minutes of extraction, not after
    times = StageTimes()
    extracted = extract_with_engine(engine, dataset, workers=workers, times=times,
                                    progress=progress)
    report = run_eval(dataset, extracted, pairs, threshold=threshold, thresholds=thresholds,
                      cluster_threshold=cluster_threshold, calibration=engine.calibration)
    seconds = time.perf_counter() - started
    log.info("eval stage seconds: %s", times.as_dict())
    return EvalRun(report, engine.pack.name, dict(engine.sha256), engine.detection.as_dict(),
                   seconds, times.as_dict())
