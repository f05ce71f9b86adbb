"""The HTTP API: health, service info, search by selfie (of every index served), thumbnails of
the photos and faces found."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from faceaudit.errors import DifferentPeople, MultipleFaces, NoFaceFound
from faceaudit.indexer.results import GUIDE_THRESHOLDS, search_response
from faceaudit.indexer.search import FaceIndex, Match
from faceaudit.models.thresholds import MAX_SELFIES, MAX_TEMPLATE_FACES
from faceaudit.removals import FaceRemoved, linked_face_removed
from faceaudit.service.catalog import IndexGroup, Published, ServedIndex
from faceaudit.service.confirmations import open_confirmed
from faceaudit.service.deps import Services, ServicesDep, check_rate_limit
from faceaudit.service.errors import (
    ERROR_RESPONSES,
    NOT_READY,
    ErrorResponse,
    ServiceBusy,
)
from faceaudit.service.schemas import Health, IndexEntry, Info, SearchResult
from faceaudit.service.search_form import (
    REPEATABLE,
    SEARCH_BODY,
    THRESHOLD_DOC,
    TOP_DOC,
    max_form_bytes,
    search_form,
)
from faceaudit.service.searching import default_threshold as searching_default
from faceaudit.service.thumbnails import (
    FACE_SIZE,
    ThumbnailNotFound,
    ThumbnailTokens,
    View,
    linked_face,
    photo_bytes,
    render_face,
    render_thumbnail,
    token_slot,
)
from faceaudit.service.uploads import Form, UploadRejected, discard_rest, read_multipart

router = APIRouter()

_REMOVED_DOC = ("A removal request names the face this link shows: from the moment it was "
                "recorded, the link shows nothing (removed).")
# A photo found is never kept by the browser: a removal must hide it at once, there too, and
# the photos of a person who searched must not stay in a shared computer's cache.
PHOTO_HEADERS = {"Cache-Control": "no-store"}


def default_threshold(services: Services, group: IndexGroup, selfies: int = 1,
                      confirmed: int = 0) -> float:
    """The threshold a search of these indexes with a template of ``selfies`` selfies and
    ``confirmed`` confirmed faces runs at, and the lowest any search over HTTP may use (see
    searching.default_threshold): that of one selfie by default."""
    calibration = services.engine.calibration.for_template(selfies, confirmed)
    return searching_default(calibration, group.size, services.settings)


@router.get("/healthz", response_model=Health, responses=NOT_READY)
def healthz(services: ServicesDep) -> Health:
    """200 once the models and every index are loaded (uvicorn takes no connection before)."""
    group = services.catalog.group()
    return Health(model_pack=group.model_pack, index_size=group.size, images=len(group.images))


@router.get("/api/info", response_model=Info, responses=NOT_READY)
def info(services: ServicesDep) -> Info:
    """What a client needs before its first search: the indexes, the default threshold and
    what thresholds mean for indexes of their size, the upload limit."""
    group, calibration = services.catalog.group(), services.engine.calibration
    return Info(
        model_pack=group.model_pack,
        index_size=group.size,
        index_images=len(group.images),
        indexes=[IndexEntry.model_validate(entry) for entry in group.summary()],
        calibrated=calibration.calibrated,
        default_threshold=default_threshold(services, group),
        min_threshold=default_threshold(services, group),
        threshold_guide=calibration.guide(group.size, GUIDE_THRESHOLDS),
        max_upload_bytes=services.settings.max_upload_bytes,
        max_results=services.settings.max_results,
        max_selfies=MAX_SELFIES,
        max_template_faces=MAX_TEMPLATE_FACES,
    )


@router.post(
    "/api/search",
    response_model=SearchResult,
    responses=ERROR_RESPONSES,
    openapi_extra=SEARCH_BODY,
    dependencies=[Depends(check_rate_limit)],
)
async def search(
    request: Request,
    response: Response,
    services: ServicesDep,
    threshold: Annotated[float | None, Query(gt=0, le=1, description=THRESHOLD_DOC)] = None,
    top: Annotated[int | None, Query(ge=1, description=TOP_DOC)] = None,
) -> dict[str, Any]:
    """Every photo of the indexes served with a face like the person's, best first, each
    naming its dataset: the person of 1 to 5 selfies (``selfie`` repeated), fused into one
    template with the faces of the photos they confirmed (``confirmed``: match ids of their
    previous answer), at the default threshold of that template.

    The body is read and parsed in memory (see faceaudit.service.uploads): the selfies, their
    template and the confirmed faces are never written to disk nor logged. One request is one
    search for the rate limits, however many selfies it sends. At most ``max_searches``
    searches are taken at once; beyond that the answer is 503 with Retry-After.
    """
    try:
        with services.admission.admit():
            return await _search(request, response, services, threshold, top)
    except ServiceBusy:  # refused on admission: nothing was read yet
        await _discard_body(request)
        raise


async def _search(request: Request, response: Response, services: Services,
                  threshold: float | None, top: int | None) -> dict[str, Any]:
    settings = services.settings
    form = await _read_form(request, max_form_bytes(settings))
    asked = search_form(form, services.settings, threshold, top)
    del form
    group = services.catalog.group()  # one version of each index for the whole request
    confirmed = await run_in_threadpool(open_confirmed, group, services.match_ids,
                                        services.removals, asked.confirmed)
    try:
        searched = await services.search(group, asked.selfies, asked.threshold, asked.top,
                                         confirmed)
    except (NoFaceFound, MultipleFaces, DifferentPeople) as error:
        floor = default_threshold(services, group, len(asked.selfies))
        await services.log_search(group, max(asked.threshold or floor, floor), results=0,
                                  faces=getattr(error, "count", 0), outcome=error.code,
                                  selfies=len(asked.selfies), confirmed=len(confirmed))
        raise
    found = searched.found
    result = search_response(group, [f.match for f in found], searched.threshold,
                             searched.calibration, searched.default,
                             min_threshold=searched.default,
                             threshold_requested=asked.threshold)
    result["indexes"] = group.summary()
    result["template"] = searched.template()
    for out, item in zip(result["matches"], found, strict=True):
        published = group.published[item.slot]
        out["dataset"] = published.index.dataset
        out["new"] = item.new
        out["expanded"] = item.expanded
        out.update(_photo_fields(request, published.tokens, item.match))
        out["match_id"] = (services.match_ids.issue(published.index, item.match)
                           if services.match_ids is not None else None)
    await services.log_search(group, searched.threshold, faces=1,
                              results=len(result["matches"]), selfies=len(asked.selfies),
                              confirmed=result["template"]["confirmed"])
    response.headers["Cache-Control"] = "no-store"
    return result


async def _discard_body(request: Request) -> None:
    """Read what is left of a refused body (bounded), so that the client reads the refusal."""
    with contextlib.suppress(ClientDisconnect):
        await discard_rest(request.stream(),
                           content_length=request.headers.get("content-length"))


async def _read_form(request: Request, max_bytes: int) -> Form:
    """The multipart form, in memory. A refused upload is read to its end (within a bound)
    before the refusal is sent, so that the client can read it (see uploads.discard_rest)."""
    body = request.stream()
    content_length = request.headers.get("content-length")
    try:
        return await read_multipart(body, content_type=request.headers.get("content-type"),
                                    content_length=content_length, max_bytes=max_bytes,
                                    repeatable=REPEATABLE)
    except UploadRejected:
        with contextlib.suppress(ClientDisconnect):
            await discard_rest(body, content_length=content_length)
        raise


def _photo_fields(request: Request, tokens: ThumbnailTokens, match: Match) -> dict[str, Any]:
    # Both links name the matched face: it is the only face either image shows unblurred.
    photo = tokens.issue(View.PHOTO, match.image_id, match.face)
    face = tokens.issue(View.CLOSE_UP, match.image_id, match.face)
    return {
        "thumbnail": request.url_for("thumbnail", token=photo).path,
        "face_thumbnail": request.url_for("face_thumbnail", token=face).path,
        "width": match.width,
        "height": match.height,
    }


@router.get(
    "/api/thumbnails/{token}",
    name="thumbnail",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail."},
        404: {"model": ErrorResponse,
              "description": "Invalid or expired link (not_found), or the photo is no longer "
              "the one indexed: moved, deleted or changed (photo_unavailable)."},
        410: {"model": ErrorResponse, "description": _REMOVED_DOC},
        **NOT_READY,
    },
)
async def thumbnail(token: str, services: ServicesDep) -> Response:
    """A thumbnail of a photo found by a search, through the link the search returned, every
    face but the matched one blurred."""
    served, published, image_id, face = await run_in_threadpool(_linked, services, token,
                                                                View.PHOTO)
    data = await run_in_threadpool(_thumbnail, served.photos_root(published), published.index,
                                   image_id, face, services.settings.thumbnail_size)
    return Response(data, media_type="image/jpeg", headers=PHOTO_HEADERS)


@router.get(
    "/api/faces/{token}",
    name="face_thumbnail",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}},
              "description": "A square JPEG close-up of the matched face, at most "
              f"{FACE_SIZE} pixels a side."},
        404: {"model": ErrorResponse,
              "description": "Invalid or expired link (not_found), or the photo is no longer "
              "the one indexed: moved, deleted or changed (photo_unavailable)."},
        410: {"model": ErrorResponse, "description": _REMOVED_DOC},
        **NOT_READY,
    },
)
async def face_thumbnail(token: str, services: ServicesDep) -> Response:
    """A close-up of the face that matched, through the link the search returned: in a group
    photo the face is too small in the thumbnail to tell who it is. Neighbouring faces that
    reach into it are blurred."""
    served, published, image_id, face = await run_in_threadpool(_linked, services, token,
                                                                View.CLOSE_UP)
    data = await run_in_threadpool(_face, served.photos_root(published), published.index,
                                   image_id, face)
    return Response(data, media_type="image/jpeg", headers=PHOTO_HEADERS)


def _linked(services: Services, token: str, view: View
            ) -> tuple[ServedIndex, Published, int, int]:
    """The index a link names, what is published there now, and the (image id, face row) the
    link shows: ThumbnailNotFound for a link that is not valid for ``view`` there (one issued
    before a new index was published there included); FaceRemoved (410) once a removal
    request names the face, whichever process of the service recorded it."""
    served = services.catalog.slot(token_slot(token))
    if served is None:
        raise ThumbnailNotFound("This link is not for an index of this service: search again.")
    published = served.published
    image_id, face = published.tokens.verify(view, token)
    if services.removals is not None and linked_face_removed(
            published.index, image_id, face, services.removals.suppressed(
                published.index.dataset)):
        raise FaceRemoved("This photo's removal was requested: it is no longer shown.")
    return served, published, image_id, face


# Both renderers get the photo's bytes from photo_bytes, which refuses any but the bytes
# indexed (the boxes blurred are those found in them), and name it by its key in errors: its
# path may name the person pictured.
def _thumbnail(root: Path, index: FaceIndex, image_id: int, face: int, size: int) -> bytes:
    linked = linked_face(index, image_id, face)
    return render_thumbnail(photo_bytes(root, linked.record), linked.record.key, size,
                            keep=linked.bbox, others=linked.others)


def _face(root: Path, index: FaceIndex, image_id: int, face: int) -> bytes:
    linked = linked_face(index, image_id, face)
    record = linked.record
    known = (record.width, record.height) if record.width and record.height else None
    return render_face(photo_bytes(root, record), record.key, linked.bbox, known,
                       others=linked.others)
