"""OpenAI-style error bodies."""

from __future__ import annotations

from typing import Any

from aiohttp import web


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
