"""The HTTP API: health, service info, search by selfie, thumbnails of the photos and faces
found."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from faceaudit.errors import MultipleFaces, NoFaceFound
from faceaudit.imaging import decode_image
from faceaudit.indexer.search import FaceIndex, Match
from faceaudit.results import GUIDE_THRESHOLDS, search_response
from faceaudit.service.deps import IndexDep, Services, ServicesDep, check_rate_limit
from faceaudit.service.errors import ERROR_RESPONSES, ErrorResponse, InvalidParameter
from faceaudit.service.schemas import Health, Info, SearchResult
from faceaudit.service.thumbnails import (
    FACE_SIZE,
    ThumbnailTokens,
    View,
    linked_face,
    photo_bytes,
    render_face,
    render_thumbnail,
)
from faceaudit.service.uploads import (
    Part,
    UploadRejected,
    discard_rest,
    file_field,
    read_multipart,
)

router = APIRouter()

SELFIE_FIELD = "selfie"
FORM_OVERHEAD = 16 * 1024  # multipart boundaries, part headers and the small text fields

_THRESHOLD_DOC = "Similarity from which a face counts as the same person, in (0, 1]."
_TOP_DOC = "At most this many photos (capped by the server's max_results)."
_SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [SELFIE_FIELD],
                    "properties": {
                        SELFIE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "application/octet-stream",
                            "description": "A photo of one face (JPEG, PNG, WebP, HEIC...). "
                            "It is processed in memory and not stored.",
                        },
                        "threshold": {"type": "number", "description": _THRESHOLD_DOC},
                        "top": {"type": "integer", "description": _TOP_DOC},
                    },
                }
            }
        },
    }
}


class SearchOptions(BaseModel):
    threshold: float = Field(gt=0, le=1)
    top: int = Field(ge=1)
    threshold_requested: float | None = None  # as asked, before raising it to the floor
    min_threshold: float = 0.0


def search_options(form: dict[str, Part], services: Services, threshold: float | None,
                   top: int | None, index: FaceIndex | None = None) -> SearchOptions:
    """Form fields over query parameters over the server's defaults, for a search of ``index``
    (default: the one served now). No browsing: a threshold below the index's floor is raised
    to it (the response says so: refusing instead would fail a page whose slider was set
    before the index grew), and ``top`` is capped at max_results."""
    settings = services.settings
    index = services.index if index is None else index
    values: dict[str, Any] = {"top": settings.max_results}
    values.update({k: v for k, v in {"threshold": threshold, "top": top}.items() if v is not None})
    values.update({k: form[k].text() for k in ("threshold", "top") if k in form})
    requested = "threshold" in values
    values.setdefault("threshold", default_threshold(services, index))
    try:
        options = SearchOptions.model_validate(values)
    except ValidationError as error:
        raise InvalidParameter("; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
        )) from None
    floor = min_threshold(services, index)
    options.threshold_requested = options.threshold if requested else None
    options.min_threshold = floor
    options.threshold = max(options.threshold, floor)
    options.top = min(options.top, settings.max_results)
    return options


def min_threshold(services: Services, index: FaceIndex | None = None) -> float:
    """The lowest threshold any search of this index runs at: above it, at most
    max_expected_strangers faces of other people are expected per search."""
    size = (services.index if index is None else index).size
    return services.engine.calibration.min_threshold(size,
                                                     services.settings.max_expected_strangers)


def default_threshold(services: Services, index: FaceIndex | None = None) -> float:
    """The operator's threshold if set, else the model pack's operating threshold at this
    index's size (see Calibration.operating_threshold); never below the floor."""
    index = services.index if index is None else index
    settings = services.settings
    chosen = (settings.threshold if settings.threshold is not None else
              services.engine.calibration.operating_threshold(
                  index.size, settings.target_expected_strangers))
    return max(chosen, min_threshold(services, index))


@router.get("/healthz", response_model=Health)
def healthz(index: IndexDep) -> Health:
    return Health(model_pack=index.model_pack, index_size=index.size, images=len(index.images))


@router.get("/api/info", response_model=Info)
def info(services: ServicesDep) -> Info:
    """What a client needs before its first search: the index, the default threshold and what
    thresholds mean for this index, the upload limit."""
    index, calibration = services.index, services.engine.calibration
    return Info(
        model_pack=index.model_pack,
        index_size=index.size,
        index_images=len(index.images),
        calibrated=calibration.calibrated,
        default_threshold=default_threshold(services, index),
        min_threshold=min_threshold(services, index),
        threshold_guide=calibration.guide(index.size, GUIDE_THRESHOLDS),
        max_upload_bytes=services.settings.max_upload_bytes,
        max_results=services.settings.max_results,
    )


@router.post(
    "/api/search",
    response_model=SearchResult,
    responses=ERROR_RESPONSES,
    openapi_extra=_SEARCH_BODY,
    dependencies=[Depends(check_rate_limit)],
)
async def search(
    request: Request,
    response: Response,
    services: ServicesDep,
    threshold: Annotated[float | None, Query(gt=0, le=1, description=_THRESHOLD_DOC)] = None,
    top: Annotated[int | None, Query(ge=1, description=_TOP_DOC)] = None,
) -> dict[str, Any]:
    """Every indexed photo with a face like the one in the selfie, best first.

    The body is read and parsed in memory (see faceaudit.service.uploads): the selfie is never
    written to disk nor logged.
    """
    settings = services.settings
    form = await _read_form(request, settings.max_upload_bytes + FORM_OVERHEAD)
    selfie = file_field(form, SELFIE_FIELD, settings.max_upload_bytes)
    published = services.published  # one index for the whole request, even across a reload
    options = search_options(form, services, threshold, top, published.index)
    decoded = await run_in_threadpool(decode_image, selfie,
                                      max_pixels=settings.max_upload_pixels,
                                      max_side=settings.selfie_max_side)
    del form, selfie  # the upload's bytes need not wait for the engine lock with us
    try:
        matches = await services.search(published.index, decoded, options.threshold,
                                         options.top)
    except (NoFaceFound, MultipleFaces) as error:
        await services.log_search(published.index, options.threshold, results=0,
                                  faces=getattr(error, "count", 0), outcome=error.code)
        raise
    result = search_response(published.index, matches, options.threshold,
                             services.engine.calibration,
                             default_threshold(services, published.index),
                             min_threshold=options.min_threshold,
                             threshold_requested=options.threshold_requested)
    for out, match in zip(result["matches"], matches, strict=True):
        out.update(_photo_fields(request, published.tokens, match))
        out["match_id"] = (services.match_ids.issue(published.index, match)
                           if services.match_ids is not None else None)
    await services.log_search(published.index, options.threshold, faces=1,
                              results=len(result["matches"]))
    response.headers["Cache-Control"] = "no-store"
    return result


async def _read_form(request: Request, max_bytes: int) -> dict[str, Part]:
    """The multipart form, in memory. A refused upload is read to its end (within a bound)
    before the refusal is sent, so that the client can read it (see uploads.discard_rest)."""
    body = request.stream()
    content_length = request.headers.get("content-length")
    try:
        return await read_multipart(body, content_type=request.headers.get("content-type"),
                                    content_length=content_length, max_bytes=max_bytes)
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
        404: {"model": ErrorResponse, "description": "Invalid or expired link, or photo gone."},
    },
)
async def thumbnail(token: str, services: ServicesDep) -> Response:
    """A thumbnail of a photo found by a search, through the link the search returned, every
    face but the matched one blurred."""
    published = services.published
    image_id, face = published.tokens.verify(View.PHOTO, token)
    data = await run_in_threadpool(_thumbnail, services.photos_root, published.index, image_id,
                                   face, services.settings.thumbnail_size)
    return Response(data, media_type="image/jpeg", headers={
        "Cache-Control": f"private, max-age={published.tokens.ttl_s}",
    })


@router.get(
    "/api/faces/{token}",
    name="face_thumbnail",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}},
              "description": "A square JPEG close-up of the matched face, at most "
              f"{FACE_SIZE} pixels a side."},
        404: {"model": ErrorResponse, "description": "Invalid or expired link, or photo gone."},
    },
)
async def face_thumbnail(token: str, services: ServicesDep) -> Response:
    """A close-up of the face that matched, through the link the search returned: in a group
    photo the face is too small in the thumbnail to tell who it is. Neighbouring faces that
    reach into it are blurred."""
    published = services.published
    image_id, face = published.tokens.verify(View.CLOSE_UP, token)
    data = await run_in_threadpool(_face, services.photos_root, published.index, image_id, face)
    return Response(data, media_type="image/jpeg", headers={
        "Cache-Control": f"private, max-age={published.tokens.ttl_s}",
    })


def _thumbnail(root: Path, index: FaceIndex, image_id: int, face: int, size: int) -> bytes:
    linked = linked_face(index, image_id, face)
    return render_thumbnail(photo_bytes(root, linked.record), linked.record.ref, size,
                            keep=linked.bbox, others=linked.others)


def _face(root: Path, index: FaceIndex, image_id: int, face: int) -> bytes:
    linked = linked_face(index, image_id, face)
    record = linked.record
    known = (record.width, record.height) if record.width and record.height else None
    return render_face(photo_bytes(root, record), record.ref, linked.bbox, known,
                       others=linked.others)
