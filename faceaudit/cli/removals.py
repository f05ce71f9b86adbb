"""`faceaudit removals`: the operator's view of removal requests (list, export the opt-out
list, mark sent, done or rejected). Parses flags and calls faceaudit.removals."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from faceaudit.cli.common import fail
from faceaudit.cli.help import MARKUP_MODE, HelpGroup
from faceaudit.errors import FaceAuditError

if TYPE_CHECKING:
    from faceaudit.removals import RemovalStore

group = typer.Typer(
    help="Removal requests the service received: list them, export the opt-out list, mark "
    "them sent, done or rejected.",
    no_args_is_help=True,
    cls=HelpGroup,
    rich_markup_mode=MARKUP_MODE,
)

StateDirOption = Annotated[Path | None, typer.Option(
    "--state-dir", envvar="FACEAUDIT_STATE_DIR",
    help="The service's state folder (default: FACEAUDIT_STATE_DIR, else "
    "$XDG_STATE_HOME/faceaudit, else ~/.local/state/faceaudit, as every faceaudit command).")]
DatasetOption = Annotated[str | None, typer.Option(
    "--dataset", help="Only the photos of this dataset.")]


class ExportFormat(str, Enum):
    csv = "csv"
    json = "json"
    parquet = "parquet"


class MarkStatus(str, Enum):
    sent = "sent"
    done = "done"
    rejected = "rejected"


class ListStatus(str, Enum):
    received = "received"
    sent = "sent"
    done = "done"
    rejected = "rejected"


def _store(state_dir: Path | None) -> RemovalStore:
    from faceaudit.removals import RemovalStore, resolve_state_dir

    return RemovalStore(resolve_state_dir(state_dir))


@group.command("list")
def list_requests(
    state_dir: StateDirOption = None,
    dataset: DatasetOption = None,
    status: Annotated[ListStatus | None, typer.Option(help="Only requests in this status.")
                      ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Every removal request, oldest first: id, time, status, contact, and its photos."""
    try:
        found = _store(state_dir).requests(dataset=dataset,
                                               status=status.value if status else None)
    except FaceAuditError as error:
        raise fail(error) from error
    for request in found:
        if as_json:
            typer.echo(json.dumps(request.as_dict()))
            continue
        typer.echo(f"{request.request_id}  {request.created}  {request.status:<8}  "
                   f"{len(request.photos)} photo{'s' if len(request.photos) != 1 else ''}  "
                   f"contact: {request.contact or '-'}")
        for photo in request.photos:
            where = photo.image_url or photo.page_url or photo.source_record or ""
            typer.echo(f"    {photo.image_key}  photo {photo.photo_id or '-'}  {where}")
    if not found and not as_json:
        typer.echo("No removal requests.", err=True)


@group.command()
def export(
    state_dir: StateDirOption = None,
    dataset: DatasetOption = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv, json or parquet.")
                   ] = ExportFormat.csv,
    out: Annotated[Path | None, typer.Option(
        "--out", help="File to write (default: standard output; parquet needs a file).")
    ] = None,
) -> None:
    """The opt-out list: one row per photo ever asked to be removed (dataset, image key, photo
    id, image URL, page URL, SHA-256, first requested), for the dataset's users to filter their
    copies with."""
    from faceaudit.removals import write_export

    if out is None and fmt is ExportFormat.parquet:
        raise typer.BadParameter("parquet is binary: give a file with --out", param_hint="--out")
    try:
        rows = _store(state_dir).opt_out_rows(dataset)
        if out is None:
            write_export(rows, fmt.value, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            with out.open("wb") as file:
                write_export(rows, fmt.value, file)
    except FaceAuditError as error:
        raise fail(error) from error
    if out is not None:
        typer.echo(f"{len(rows)} photos written to {out}", err=True)


@group.command()
def mark(
    request_id: Annotated[str, typer.Argument(help="The request's id (see `list`).")],
    status: Annotated[MarkStatus, typer.Argument(
        help="sent: passed on to the dataset's maintainers; done: they removed the photos; "
        "rejected: they did not (the faces stay hidden from searches all the same).")],
    state_dir: StateDirOption = None,
) -> None:
    """Record that a removal request was sent to the dataset's maintainers, done or rejected:
    the person sees it at their status link."""
    try:
        request = _store(state_dir).set_status(request_id, status.value)
    except FaceAuditError as error:
        raise fail(error) from error
    typer.echo(f"{request.request_id}: {request.status} ({request.status_changed})")
