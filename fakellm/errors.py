"""OpenAI-style error bodies, and the one exception the Files and Batch routes raise to answer with one.

    BadRequest (fakellm.parsing)   a request body the chat and embeddings routes reject with HTTP 400
    ApiError                       any other error a route answers with: status, message, param, code
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An error a route answers with an OpenAI-style JSON body; the message names the field and value."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def response(self) -> web.Response:
        """The HTTP response that reports this error."""
        return error_response(self.status, self.message, self.kind, self.param, self.code)


@web.middleware
async def api_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer an ApiError raised by a route with its OpenAI-style JSON body."""
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body of an OpenAI-style error."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    kind: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Return an OpenAI-style JSON error."""
    return web.json_response(error_body(message, kind, param, code), status=status, headers=headers)


def not_found(kind: str, object_id: str, param: str | None = None) -> ApiError:
    """The 404 for an unknown file or batch id, worded as OpenAI words it."""
    return ApiError(404, f"No such {kind} object: {object_id}", param)
