"""Routes of the Files API: upload, list, retrieve, download and delete."""

from __future__ import annotations

from aiohttp import web

from fakellm.batches import fail_now_and_then
from fakellm.errors import ApiError
from fakellm.file_store import check_purpose
from fakellm.listing import cursor_page, query_limit
from fakellm.state import STATE


async def upload(request: web.Request) -> web.Response:
    """Handle POST /v1/files: a multipart form with `file` and `purpose`."""
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, f"Upload files as multipart/form-data, not {request.content_type!r}.", "file")
    form = await request.post()
    purpose = form.get("purpose")
    if not isinstance(purpose, str):
        raise ApiError(400, "Missing required parameter: 'purpose'.", "purpose")
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise ApiError(400, "Missing required parameter: 'file' (a file part of the form).", "file")
    stored = request.app[STATE].files.add(upload.filename or "upload", check_purpose(purpose), upload.file.read())
    return web.json_response(stored.as_json())


async def list_files(request: web.Request) -> web.Response:
    """Handle GET /v1/files (`purpose`, `order`, `after`, `limit`)."""
    query = request.query
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid 'order': {order!r}; expected 'asc' or 'desc'.", "order")
    stored = list(request.app[STATE].files.files.values())
    if "purpose" in query:
        stored = [f for f in stored if f.purpose == query["purpose"]]
    if order == "desc":
        stored.reverse()
    limit = query_limit(query, 10000, 10000)
    return web.json_response(cursor_page(stored, query, lambda f: f.as_json(), limit))


async def retrieve(request: web.Request) -> web.Response:
    """Handle GET /v1/files/{file_id}."""
    return web.json_response(request.app[STATE].files.get(request.match_info["file_id"]).as_json())


async def content(request: web.Request) -> web.Response:
    """Handle GET /v1/files/{file_id}/content: the file's bytes (a batch's output or error file fails now and
    then, as the Batch API's requests do)."""
    state = request.app[STATE]
    stored = state.files.get(request.match_info["file_id"])
    if stored.purpose == "batch_output":
        fail_now_and_then(state)
    return web.Response(body=stored.data, content_type="application/octet-stream")


async def delete(request: web.Request) -> web.Response:
    """Handle DELETE /v1/files/{file_id}."""
    stored = request.app[STATE].files.delete(request.match_info["file_id"])
    return web.json_response({"id": stored.id, "object": "file", "deleted": True})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the Files API."""
    router.add_post("/v1/files", upload)
    router.add_get("/v1/files", list_files)
    router.add_get("/v1/files/{file_id}", retrieve)
    router.add_get("/v1/files/{file_id}/content", content)
    router.add_delete("/v1/files/{file_id}", delete)
