"""Removal requests over HTTP: the subject's ``POST /api/removals`` (its status link is in
faceaudit.service.removal_status, the operator's routes in faceaudit.service.admin). The store,
match ids and suppression are in faceaudit.removals; this module parses, checks and answers."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.search import FaceIndex
from faceaudit.removals import (
    OPT_OUT_COLUMNS,
    FaceRemoved,
    InvalidMatchId,
    MatchIds,
    RemovalRequest,
    RemovalStore,
    RemovedPhoto,
    RequestNotFound,
    photos_to_remove,
    rows_csv,
)
from faceaudit.service.deps import Services, ServicesDep, check_rate_limit
from faceaudit.service.errors import STATUS, ErrorResponse, InvalidParameter
from faceaudit.service.uploads import too_large

router = APIRouter()
# Instead of ``router`` when removals are off: POST /api/removals, outside the OpenAPI document,
# answering 404 with whom to write to.
off_router = APIRouter()

MAX_MATCHES = 200  # a search returns at most max_results photos (200 by default)
MAX_BODY_BYTES = 64 * 1024  # 200 match ids of 82 characters and a contact, with room to spare
MAX_CONTACT_CHARS = 254  # the longest address SMTP carries
_EMAIL = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+\.[^@\s<>()\[\],;:\"\\]+")


class RemovalsDisabled(FaceAuditError):
    code = "removals_disabled"


# This router's errors, in the service's one table of statuses (faceaudit.service.errors).
# No 5xx: removals off is the operator's choice, and a broken state folder fails at start-up.
STATUS.update({InvalidMatchId: 422, RequestNotFound: 404, RemovalsDisabled: 404,
               FaceRemoved: 410})

Status = Literal["received", "sent", "done", "rejected"]


# --- request and response bodies -------------------------------------------------------------

class RemovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matches: list[str] = Field(description="The match_id of each photo to remove, as the "
                               f"search returned them; 1 to {MAX_MATCHES}.",
                               # Documented, but checked in the route, whose messages say
                               # what to do (send the rest in another request).
                               json_schema_extra={"minItems": 1, "maxItems": MAX_MATCHES})
    contact: str | None = Field(None, description="Optional email address at which the person "
                                "can be reached about the request. Stored with it.")


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
    status: Status
    status_url: str = Field(description="Where the person can follow the request (GET: its "
                            "status, dates and number of photos). It holds a secret token: "
                            "keep it; it is handed out only in this answer.")
    datasets: list[DatasetRemoval]
    json_: str = Field(alias="json", description="The request as a JSON document to download "
                       "(request id, time, and per dataset its contact and photos).")
    csv: str = Field(description="One row per photo: " + ", ".join(OPT_OUT_COLUMNS) + ".")


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON body for the OpenAPI page: the routes read it themselves (read_json)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema()}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description} for status, description in {
        413: "The body is larger than 64 KiB.",
        422: "Not JSON, no match ids, too many, one not issued by a search of this index or "
             "expired, or an invalid contact address.",
        429: "Too many requests from this address.",
        503: "The service is starting or stopping: try again in a moment.",
    }.items()
}


async def read_json(request: Request, model: type[BaseModel]) -> Any:
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


def whom_to_write(contacts: dict[str, str]) -> str:
    """What a person is told when this service takes no removal requests."""
    known = "; ".join(f"{name}: {address}" for name, address in sorted(contacts.items()))
    return ("This service does not take removal requests: its operator turned them off. To "
            "have photos removed, write to the maintainers of the dataset each photo is from, "
            "naming the photo's id, page or address shown with it" +
            (f" ({known})." if known else "."))


def removals_of(services: Services) -> tuple[RemovalStore, MatchIds]:
    if services.removals is None or services.match_ids is None:
        raise RemovalsDisabled(whom_to_write(services.settings.dataset_contacts))
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


def receipt(request: RemovalRequest, contacts: dict[str, str], status_url: str = ""
            ) -> dict[str, Any]:
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
            "status": request.status, "status_url": status_url, "datasets": datasets,
            "json": json.dumps(document, indent=1), "csv": rows_csv(rows, OPT_OUT_COLUMNS)}


# --- the subject's route ---------------------------------------------------------------------

@router.post(
    "/api/removals",
    status_code=201,
    response_model=RemovalReceipt,
    response_model_by_alias=True,
    responses={200: {"model": RemovalReceipt,
                     "description": "The same faces were asked for before, in any order: "
                     "that request, as it stands, with a new status link."},
               **_ERRORS},
    openapi_extra=body_schema(RemovalBody),
    dependencies=[Depends(check_rate_limit)],
)
async def request_removal(request: Request, response: Response,
                          services: ServicesDep) -> dict[str, Any]:
    """Ask for the removal of photos a search found: JSON ``{"matches": [match_id, ...],
    "contact": optional email}``. The request is recorded (never the selfie, a score or the
    client's address), the faces it names are never returned by a search again and their
    thumbnail links answer 410, and the answer gives per dataset the exact photos, a ready
    letter and a mailto: link when the dataset's contact is known, and a ``status_url`` to
    follow the request. 201 for a new request; 200 with the same ``request_id`` when a request
    already names exactly these faces (its stored contact is not shown again)."""
    store, match_ids = removals_of(services)
    body = _checked(await read_json(request, RemovalBody))
    indexes = services.catalog.group().indexes
    photos = await run_in_threadpool(_resolve, indexes, match_ids, body.matches)
    submitted = await run_in_threadpool(store.submit, photos, body.contact)
    recorded = submitted.request
    if not submitted.new:
        # Whoever has match ids for these faces may ask again: they get the request's status,
        # never the address someone else gave with it (the letter names theirs, if any).
        recorded = dataclasses.replace(recorded, contact=body.contact)
        response.status_code = 200
    response.headers["Cache-Control"] = "no-store"
    status_url = request.url_for("removal_status", request_id=recorded.request_id,
                                 token=submitted.token).path
    return receipt(recorded, services.settings.dataset_contacts, status_url)


@off_router.post("/api/removals", include_in_schema=False)
async def removals_off(services: ServicesDep) -> None:
    """Removals are off (serve --no-removals): 404, saying whom to write to."""
    raise RemovalsDisabled(whom_to_write(services.settings.dataset_contacts))
