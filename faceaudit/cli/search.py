"""`faceaudit search`: the photos of an index in which the person of one selfie (or of the
template of several selfies of one person) appears."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from faceaudit.cli.common import STATE_DIR_HELP, DeviceOption, ModelsOption, fail, make_engine
from faceaudit.errors import FaceAuditError
from faceaudit.models.thresholds import MAX_EXPECTED_STRANGERS, MAX_RESULTS, MAX_SELFIES

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from faceaudit.indexer.search import Match


def search(
    selfies: Annotated[list[Path], typer.Argument(
        metavar="SELFIE",
        help=f"1 to {MAX_SELFIES} photos of one person's face, fused into one template.")],
    index_dir: Annotated[Path, typer.Option("--index", help="Index folder.")],
    threshold: Annotated[float | None, typer.Option(
        help="Similarity threshold (default: the lowest at which 0.1 faces of other people "
        "are expected per search at this index's size, with a template of that many "
        "selfies). One at which more than 1 is expected is refused.")] = None,
    top: Annotated[int | None, typer.Option(
        help=f"Show at most this many photos (at most {MAX_RESULTS}, the default).")] = None,
    allow_low_threshold: Annotated[bool, typer.Option(
        "--allow-low-threshold",
        help="Researchers only: allow a threshold below this index's floor and any --top. "
        "The results can then show photos of strangers, many of them in a large index.")
    ] = False,
    no_expand: Annotated[bool, typer.Option(
        "--no-expand", help="With one selfie: no automatic expansion (its \"very likely you\" "
        "matches do not join it for a second pass).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    models: ModelsOption = None,
    device: DeviceOption = "auto",
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="FACEAUDIT_STATE_DIR",
        help=f"The service's state folder: leave out the faces removal requests named "
        f"({STATE_DIR_HELP}).")] = None,
) -> None:
    """List the indexed photos in which the person of the SELFIE (or of several selfies of
    one person, searched as one template) appears, best first."""
    from faceaudit.imaging import decode_image
    from faceaudit.indexer.expansion import expand_search
    from faceaudit.indexer.results import check_search, search_response
    from faceaudit.indexer.search import FaceIndex, check_selfie_count, selfies_template
    from faceaudit.removals import resolve_state_dir, suppressed_faces, visible, widen

    try:
        check_selfie_count(len(selfies))
        face_index = FaceIndex(index_dir)
        engine = make_engine(models, device)
        calibration = engine.calibration.for_template(len(selfies))
        default = calibration.operating_threshold(face_index.size)
        requested, threshold = threshold, default if threshold is None else threshold
        top = MAX_RESULTS if top is None and not allow_low_threshold else top
        check_search(calibration, face_index.size, threshold, top,
                     max_expected=MAX_EXPECTED_STRANGERS, max_results=MAX_RESULTS,
                     allow_low_threshold=allow_low_threshold)
        images = [decode_image(selfie, name=_name(selfie, n, len(selfies)))
                  for n, selfie in enumerate(selfies, start=1)]
        hidden = suppressed_faces(resolve_state_dir(state_dir), face_index.dataset)
        face_index.check_engine(engine)
        template = selfies_template(engine, images)

        def search_at(vector: NDArray[np.float32], at: float) -> list[Match]:
            return visible(face_index.search(vector, at, widen(top, hidden)), hidden, top)

        matches, marks, joined = search_at(template, threshold), None, 0
        # Never below the floor a researcher's lower threshold already left.
        if len(selfies) == 1 and not no_expand and threshold >= default:
            grown = expand_search(
                template, matches, score=lambda m: m.score, key=lambda m: m.image_id,
                face_vectors=lambda ms: face_index.face_vectors([m.face for m in ms]),
                search=search_at, calibration=engine.calibration, index_faces=face_index.size,
                default_for=lambda c: c.operating_threshold(face_index.size),
                threshold=threshold, top=top)
            if grown is not None:
                matches = [m for m, _ in grown.found]
                marks, joined = [mark for _, mark in grown.found], grown.joined
                calibration, default, threshold = (grown.calibration, grown.default,
                                                   grown.threshold)
    except FaceAuditError as error:
        raise fail(error) from error
    response = search_response(face_index, matches, threshold, calibration, default,
                               threshold_requested=requested, operator=True)
    response["template"] = {"selfies": len(selfies), "confirmed": 0, "expanded": joined}
    for out, mark in zip(response["matches"], marks or [False] * len(matches), strict=True):
        out["expanded"] = mark
    if as_json:
        typer.echo(json.dumps(response))
        return
    expected = response["expected_false_matches"]
    meaning = ("uncalibrated model pack: no false-match estimate" if expected is None else
               f"about {expected:.2g} faces of other people are expected above it in an index "
               "of this size")
    described = (f"{len(selfies)} selfies of one person as one template; "
                 if len(selfies) > 1 else "")
    typer.echo(f"{described}threshold {threshold} ({meaning}); {face_index.size} faces in "
               f"{len(face_index.images)} photos, model pack {face_index.model_pack}")
    if joined:
        found = sum(1 for mark in marks or [] if mark)
        typer.echo(f"Expanded: {joined} of your \"very likely you\" photos joined your selfie "
                   f"for a second search, which found {found} more (marked \"found with your "
                   "other photos\").")
    if not matches:
        typer.echo("No photo in the index matches.")
        return
    for match in response["matches"]:
        box = ", ".join(f"{v:.0f}" for v in match["bbox"])
        mark = "  (found with your other photos)" if match["expanded"] else ""
        typer.echo(f"{match['score']:.3f}  {match['strength']:<8}  {match['image']}  [{box}]"
                   f"  {match['meaning']}{mark}")
        typer.echo("        " + describe_provenance(match["provenance"]))


def _name(selfie: Path, number: int, count: int) -> str:
    """How an error about this selfie names it."""
    return f"Selfie {number} ({selfie})" if count > 1 else str(selfie)


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
