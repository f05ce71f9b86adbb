"""A person's link to follow their removal request: ``GET /api/removals/{id}/status/{token}``.

The token is in the URL, and URLs end up in browser histories, bookmarks and screenshots. So
what the link shows is chosen to be harmless there: the status, its dates and the number of
photos, never the photos nor the contact address (those are in the receipt the person
downloaded, and with the operator). Only a SHA-256 of the token is stored, compared in
constant time; an unknown request and a wrong token get the same 404.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from faceaudit.removals import RemovalRequest, RequestNotFound
from faceaudit.service.deps import ServicesDep
from faceaudit.service.errors import ErrorResponse
from faceaudit.service.removals import Status, removals_of

router = APIRouter()

MAX_PART_CHARS = 128  # request ids are 16 characters, tokens 43: anything longer is not ours
# The page loads its style sheet and nothing else; it runs no script.
PAGE_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")
MEANINGS = {
    "received": "Your request was received. The photos are hidden from every search of this "
                "service, and their links show nothing. The dataset's maintainers have not "
                "yet been told by this service.",
    "sent": "This service passed your request on to the dataset's maintainers. The photos "
            "stay hidden from every search of this service.",
    "done": "The dataset's maintainers removed the photos.",
    "rejected": "The dataset's maintainers did not remove the photos. They stay hidden from "
                "every search of this service all the same.",
}
_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


class RemovalStatus(BaseModel):
    request_id: str
    status: Status
    meaning: str = Field(description="What the status means, in words.")
    created: str = Field(description="When the request was recorded (ISO 8601, UTC).")
    status_changed: str = Field(description="When it took its status (ISO 8601, UTC).")
    photos: int = Field(description="How many photos it names.")


def _status(request: RemovalRequest) -> dict[str, Any]:
    return {"request_id": request.request_id, "status": request.status,
            "meaning": MEANINGS[request.status], "created": request.created,
            "status_changed": request.status_changed, "photos": len(request.photos)}


def _page(status: dict[str, Any]) -> str:
    rows = "".join(f"<dt>{label}</dt><dd>{escape(str(status[key]))}</dd>" for label, key in (
        ("Request", "request_id"), ("Status", "status"), ("Received", "created"),
        ("Status since", "status_changed"), ("Photos", "photos")))
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="robots" content="noindex">
  <title>faceaudit: your removal request</title>
  <link rel="stylesheet" href="/static/style.css">
</head>
<body>
<main>
  <h1>Your removal request</h1>
  <section class="panel" aria-labelledby="status-title">
    <h2 id="status-title">Status: {escape(status["status"])}</h2>
    <p id="request-meaning">{escape(status["meaning"])}</p>
    <dl class="provenance">{rows}</dl>
    <p>Keep this page's address: it is the only way to follow your request. It shows no photo
      and no contact address.</p>
  </section>
  <p><a href="/">Back to the search</a></p>
</main>
</body>
</html>
"""


@router.get(
    "/api/removals/{request_id}/status/{token}",
    name="removal_status",
    response_model=RemovalStatus,
    responses={
        200: {"content": {"text/html": {}},
              "description": "The status as JSON; as a page for a browser (Accept: text/html)."},
        404: {"model": ErrorResponse,
              "description": "No request at this link (unknown request or wrong token)."},
        503: {"model": ErrorResponse,
              "description": "The service is starting or stopping: try again in a moment."},
    },
)
async def removal_status(request_id: str, token: str, request: Request,
                         services: ServicesDep) -> Response:
    """What became of a removal request, through the ``status_url`` its receipt gave: the
    status (received, sent, done, rejected), what it means, its dates and the number of
    photos. Never the photos nor the contact address."""
    store, _ = removals_of(services)
    if len(request_id) > MAX_PART_CHARS or len(token) > MAX_PART_CHARS:
        raise RequestNotFound("There is no removal request at this link: check that it was "
                              "copied whole.")
    found = await run_in_threadpool(store.followed, request_id, token)
    status = RemovalStatus.model_validate(_status(found)).model_dump()
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(_page(status), headers={
            **_HEADERS, "Content-Security-Policy": PAGE_POLICY})
    return JSONResponse(status, headers=_HEADERS)
