"""`faceaudit index` (a source into an index, here or on Ray) and `faceaudit build-index`
(publish an index from the embedding shards of a finished scan); with the `--ray [ADDRESS]`
option of `index`, whose address may be left out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from faceaudit.cli.common import (
    STATE_DIR_HELP,
    DeviceOption,
    ModelsOption,
    ThreadsOption,
    fail,
    index_source,
    parse_enrich,
)
from faceaudit.errors import FaceAuditError
from faceaudit.models.engine import DetectionSettings


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
    index_source(source, out, dataset=dataset, field_map=field_map, enrich=enrich,
                 models=models, device=device, threads=threads, det_size=det_size,
                 min_face=min_face, det_threshold=det_threshold, workers=workers, fresh=fresh,
                 state_dir=state_dir, ray=ray, unit_size=unit_size, index_type=index_type,
                 allow_empty=allow_empty)


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
        enrichments = parse_enrich(enrich or [])
        base = finished_scan_base(folder)
        removed = suppressed_face_ids(resolve_state_dir(state_dir), base["dataset"]["name"])
        summary = build_from_embeddings(folder, out, removed_face_ids=removed,
                                        enrich=enrichments, index_type=index_type,
                                        allow_empty=allow_empty)
    except FileNotFoundError as error:
        raise fail(FaceAuditError(f"{folder} is not a staging folder: {error.filename} is "
                                  "missing.")) from error
    except FaceAuditError as error:
        raise fail(error) from error
    typer.echo(format_build_summary(summary, out, run="the scan"))
