"""`faceaudit build-index`: publish an index from the embedding shards of a finished scan; and
the `--ray [ADDRESS]` option of `faceaudit index`, whose address may be left out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from faceaudit.errors import FaceAuditError


def _is_address(token: str) -> bool:
    """Whether a token after a bare ``--ray`` is its address (``HOST:PORT``, ``ray://...``,
    ``auto``, ``local``) rather than the next argument (the source folder)."""
    return ":" in token or token in ("auto", "local")


def bare_ray_flag(args: list[str]) -> list[str]:
    """``args`` with a bare ``--ray`` (at the end, or before another option or a path) written
    ``--ray=``: Ray as ``ray.init()`` finds it."""
    rewritten = []
    for position, token in enumerate(args):
        if token == "--ray":
            following = args[position + 1] if position + 1 < len(args) else None
            if following is None or following.startswith("-") or not _is_address(following):
                token = "--ray="
        rewritten.append(token)
    return rewritten


class OptionalRayAddress(TyperCommand):
    """A command whose ``--ray`` takes an optional value (typer has no such option)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, bare_ray_flag(args))


def build_index_command(
    out: Annotated[Path, typer.Option("--out", help="Index folder to publish.")],
    staging: Annotated[Path | None, typer.Argument(
        help="The staging folder of a finished scan (default: .OUT.building beside --out).")
    ] = None,
    enrich: Annotated[list[str] | None, typer.Option(
        "--enrich", metavar="NAME=PATH",
        help="As for `index`: join a metadata table on the photo id (yfcc100m=PATH).")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="FACEAUDIT_STATE_DIR",
        help="The service's state folder: faces whose removal was requested there are left "
        "out of the index (default: as for `index`).")] = None,
    index_type: Annotated[str, typer.Option(
        "--index-type", metavar="auto|flat|pq-rerank",
        help="As for `index`: the searchable structure (auto picks by size).")] = "auto",
    allow_empty: Annotated[bool, typer.Option(
        "--allow-empty", help="As for `index`: publish an index without faces over one with "
        "faces.")] = False,
) -> None:
    """Build the searchable index at OUT from the embedding shards of a finished scan (what
    `faceaudit index` does after scanning, with or without --ray), streaming with bounded
    memory, and publish it atomically."""
    from faceaudit.cli.main import _fail, _parse_enrich
    from faceaudit.indexer.ann import INDEX_TYPES
    from faceaudit.indexer.from_embeddings import build_from_embeddings
    from faceaudit.indexer.staging import finished_scan_base, staging_folder
    from faceaudit.indexer.summary import format_build_summary
    from faceaudit.removals import resolve_state_dir, suppressed_face_ids

    if index_type not in INDEX_TYPES:
        raise typer.BadParameter(f"use one of {', '.join(INDEX_TYPES)}",
                                 param_hint="--index-type")
    out = out.resolve()
    folder = staging or staging_folder(out)
    try:
        enrichments = _parse_enrich(enrich or [])
        base = finished_scan_base(folder)
        removed = suppressed_face_ids(resolve_state_dir(state_dir), base["dataset"]["name"])
        summary = build_from_embeddings(folder, out, removed_face_ids=removed,
                                        enrich=enrichments, index_type=index_type,
                                        allow_empty=allow_empty)
    except FileNotFoundError as error:
        raise _fail(FaceAuditError(f"{folder} is not a staging folder: {error.filename} is "
                                   "missing.")) from error
    except FaceAuditError as error:
        raise _fail(error) from error
    typer.echo(format_build_summary(summary, out, run="the scan"))
