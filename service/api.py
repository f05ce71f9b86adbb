"""The HTTP API: health, search by selfie, thumbnails of the photos found."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from faceaudit.imaging import decode_image
from faceaudit.indexer.search import Match
from faceaudit.results import search_response
from faceaudit.service.deps import IndexDep, Services, ServicesDep, check_rate_limit
from faceaudit.service.errors import ERROR_RESPONSES, ErrorResponse, InvalidParameter
from faceaudit.service.schemas import Health, SearchResult
from faceaudit.service.thumbnails import ThumbnailNotFound, photo_path, render_thumbnail
from faceaudit.service.uploads import Part, file_field, read_multipart

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


def search_options(form: dict[str, Part], services: Services, threshold: float | None,
                   top: int | None) -> SearchOptions:
    """Form fields over query parameters over the server's defaults."""
    settings = services.settings
    default = settings.threshold or services.engine.calibration.threshold
    values: dict[str, Any] = {"threshold": default, "top": settings.max_results}
    values.update({k: v for k, v in {"threshold": threshold, "top": top}.items() if v is not None})
    values.update({k: form[k].text() for k in ("threshold", "top") if k in form})
    try:
        options = SearchOptions.model_validate(values)
    except ValidationError as error:
        raise InvalidParameter("; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
        )) from None
    options.top = min(options.top, settings.max_results)
    return options


@router.get("/healthz", response_model=Health)
def healthz(index: IndexDep) -> Health:
    return Health(model_pack=index.model_pack, index_size=index.size, images=len(index.images))


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
    form = await read_multipart(
        request.stream(),
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        max_bytes=settings.max_upload_bytes + FORM_OVERHEAD,
    )
    selfie = file_field(form, SELFIE_FIELD, settings.max_upload_bytes)
    options = search_options(form, services, threshold, top)
    decoded = await run_in_threadpool(decode_image, selfie,
                                      max_pixels=settings.max_upload_pixels,
                                      max_side=settings.selfie_max_side)
    del form, selfie  # the upload's bytes need not wait for the engine lock with us
    matches = await services.search(decoded, options.threshold, options.top)
    result = search_response(services.index, matches, options.threshold,
                             services.engine.calibration)
    for out, match in zip(result["matches"], matches, strict=True):
        out.update(_photo_fields(request, services, match))
    response.headers["Cache-Control"] = "no-store"
    return result


def _photo_fields(request: Request, services: Services, match: Match) -> dict[str, Any]:
    token = services.tokens.issue(match.image_id)
    return {
        "thumbnail": request.url_for("thumbnail", token=token).path,
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
    """A thumbnail of a photo found by a search, through the link the search returned."""
    image_id = services.tokens.verify(token)
    if image_id >= len(services.index.images):
        raise ThumbnailNotFound("This thumbnail link is not for a photo of this index.")
    relative = services.index.images[image_id].path
    path = photo_path(services.photos_root, relative)
    data = await run_in_threadpool(render_thumbnail, path, relative,
                                   services.settings.thumbnail_size)
    return Response(data, media_type="image/jpeg", headers={
        "Cache-Control": f"private, max-age={services.tokens.ttl_s}",
    })
