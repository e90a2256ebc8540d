"""One JSON error shape for every 4xx the task app gives, and the handlers that make it.

FastAPI's default validation answer echoes the offending input back, which
breaks on hostile bodies (a NaN or a 10 MB string) and can turn a client
error into a 500. These handlers answer with what is wrong and where, never
with the input itself: `{"error": {"code", "message", ...}, "detail": message}`
(`error` is the shape synth-ai's own task-app errors use; `detail` is what
FastAPI clients look for).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("task_app")

MAX_REPORTED_ERRORS = 5
MAX_MESSAGE_CHARS = 300


def error_payload(code: str, message: str, **extra: Any) -> dict[str, Any]:
    message = _clip(message)
    return {"error": {"code": code, "message": message, **extra}, "detail": message}


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_payload(code, message, **extra))


def describe_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Location, message and type of each error; the offending input is left out."""
    described = []
    for err in errors[:MAX_REPORTED_ERRORS]:
        loc = ".".join(_clip(str(part), 40) for part in err.get("loc", ()))
        described.append(
            {"loc": loc, "msg": _clip(str(err.get("msg", "invalid"))), "type": err.get("type")}
        )
    return described


async def _validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = describe_validation_errors(list(exc.errors()))
    summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
    more = len(exc.errors()) - len(errors)
    if more > 0:
        summary += f"; and {more} more"
    return error_response(422, "invalid_request", summary, errors=errors)


async def _http_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if isinstance(detail, dict) and isinstance(detail.get("error"), dict):
        err = detail["error"]
        code = str(err.get("code", "http_error"))
        message = str(err.get("message", ""))
    else:
        code = "not_found" if exc.status_code == 404 else "http_error"
        message = str(detail)
    return JSONResponse(
        status_code=exc.status_code,
        content=error_payload(code, message),
        headers=getattr(exc, "headers", None),
    )


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    # Only reached by a bug in the app; logged with its traceback, answered without it.
    log.exception("task app: unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", f"{type(exc).__name__} (see the server log)")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
