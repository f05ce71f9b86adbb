"""`faceaudit thresholds`: what the calibration gives for an index of N faces searched with a
template of K selfies (and C confirmed faces): the default threshold, the floor, where "strong"
starts, and the strangers expected per search at the default."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from faceaudit.cli.common import ModelsOption, fail
from faceaudit.errors import FaceAuditError


def thresholds(
    faces: Annotated[int, typer.Option(
        "--faces", help="Faces in the index searched (e.g. 1000000).")],
    selfies: Annotated[int, typer.Option(
        "--selfies", help="Selfies fused into the search's template (1 to 5).")] = 1,
    confirmed: Annotated[int, typer.Option(
        "--confirmed", help="Confirmed faces in the template (\"this is me\"), at most 5 "
        "faces with the selfies.")] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object: default, floor, strong, expected_strangers.")
    ] = False,
    models: ModelsOption = None,
) -> None:
    """The thresholds of a search of an index of --faces faces with --selfies selfies: the
    default (at most 0.1 strangers expected per search), the floor (at most 1), where a match
    becomes "strong" (fewer than 0.01 strangers that high), and the strangers expected at the
    default."""
    from faceaudit.models.calibration_files import load_calibration
    from faceaudit.models.packs import resolve_pack
    from faceaudit.models.thresholds import (
        MAX_SELFIES,
        MAX_TEMPLATE_FACES,
        STRONG_EXPECTED_FALSE_MATCHES,
    )

    try:
        if faces < 1:
            raise FaceAuditError(f"--faces {faces}: an index holds at least 1 face.")
        if not 1 <= selfies <= MAX_SELFIES:
            raise FaceAuditError(f"--selfies {selfies}: a search takes 1 to {MAX_SELFIES} "
                                 "selfies.")
        if confirmed < 0 or selfies + confirmed > MAX_TEMPLATE_FACES:
            raise FaceAuditError(
                f"--confirmed {confirmed}: a template holds at most {MAX_TEMPLATE_FACES} faces "
                f"(selfies and confirmed faces together); with {selfies} selfies, at most "
                f"{MAX_TEMPLATE_FACES - selfies} confirmed.")
        pack = resolve_pack(models)
    except FaceAuditError as error:
        raise fail(error) from error
    calibration = load_calibration(pack, pack.recognizer.sha256).for_template(selfies, confirmed)
    default = calibration.operating_threshold(faces)
    expected = calibration.expected_false_matches(default, faces)
    result: dict[str, Any] = {
        "default": default,
        "floor": calibration.min_threshold(faces),
        "strong": calibration.threshold_for(faces, STRONG_EXPECTED_FALSE_MATCHES),
        "expected_strangers": None if expected is None else float(f"{expected:.3g}"),
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    template = f"{selfies} selfie{'s' if selfies > 1 else ''}" + (
        f" and {confirmed} confirmed face{'s' if confirmed > 1 else ''}" if confirmed else "")
    typer.echo(f"{pack.name}, an index of {faces:,} faces searched with {template}"
               + ("" if calibration.calibrated else " (uncalibrated pack: fixed threshold)"))
    rows = [("default threshold", result["default"]), ("floor", result["floor"]),
            ("strong from", result["strong"]),
            ("strangers expected per search at the default", result["expected_strangers"])]
    for name, value in rows:
        typer.echo(f"  {name:<46} {'unknown' if value is None else value}")
