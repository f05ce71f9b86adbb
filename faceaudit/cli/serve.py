"""`faceaudit serve` (the search page and HTTP API over indexes) and `faceaudit demo` (a small
collection built, indexed and served)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from faceaudit.cli.checks import check_port
from faceaudit.cli.common import STATE_DIR_HELP, DeviceOption, ModelsOption, fail, index_source
from faceaudit.errors import FaceAuditError
from faceaudit.models.engine import DetectionSettings

if TYPE_CHECKING:
    from faceaudit.service.settings import ServiceSettings


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
    no_expand: Annotated[bool, typer.Option(
        "--no-expand", help="No automatic expansion: a one-selfie search is one pass, its "
        "\"very likely you\" matches do not join the selfie for a second one.")] = False,
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
    if no_expand:
        overrides["expand"] = False
    try:
        check_port(host, port)  # before the models and indexes load
        settings = ServiceSettings(**overrides)
        _check_state(settings)
    except ValidationError as error:
        raise fail(FaceAuditError("; ".join(e["msg"].removeprefix("Value error, ")
                                            for e in error.errors()))) from None
    except FaceAuditError as error:
        raise fail(error) from error
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
            raise fail(error) from error
    photos, selfies = build_demo_collection(out / "photos", out / "selfies")
    if state_dir is not None:  # a folder of the demo's own, made here
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise fail(FaceAuditError(f"--state-dir {state_dir}: {error.strerror}.")) from None
    typer.echo(f"demo collection: {photos}, its provenance in {photos / MANIFEST_NAME}")
    defaults = DetectionSettings()
    index_source(photos / MANIFEST_NAME, out=out / "index", dataset=DEMO_DATASET,
                 field_map=None, enrich=None, models=None, device="auto", threads=None,
                 det_size=defaults.det_size, min_face=defaults.min_face,
                 det_threshold=defaults.threshold, workers=2, fresh=False, state_dir=state_dir,
                 ray=None, unit_size=1000, index_type="auto", allow_empty=False)
    typer.echo(f"try a selfie from {selfies}, e.g. {selfies / 'yaoming.jpg'}")
    if not no_serve:
        serve([out / "index"], host=host, port=port, dataset=None, models=None, device="auto",
              state_dir=state_dir, no_removals=no_removals)
