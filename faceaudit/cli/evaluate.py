"""`faceaudit eval`: measure a model pack on a labelled dataset, and calibrate it from the run.
Parses flags and calls faceaudit.research.evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from faceaudit import __version__
from faceaudit.cli.checks import check_index_settings
from faceaudit.cli.common import (
    DeviceOption,
    ModelsOption,
    ThreadsOption,
    fail,
    make_engine,
    progress_bar,
)
from faceaudit.errors import FaceAuditError
from faceaudit.models.engine import DetectionSettings


def eval_command(
    dataset: Annotated[Path, typer.Argument(
        help="One folder per identity, as LFW: Name/Name_0001.jpg.")],
    pairs: Annotated[Path | None, typer.Option(
        "--pairs", help="LFW pairs file, for 1:1 verification.")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Search threshold to report (default: the search's).")] = None,
    cluster_threshold: Annotated[float | None, typer.Option(
        help="Identity clustering threshold to report (default: what `faceaudit cluster` "
        "uses for an index of this many faces).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    models: ModelsOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    det_size: Annotated[int, typer.Option(
        help="As for index: longest side of the detector input.")] = DetectionSettings.det_size,
    min_face: Annotated[int, typer.Option(
        help="As for index: smallest face kept (pixels).")] = DetectionSettings.min_face,
    det_threshold: Annotated[float, typer.Option(
        help="As for index: detector score threshold.")] = DetectionSettings.threshold,
    workers: Annotated[int, typer.Option(help="Image decoding threads.")] = 2,
    calibrate: Annotated[Path | None, typer.Option(
        help="Write the model pack's calibration (default threshold and false-match rates) "
        "from this run to this file.")] = None,
) -> None:
    """Measure verification, 1:N self-search, false-match rates and identity clustering on
    a labelled DATASET."""
    from faceaudit.models.calibration import calibration_from_eval
    from faceaudit.research.eval_report import format_report
    from faceaudit.research.evaluation.impostors import CALIBRATION_SWEEP
    from faceaudit.research.evaluation.protocol import evaluate_dataset

    try:
        check_index_settings(det_size=det_size, min_face=min_face, det_threshold=det_threshold,
                             workers=workers)
        engine = make_engine(models, device, threads, det_size=det_size, min_face=min_face,
                             threshold=det_threshold)
        with progress_bar() as progress:
            run = evaluate_dataset(
                engine, dataset, pairs_file=pairs, workers=workers, progress=progress,
                threshold=engine.calibration.threshold if threshold is None else threshold,
                thresholds=CALIBRATION_SWEEP, cluster_threshold=cluster_threshold)
    except FaceAuditError as error:
        raise fail(error) from error
    result = run.as_dict()
    typer.echo(json.dumps(result) if as_json else format_report(result))
    if calibrate is not None:
        source = (f"faceaudit eval {dataset.name}"
                  f"{' --pairs ' + pairs.name if pairs else ''}, faceaudit {__version__}")
        recognizer = engine.pack.recognizer.path.name
        calibration = calibration_from_eval(result, engine.pack, engine.sha256[recognizer],
                                            source)
        calibrate.write_text(calibration.to_json(), encoding="utf-8")
        typer.echo(f"calibration written to {calibrate}: default threshold "
                   f"{calibration.threshold}", err=True)
