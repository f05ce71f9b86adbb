"""`faceaudit report`: the dataset exposure report of one or several indexes. Parses flags and
calls faceaudit.research.report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceaudit.cli.common import fail, progress_bar
from faceaudit.errors import FaceAuditError


def report(
    indexes: Annotated[list[Path], typer.Argument(
        metavar="INDEX", help="Index folders (one per dataset); with several, the report "
        "also counts the photos and people found in more than one.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Folder to write report.json and index.html into.")] = Path("report"),
    k: Annotated[int, typer.Option(
        "--k", help="Withhold every published count from 1 to k-1 (shown as \"<k\"), and "
        "any count that published totals would give away.")] = 5,
) -> None:
    """Write a dataset exposure report: photos, faces, licences, uploaders (counts only),
    estimated people and how many were photographed by others; as report.json and a
    self-contained index.html (no network needed to open it)."""
    from faceaudit.research.report import make_report, write_report

    try:
        with progress_bar() as progress:
            result = make_report(indexes, k, progress=progress)
    except FaceAuditError as error:
        raise fail(error) from error
    json_path, html_path = write_report(result, out)

    secondary = set(result.get("suppressed_secondary", []))

    def shown(key: str) -> str:
        """A headline count; withheld as "<k" when under k, "withheld" when protecting one."""
        value = result[key]
        if value is not None:
            return f"{value:,}"
        return "withheld" if f"/{key}" in secondary else f"<{k}"

    small = len(result["suppressed"]) - len(secondary)
    typer.echo(
        f"{shown('images')} photos, {shown('faces')} faces, about "
        f"{shown('identities_estimated')} people, "
        f"{shown('people_photographed_by_others')} photographed by others, "
        f"{shown('non_commercial_photos')} non-commercial photos, "
        f"{shown('uploaders')} uploaders ({small} counts under k={k} withheld, and "
        f"{len(secondary)} more that would give one away; {result['report']['seconds']:.1f} s)")
    typer.echo(f"report: {html_path}\nfigures: {json_path}")
