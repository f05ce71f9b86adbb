"""Removal requests over HTTP: the subject's ``POST /api/removals`` and the operator's admin
routes. The store, match ids and suppression are in faceaudit.removals; this module parses,
checks and answers."""

from __future__ import annotations

import hmac
import json
import re
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.search import FaceIndex
from faceaudit.removals import (
    OPT_OUT_COLUMNS,
    InvalidMatchId,
    MatchIds,
    RemovalRequest,
    RemovalStore,
    RemovedPhoto,
    RequestNotFound,
    StateDirError,
    photos_to_remove,
    rows_csv,
)
from faceaudit.service.deps import Services, ServicesDep, check_rate_limit
from faceaudit.service.errors import STATUS, ErrorResponse, InvalidParameter
from faceaudit.service.uploads import too_large

router = APIRouter()

MAX_MATCHES = 200  # a search returns at most max_results photos (200 by default)
MAX_BODY_BYTES = 64 * 1024  # 200 match ids of 82 characters and a contact, with room to spare
MAX_CONTACT_CHARS = 254  # the longest address SMTP carries
_EMAIL = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+\.[^@\s<>()\[\],;:\"\\]+")


class RemovalsDisabled(FaceAuditError):
    code = "removals_disabled"


# This router's errors, in the service's one table of statuses (faceaudit.service.errors).
STATUS.update({InvalidMatchId: 422, RequestNotFound: 404, RemovalsDisabled: 503,
               StateDirError: 503})


# --- request and response bodies -------------------------------------------------------------

class RemovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matches: list[str] = Field(description="The match_id of each photo to remove, as the "
                               f"search returned them; 1 to {MAX_MATCHES}.")
    contact: str | None = Field(None, description="Optional email address at which the person "
                                "can be reached about the request. Stored with it.")


class StatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["sent", "done"]


class PhotoOut(BaseModel):
    image_key: str
    photo_id: str | None
    image_url: str | None
    page_url: str | None
    sha256: str | None
    source_record: str | None = Field(description="Where the dataset lists the photo: file "
                                      "and line, or shard and key.")
    uploader_name: str | None
    licence_name: str | None


class DatasetRemoval(BaseModel):
    dataset: str
    contact: str | None = Field(description="The dataset maintainers' address, when the "
                                "operator configured one (FACEAUDIT_DATASET_CONTACTS).")
    photos: list[PhotoOut]
    subject: str = Field(description="A subject line for the letter.")
    letter: str = Field(description="A plain-text letter to the dataset's maintainers, "
                        "ready to send, listing every photo exactly.")
    mailto: str | None = Field(description="A mailto: link with subject and letter, when the "
                               "dataset's contact is configured.")


class RemovalReceipt(BaseModel):
    request_id: str
    created: str = Field(description="When the request was recorded (ISO 8601, UTC).")
    status: Literal["received", "sent", "done"]
    datasets: list[DatasetRemoval]
    json_: str = Field(alias="json", description="The request as a JSON document to download "
                       "(request id, time, and per dataset its contact and photos).")
    csv: str = Field(description="One row per photo: " + ", ".join(OPT_OUT_COLUMNS) + ".")


class AdminPhoto(PhotoOut):
    dataset: str
    face_ids: list[str] = Field(description="Stable ids of the faces to remove, in decimal.")


class AdminRequest(BaseModel):
    request_id: str
    created: str
    status: Literal["received", "sent", "done"]
    status_changed: str
    contact: str | None
    photos: list[AdminPhoto]


class AdminRequests(BaseModel):
    requests: list[AdminRequest]


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON body for the OpenAPI page: the routes read it themselves (_read_json)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema()}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description} for status, description in {
        413: "The body is larger than 64 KiB.",
        422: "Not JSON, no match ids, too many, one not issued by a search of this index or "
             "expired, or an invalid contact address.",
        429: "Too many requests from this address.",
        503: "The service keeps no removal requests (FACEAUDIT_STATE_DIR is not set).",
    }.items()
}


async def _read_json(request: Request, model: type[BaseModel]) -> Any:
    """The body, parsed into ``model``: read into memory with a cap (a JSON body needs no
    more), errors as plain InvalidParameter messages."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large(MAX_BODY_BYTES)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large(MAX_BODY_BYTES)
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as error:
        raise InvalidParameter("; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"]
            for e in error.errors()
        )) from None


def _removals(services: Services) -> tuple[RemovalStore, MatchIds]:
    if services.removals is None or services.match_ids is None:
        raise RemovalsDisabled(
            "This service does not keep removal requests (its operator has not set "
            "FACEAUDIT_STATE_DIR). Contact the dataset's maintainers directly, with the photo "
            "ids and links shown with each photo.")
    return services.removals, services.match_ids


def _checked(body: RemovalBody) -> RemovalBody:
    if not body.matches:
        raise InvalidParameter("No photo chosen: send the match_id of at least one photo.")
    if len(body.matches) > MAX_MATCHES:
        raise InvalidParameter(f"{len(body.matches)} photos in one request: at most "
                               f"{MAX_MATCHES}; send the rest in another.")
    contact = (body.contact or "").strip() or None
    if contact is not None and (len(contact) > MAX_CONTACT_CHARS
                                or not _EMAIL.fullmatch(contact)):
        raise InvalidParameter("contact: this is not an email address; leave it empty, or "
                               "give one like name@example.org.")
    return body.model_copy(update={"contact": contact})


def _open(indexes: list[FaceIndex], match_ids: MatchIds, match_id: str
          ) -> tuple[int, tuple[int, int]]:
    """(which of ``indexes``, (image row, face row)) of a match id a search issued: each id
    names the index it was issued for (see MatchIds), so at most one accepts it."""
    refused: InvalidMatchId | None = None
    for number, index in enumerate(indexes):
        try:
            return number, match_ids.open(index, match_id)
        except InvalidMatchId as error:
            refused = error
    assert refused is not None  # a service serves at least one index
    raise refused


def _resolve(indexes: list[FaceIndex], match_ids: MatchIds, ids: list[str]
             ) -> list[RemovedPhoto]:
    """The photos the match ids name, in whichever of the indexes served each was found."""
    rows: dict[int, list[tuple[int, int]]] = {}
    for position, match_id in enumerate(ids):
        try:
            number, row = _open(indexes, match_ids, match_id)
        except InvalidMatchId as error:
            raise type(error)(f"matches[{position}]: {error.message}") from None
        rows.setdefault(number, []).append(row)
    return [photo for number, found in rows.items()
            for photo in photos_to_remove(indexes[number], found)]


# --- the letter ------------------------------------------------------------------------------

def letter_subject(dataset: str, photos: int) -> str:
    return (f"Removal request: {photos} photo{'s' if photos != 1 else ''} of me in the "
            f"dataset {dataset}")


def _describe(number: int, photo: RemovedPhoto) -> list[str]:
    head = (f"{number}. Photo id {photo.photo_id} (image key {photo.image_key})"
            if photo.photo_id else f"{number}. Image key {photo.image_key}")
    lines = [head]
    for label, value in (("Image", photo.image_url), ("Page", photo.page_url),
                         ("SHA-256 of the image file", photo.sha256),
                         ("Listed in the dataset at", photo.source_record),
                         ("Uploaded by", photo.uploader_name),
                         ("Licence", photo.licence_name)):
        if value:
            lines.append(f"   {label}: {value}")
    return lines


def removal_letter(dataset: str, photos: list[RemovedPhoto], request: RemovalRequest) -> str:
    """A plain-text letter to the maintainers of ``dataset`` asking them to remove ``photos``,
    each named exactly (photo id, image and page URL, SHA-256, where the dataset lists it)."""
    n = len(photos)
    them = "them" if n > 1 else "it"
    lines = [
        f"To the maintainers of the dataset {dataset},",
        "",
        f"I am the person pictured in the {n} photo{'s' if n > 1 else ''} of the dataset "
        f"{dataset} listed below. I ask you to remove {them} from the dataset, with "
        f"everything derived from {them} (face crops, embeddings, annotations and entries in "
        f"URL lists), and to leave {them} out of future releases and downloads.",
        "",
        "Please handle this under the dataset's own removal process and, where the EU "
        "General Data Protection Regulation applies, as a request for erasure under its "
        "Article 17.",
        "",
    ]
    for number, photo in enumerate(photos, 1):
        lines += _describe(number, photo) + [""]
    lines.append("Please confirm to me when this is done.")
    if request.contact:
        lines += ["", f"You can reach me at {request.contact}."]
    lines += ["", f"(faceaudit removal request {request.request_id}, {request.created})"]
    return "\n".join(lines) + "\n"


def mailto(address: str, subject: str, body: str) -> str:
    """A mailto: link (RFC 6068): percent-encoded, line breaks as CRLF."""
    return (f"mailto:{quote(address, safe='@')}?subject={quote(subject, safe='')}"
            f"&body={quote(body.replace(chr(10), chr(13) + chr(10)), safe='')}")


def receipt(request: RemovalRequest, contacts: dict[str, str]) -> dict[str, Any]:
    """The answer to a removal request: per dataset the photos, a letter and a mailto: link;
    the whole as a JSON document and as CSV."""
    datasets, documents = [], []
    for name in request.datasets:
        photos = [photo for photo in request.photos if photo.dataset == name]
        contact = contacts.get(name)
        subject = letter_subject(name, len(photos))
        letter = removal_letter(name, photos, request)
        listed = [photo.listing() for photo in photos]
        documents.append({"dataset": name, "contact": contact, "photos": listed})
        datasets.append({"dataset": name, "contact": contact, "photos": listed,
                         "subject": subject, "letter": letter,
                         "mailto": mailto(contact, subject, letter) if contact else None})
    document = {"request_id": request.request_id, "created": request.created,
                "status": request.status, "datasets": documents}
    rows = [{"dataset": photo.dataset, **photo.listing()} for photo in request.photos]
    return {"request_id": request.request_id, "created": request.created,
            "status": request.status, "datasets": datasets,
            "json": json.dumps(document, indent=1), "csv": rows_csv(rows, OPT_OUT_COLUMNS)}


# --- the subject's route ---------------------------------------------------------------------

@router.post(
    "/api/removals",
    status_code=201,
    response_model=RemovalReceipt,
    response_model_by_alias=True,
    responses=_ERRORS,
    openapi_extra=_body_schema(RemovalBody),
    dependencies=[Depends(check_rate_limit)],
)
async def request_removal(request: Request, response: Response,
                          services: ServicesDep) -> dict[str, Any]:
    """Ask for the removal of photos a search found: JSON ``{"matches": [match_id, ...],
    "contact": optional email}``. The request is recorded (never the selfie, a score or the
    client's address), the faces it names are never returned by a search again, and the answer
    gives per dataset the exact photos, a ready letter and a mailto: link when the dataset's
    contact is known."""
    store, match_ids = _removals(services)
    body = _checked(await _read_json(request, RemovalBody))
    indexes = services.catalog.group().indexes
    photos = await run_in_threadpool(_resolve, indexes, match_ids, body.matches)
    recorded = await run_in_threadpool(store.record_request, photos, body.contact)
    response.headers["Cache-Control"] = "no-store"
    return receipt(recorded, services.settings.dataset_contacts)


# --- the operator's routes -------------------------------------------------------------------

def require_admin(request: Request, services: ServicesDep) -> RemovalStore:
    """The store, for a request bearing FACEAUDIT_ADMIN_TOKEN. Without a token configured
    the admin routes do not exist (404, as any unknown path)."""
    token = services.settings.admin_token
    if token is None:
        raise StarletteHTTPException(404, "Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise StarletteHTTPException(
            401, "This route needs the operator's token: Authorization: Bearer <token>.",
            headers={"WWW-Authenticate": "Bearer"})
    return _removals(services)[0]


AdminStore = Annotated[RemovalStore, Depends(require_admin)]


@router.get("/api/admin/removals", response_model=AdminRequests)
async def list_removals(
    store: AdminStore,
    response: Response,
    dataset: Annotated[str | None, Query(description="Only this dataset's photos.")] = None,
    status: Annotated[Literal["received", "sent", "done"] | None, Query()] = None,
) -> dict[str, Any]:
    """Every removal request, oldest first, with its contact and photos (operator only:
    Authorization: Bearer FACEAUDIT_ADMIN_TOKEN)."""
    found = await run_in_threadpool(store.requests, dataset=dataset, status=status)
    response.headers["Cache-Control"] = "no-store"
    return {"requests": [request.as_dict() for request in found]}


@router.post("/api/admin/removals/{request_id}/status", response_model=AdminRequest,
             openapi_extra=_body_schema(StatusBody))
async def set_removal_status(request_id: str, request: Request, store: AdminStore
                             ) -> dict[str, Any]:
    """Mark a request ``sent`` (passed on to the dataset's maintainers) or ``done`` (they
    removed the photos): JSON ``{"status": "sent"}`` (operator only)."""
    body = await _read_json(request, StatusBody)
    updated = await run_in_threadpool(store.set_status, request_id, body.status)
    return updated.as_dict()

