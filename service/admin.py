"""The operator's removal routes (/api/admin/...): list requests, set their status. The app
includes them only when FACEAUDIT_ADMIN_TOKEN is set and removals are on: otherwise they do not
exist, in the OpenAPI document or anywhere else."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceaudit.removals import RemovalStore
from faceaudit.service.deps import ServicesDep
from faceaudit.service.errors import ErrorResponse
from faceaudit.service.removals import PhotoOut, Status, body_schema, read_json, removals_of

router = APIRouter()


class StatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["sent", "done", "rejected"]


class AdminPhoto(PhotoOut):
    dataset: str
    face_ids: list[str] = Field(description="Stable ids of the faces to remove, in decimal.")


class AdminRequest(BaseModel):
    request_id: str
    created: str
    status: Status
    status_changed: str
    contact: str | None
    photos: list[AdminPhoto]


class AdminRequests(BaseModel):
    requests: list[AdminRequest]


def _errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": description}
            for status, description in {
                401: "No Authorization: Bearer header, or not the operator's token.",
                503: "The service is starting or stopping: try again in a moment.",
                **descriptions}.items()}


def require_admin(request: Request, services: ServicesDep) -> RemovalStore:
    """The store, for a request bearing FACEAUDIT_ADMIN_TOKEN (compared in constant time)."""
    token = services.settings.admin_token
    if token is None:  # the app does not include these routes then; never reached
        raise StarletteHTTPException(404, "Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise StarletteHTTPException(
            401, "This route needs the operator's token: Authorization: Bearer <token>.",
            headers={"WWW-Authenticate": "Bearer"})
    return removals_of(services)[0]


AdminStore = Annotated[RemovalStore, Depends(require_admin)]


@router.get("/api/admin/removals", response_model=AdminRequests,
            responses=_errors({422: "An unknown status."}))
async def list_removals(
    store: AdminStore,
    response: Response,
    dataset: Annotated[str | None, Query(description="Only this dataset's photos.")] = None,
    status: Annotated[Status | None, Query()] = None,
) -> dict[str, Any]:
    """Every removal request, oldest first, with its contact and photos (operator only:
    Authorization: Bearer FACEAUDIT_ADMIN_TOKEN)."""
    found = await run_in_threadpool(store.requests, dataset=dataset, status=status)
    response.headers["Cache-Control"] = "no-store"
    return {"requests": [request.as_dict() for request in found]}


@router.post("/api/admin/removals/{request_id}/status", response_model=AdminRequest,
             openapi_extra=body_schema(StatusBody),
             responses=_errors({404: "No removal request has this id.",
                                413: "The body is larger than 64 KiB.",
                                422: "Not JSON, or not one of the statuses."}))
async def set_removal_status(request_id: str, request: Request, store: AdminStore,
                             response: Response) -> dict[str, Any]:
    """Mark a request ``sent`` (passed on to the dataset's maintainers), ``done`` (they
    removed the photos) or ``rejected`` (they did not; its faces stay hidden here): JSON
    ``{"status": "sent"}`` (operator only). The person sees it at their status link."""
    body = await read_json(request, StatusBody)
    updated = await run_in_threadpool(store.set_status, request_id, body.status)
    response.headers["Cache-Control"] = "no-store"
    return updated.as_dict()
