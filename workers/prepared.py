"""A provider's chat-completions request, built once through the OpenAI SDK and sent many times.

The SDK's `post` rebuilds the same request for every call: it copies and validates its options (pydantic),
parses the base URL, merges the default and auth headers and asks the auth hooks again, which is most of
the CPU a call costs the worker (docs/benchmarks.md, "Where the time goes"). `PreparedChat.build` lets the
client do all of that once, for a request to `/chat/completions` with the client's own auth; `send` then
reuses its URL and headers with each call's body, and sends it through the same client's transport and
auth hook (`_send_request`), raising the SDK's own errors (`APITimeoutError`, `APIConnectionError`, the
`APIStatusError` subclasses) as `post` does.

A client the template cannot stand for (custom auth or request signing, an API key from a function,
per-request idempotency keys) gets no template: `build` returns None and the caller uses `post`.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._models import FinalRequestOptions

try:  # the HTTP library under the openai package: httpx2 from its 3.x, httpx before
    import httpx2 as http
except ImportError:  # pragma: no cover (the locked environment has httpx2)
    import httpx as http  # type: ignore[no-redef,import-not-found,unused-ignore]

PATH = "/chat/completions"
# Headers that belong to one request and are set again for each: the body's length and the read timeout.
_PER_CALL = frozenset({"content-length", "x-stainless-read-timeout"})


class PreparedChat:
    """The URL and headers of one client's chat-completions request, and a way to send a body with them."""

    __slots__ = ("_client", "_headers", "_url")

    def __init__(self, client: openai.AsyncOpenAI, url: Any, headers: Any) -> None:
        self._client = client
        self._url = url
        self._headers = headers

    @classmethod
    async def build(cls, client: openai.AsyncOpenAI) -> PreparedChat | None:
        """The client's request template, or None when a template cannot carry its auth or headers."""
        # Whatever is made afresh for each request cannot be a template: custom auth or a provider's request
        # signing, an API key from a function (a new token per request), an idempotency key per request.
        if (client.custom_auth is not None or client._idempotency_header
                or getattr(client, "_api_key_provider", None) is not None
                or getattr(client, "_provider_runtime", None) is not None):
            return None
        options = FinalRequestOptions.construct(method="post", url=PATH, json_data={})
        options = await client._prepare_options(options)
        request = client._build_request(options)
        await client._prepare_request(request)
        headers = http.Headers([(k, v) for k, v in request.headers.multi_items() if k.lower() not in _PER_CALL])
        return cls(client, request.url, headers)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers every call sends (the read timeout and the body's length are added per call)."""
        return list(self._headers.multi_items())

    async def send(self, body: dict[str, Any], timeout: float) -> Any:
        """POST `body` as JSON (encoded as the SDK encodes it); the response (read) when the provider answered
        2xx, else the SDK's error."""
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        headers = self._headers.copy()  # copies the template's normalised list; no header is parsed again
        headers["content-length"] = str(len(content))
        headers["x-stainless-read-timeout"] = str(timeout)
        # With the body given as a stream and its length set above, the request is not encoded again.
        request = http.Request("POST", self._url, headers=headers, stream=http.ByteStream(content),
                               extensions={"timeout": http.Timeout(timeout).as_dict()})
        request.read()
        jar = self._client._client.cookies
        if jar:  # cookies the provider set on earlier answers (the client's jar keeps them), as post sends them
            jar.set_cookie_header(request)
        try:
            response = await self._client._send_request(request, stream=False)
        except timeout_exceptions() as exc:
            raise openai.APITimeoutError(request=request) from exc
        except openai.OpenAIError:
            raise
        except request_exceptions() as exc:
            raise openai.APIConnectionError(request=request) from exc
        if not response.is_success:  # as the SDK's request(): any answer but a 2xx is an error (a 3xx too)
            raise self._client._make_status_error_from_response(response)
        return response
