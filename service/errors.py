"""Errors to HTTP, in one place: every error response is ``{"error": {"code", "message"}}``.

Domain errors (faceaudit.errors and the service's own) get their status from ``STATUS``, by
class; FastAPI's validation errors and Starlette's HTTP errors (unknown route, wrong method)
are reshaped the same way. No handler includes the request body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceaudit.errors import (
    DeviceUnavailable,
    DifferentPeople,
    FaceAuditError,
    ImageTooLarge,
    IncompatibleIndex,
    IndexNotFound,
    ModelFileError,
    MultipleFaces,
    NoFaceFound,
    UnreadableImage,
)
from faceaudit.service.hardening import describe_exception
from faceaudit.service.ratelimit import RateLimited
from faceaudit.service.thumbnails import PhotoUnavailable, ThumbnailNotFound
from faceaudit.service.uploads import (
    EmptyUpload,
    MalformedUpload,
    MissingField,
    NotMultipart,
    UploadTooLarge,
)

log = logging.getLogger(__name__)


class InvalidParameter(FaceAuditError):
    code = "invalid_parameter"


class ServiceNotReady(FaceAuditError):
    code = "not_ready"


class ServiceBusy(FaceAuditError):
    """More searches at once than the service admits (settings.max_searches)."""

    code = "busy"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


STATUS: dict[type[FaceAuditError], int] = {
    UnreadableImage: 400,
    MalformedUpload: 400,
    EmptyUpload: 400,
    ThumbnailNotFound: 404,
    PhotoUnavailable: 404,
    UploadTooLarge: 413,
    ImageTooLarge: 413,
    NotMultipart: 415,
    MissingField: 422,
    InvalidParameter: 422,
    NoFaceFound: 422,
    MultipleFaces: 422,
    DifferentPeople: 422,
    RateLimited: 429,
    ModelFileError: 503,
    DeviceUnavailable: 503,
    IndexNotFound: 503,
    IncompatibleIndex: 503,
    ServiceNotReady: 503,
    ServiceBusy: 503,
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    count: int | None = None  # multiple_faces: how many faces were found
    selfie: int | None = None  # the selfie it is about, of several (1 for the first)


class ErrorResponse(BaseModel):
    error: ErrorDetail


def status_of(error: FaceAuditError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FaceAuditError)
    status = status_of(error)
    if status >= 500 and not isinstance(error, ServiceBusy):  # busy: the bound at work
        # A 503's message is about the service's set-up; an error of no known status may be
        # about the request: its type and place only.
        log.error("%s %s failed: %s", request.method, request.url.path,
                  error.message if status != 500 else describe_exception(error))
    extra: dict[str, Any] = {}
    headers = None
    if isinstance(error, MultipleFaces):
        extra["count"] = error.count
    if error.selfie is not None:
        extra["selfie"] = error.selfie
    if isinstance(error, (RateLimited, ServiceBusy)):
        headers = {"Retry-After": str(error.retry_after)}
    return error_response(status, error.code, error.message, headers=headers, **extra)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    # loc and msg only: pydantic's "input" would echo what was sent.
    problems = [
        f"{'.'.join(str(part) for part in item['loc'] if part not in ('query', 'path'))}: "
        f"{item['msg']}"
        for item in error.errors()
    ]
    return error_response(422, InvalidParameter.code, "; ".join(problems))


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code,
                                                             f"http_{error.status_code}")
    return error_response(error.status_code, code, str(error.detail),
                          headers=dict(error.headers) if error.headers else None)


async def _disconnected(request: Request, error: Exception) -> JSONResponse:
    # The client went away mid-upload: nobody reads this answer, and it is not a server error.
    return error_response(400, "client_disconnected", "The upload was interrupted.")


INTERNAL_ERROR = "Something went wrong on the server; the selfie was not kept."


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    # Only for an error in the outermost middleware (UnexpectedErrors takes all others):
    # Starlette re-raises it after this response, and the server logs it with serve's
    # SafeFormatter (type and place).
    return error_response(500, "internal_error", INTERNAL_ERROR)


class UnexpectedErrors:
    """An exception that no handler took is logged by its type and the places it was raised
    through, never its message (which can quote the request: ``align_face``'s names the
    selfie's landmarks), answered 500 when no response has started, and not raised further:
    Starlette and the server would log its traceback, message included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            log.error("%s %s failed: %s", scope.get("method"), scope.get("path"),
                      describe_exception(error))
            if not started:  # else the server closes the connection: the answer is cut short
                await error_response(500, "internal_error", INTERNAL_ERROR)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FaceAuditError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(Exception, _unexpected)
    # Added before create_app's other middleware, so inside them: its 500 gets their headers.
    app.add_middleware(UnexpectedErrors)


# Every route that reads what the lifespan loads answers this between start and stop.
NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse,
          "description": "The service is starting or stopping (not_ready): try again in a "
          "moment."},
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Not an image, a corrupt image, an empty file or a malformed form.",
        413: "The upload is over the byte limit, or the image over the pixel limit.",
        415: "The body is not multipart/form-data.",
        422: "No face, several faces, selfies of different people (different_people), more "
             "than 5 selfies (too_many_selfies), a confirmed photo that cannot join "
             "(confirmation_refused, invalid_match_id), a missing selfie field or an invalid "
             "parameter.",
        429: "Too many searches from this address.",
        503: "The service is starting, or busy with as many searches as it takes at once: "
             "try again after Retry-After seconds.",
    }.items()
}
