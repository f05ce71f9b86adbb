"""The whole evaluation: every measure on one extraction of the dataset, and the run's record."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.search import DEFAULT_THRESHOLD
from faceaudit.indexer.stage_times import StageTimes
from faceaudit.models.calibration import Calibration, calibration_from_eval
from faceaudit.models.engine import FaceEngine
from faceaudit.models.thresholds import UNCALIBRATED_THRESHOLD
from faceaudit.research.evaluation.cluster_quality import ClusteringReport, cluster_quality
from faceaudit.research.evaluation.dataset import (
    Dataset,
    ExtractedFaces,
    extract_with_engine,
    load_dataset,
)
from faceaudit.research.evaluation.impostors import ImpostorReport, impostor_fmr
from faceaudit.research.evaluation.self_search import EXAMPLES, SearchReport, self_search
from faceaudit.research.evaluation.template_report import TemplatesReport, template_report
from faceaudit.research.evaluation.verification import (
    VerificationReport,
    check_pairs,
    verify_pairs,
)
from faceaudit.research.metrics.pairs import Pairs, parse_pairs

log = logging.getLogger(__name__)

SWEEP = np.round(np.arange(0.20, 0.70 + 1e-9, 0.025), 3)


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
    templates: TemplatesReport | None = None


def run_eval(
    dataset: Dataset,
    extracted: Mapping[str, ExtractedFaces],
    pairs: Pairs | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    thresholds: Sequence[float] | NDArray[np.floating] = SWEEP,
    cluster_threshold: float | None = None,
    calibration: Calibration | None = None,
    templates: bool = True,
) -> EvalReport:
    """The whole protocol on faces already extracted for every image of ``dataset``.

    ``threshold`` is the search threshold reported on its own (the service's default);
    ``thresholds`` the sweep, also used for the impostor FMR curve. ``cluster_threshold``:
    the clustering threshold reported on its own (default: ``faceaudit cluster``'s for this
    many faces under ``calibration``). ``templates``: also fit the template curves and
    measure recall with several selfies (every image embedded as a selfie gives better ones).
    """
    sweep = np.asarray(thresholds, np.float64)
    paths = dataset.paths
    absent = [p for p in paths if p not in extracted]
    if absent:
        raise ValueError(f"no extracted faces for {len(absent)} images, e.g. {absent[:3]}")
    no_face = [p for p in paths if extracted[p].error is None and len(extracted[p].boxes) == 0]
    report = EvalReport(
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
    if not templates:
        return report
    base, source = _one_photo_calibration(report, calibration)
    return replace(report, templates=template_report(dataset, extracted, base, source))


def _one_photo_calibration(report: EvalReport, engine: Calibration | None
                           ) -> tuple[Calibration, str]:
    """The calibration template thresholds build on: this run's, when its tail could be
    fitted; else the engine's, when calibrated; else this run's curve as it is."""
    pack = engine.pack if engine is not None else "unknown"
    result = _clean({"images": report.images, "search": asdict(report.search),
                     "impostor": asdict(report.impostor)})
    try:
        run: Calibration | None = calibration_from_eval(result, pack, None, "this eval")
    except ValueError:
        run = None
    if run is not None and run.tail is not None:
        return run, "this run's one-photo calibration"
    if engine is not None and engine.calibrated:
        return engine, "the engine's calibration (this run's could not be fitted)"
    if run is not None:
        return run, "this run's one-photo curve (no tail fitted)"
    return Calibration(pack=pack, recognizer_sha256=None, threshold=UNCALIBRATED_THRESHOLD, fmr=[],
                       impostor_comparisons=0, source="uncalibrated"), "uncalibrated"


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
            pairs = parse_pairs(pairs_file.read_text(encoding="utf-8"))
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
