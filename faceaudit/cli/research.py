"""`faceaudit cluster` and `faceaudit cohort`: what researchers run over whole datasets and
consenting cohorts. Parses flags and calls faceaudit.research.clustering and
faceaudit.research.cohort."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from faceaudit.cli.common import (
    BriefModelsOption,
    DeviceOption,
    fail,
    make_engine,
    progress_bar,
)
from faceaudit.errors import FaceAuditError
from faceaudit.models.thresholds import MAX_RESULTS, MAX_SELFIES
from faceaudit.words import counted

LARGEST_SHOWN = 10


def cluster(
    index_dir: Annotated[Path, typer.Argument(metavar="INDEX", help="Index folder.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Parquet file for the identities (face_id, identity); default "
        "INDEX.identities.parquet beside the index folder, never inside it.")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Similarity above which two faces may be the same person (default: calibrated "
        "for the index's size, see the README).")] = None,
    k: Annotated[int | None, typer.Option(
        "--k", help="Neighbours per face in the graph (default 16).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    models: BriefModelsOption = None,
) -> None:
    """Group the faces of INDEX by identity and write each face's identity number. Prints
    counts only: faces, identities, singletons, the sizes of the largest identities."""
    from faceaudit.indexer.search import FaceIndex
    from faceaudit.research.clustering.cluster import DEFAULT_K, cluster_index
    from faceaudit.research.clustering.identities_file import (
        check_outside_index,
        describe,
        identities_path,
        write_identities,
    )
    from faceaudit.research.clustering.threshold import default_threshold, index_calibration

    if threshold is not None and not 0 < threshold <= 1:
        raise typer.BadParameter("a similarity in (0, 1]", param_hint="--threshold")
    if k is not None and k < 1:
        raise typer.BadParameter("at least 1", param_hint="--k")
    try:
        face_index = FaceIndex(index_dir)
        if threshold is None:
            threshold = default_threshold(index_calibration(face_index, models), face_index.size)
        target = check_outside_index(out if out is not None else identities_path(index_dir),
                                     index_dir)
        with progress_bar() as progress:
            clustering = cluster_index(face_index, threshold=threshold, k=k or DEFAULT_K,
                                       progress=progress)
        write_identities(clustering, face_index, target)
    except FaceAuditError as error:
        raise fail(error) from error
    summary = {**describe(clustering, face_index), "out": str(target),
               "largest": clustering.largest(LARGEST_SHOWN)}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"{clustering.faces} faces, {clustering.identities} identities "
        f"({clustering.identities - clustering.singletons} with two or more faces, "
        f"{clustering.singletons} faces alone); threshold {clustering.threshold}, "
        f"{clustering.seconds:.1f} s")
    typer.echo("faces of the largest identities: "
               + (", ".join(str(size) for size in summary["largest"]) or "none"))
    typer.echo(f"identities written to {target}")


def cohort(
    selfies_dir: Annotated[Path, typer.Argument(
        metavar="SELFIES_DIR", help="Per consenting participant, one selfie named by their "
        "id (p017.jpg is participant p017), or a folder named by their id holding up to "
        f"{MAX_SELFIES} selfies of them, searched as one template (p017/a.jpg, "
        "p017/b.jpg).")],
    index_dirs: Annotated[list[Path], typer.Option(
        "--index", help="Index folder (repeat for several datasets).")],
    out: Annotated[Path, typer.Option(
        "--out", help="CSV of the photos found, one row per participant and photo; the "
        "per-participant summary goes beside it (results.summary.csv).")],
    threshold: Annotated[float | None, typer.Option(
        help="Similarity threshold (default: the one for the indexes' combined size and the "
        "participant's number of selfies, as the service uses). One below the floor for that "
        "size is refused.")] = None,
    top: Annotated[int | None, typer.Option(
        help=f"At most this many photos per participant, all indexes together (at most "
        f"{MAX_RESULTS}, the default).")] = None,
    allow_low_threshold: Annotated[bool, typer.Option(
        "--allow-low-threshold",
        help="Allow a threshold below an index's floor and any --top: the results can then "
        "list photos of strangers.")] = False,
    no_expand: Annotated[bool, typer.Option(
        "--no-expand", help="No automatic expansion for participants with one selfie (their "
        "\"very likely you\" photos do not join it for a second pass).")] = False,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="FACEAUDIT_STATE_DIR",
        help="The service's state folder: leave out the faces removal requests named "
        "(default: FACEAUDIT_STATE_DIR, else $XDG_STATE_HOME/faceaudit, else "
        "~/.local/state/faceaudit, as every faceaudit command).")] = None,
    models: BriefModelsOption = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the totals as JSON.")
                       ] = False,
) -> None:
    """Search every participant's selfie (or the template of their selfies) in every index,
    under the service's limits, and write what was found. Nothing of the selfies is kept but
    these results."""
    from faceaudit.removals import resolve_state_dir
    from faceaudit.research.cohort import (
        cohort_totals,
        open_indexes,
        run_cohort,
        write_cohort,
    )
    from faceaudit.research.cohort_selfies import cohort_selfies

    try:
        engine = make_engine(models, device)
        indexes = open_indexes(engine, index_dirs, threshold=threshold, top=top,
                               allow_low_threshold=allow_low_threshold,
                               state_dir=resolve_state_dir(state_dir))
        selfies = cohort_selfies(selfies_dir)
        with progress_bar() as progress:
            results = run_cohort(engine, selfies, indexes, progress, expand=not no_expand)
        written, summary = write_cohort(results, out)
    except FaceAuditError as error:
        raise fail(error) from error
    totals = cohort_totals(results)
    if as_json:
        typer.echo(json.dumps({**totals, "results": str(written), "summary": str(summary),
                               "thresholds": {t.index.dataset: t.threshold for t in indexes}}))
        return
    for target in indexes:
        typer.echo(f"{target.index.dataset}: {target.index.size} faces")
    how = ("as asked, for every participant" if threshold is not None else
           "one selfie's default; several are searched at their template's, given per row")
    typer.echo(f"threshold {indexes[0].threshold} for {sum(t.index.size for t in indexes)} "
               f"faces in all ({how}), at most {indexes[0].top or 'all'} photos per "
               "participant")
    errors = ", ".join(f"{count} {status}" for status, count in sorted(totals["errors"].items()))
    typer.echo(
        f"{counted(totals['participants'], 'participant')}: {totals['searched']} searched"
        + (f" ({errors})" if errors else "") + f"; {totals['found']} found in "
        f"{counted(totals['photos_found'], 'photo')} of "
        f"{counted(len(totals['datasets']), 'dataset')}; "
        f"{counted(totals['photos_in_several_datasets'], 'photo')} found in more than one "
        "dataset")
    expanded = sum(1 for r in results if r.expanded)
    if expanded:
        typer.echo(f"expanded: {counted(expanded, 'participant')} with one selfie searched "
                   "again with their \"very likely you\" photos (rows marked expanded)")
    typer.echo(f"results: {written}\nper participant: {summary}")
