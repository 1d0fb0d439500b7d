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

Under the template, the client's own transport is the SDK's aiohttp one (`openai.DefaultAioHttpClient`, the
workers' client): an adapter that turns each httpx2 request into an aiohttp request on the client's aiohttp
session. Where nothing of httpx2's client acts on the request (no proxy, auth hook, event hook or mounted
transport), `send` hands the body to that same session the way the adapter does, and skips the httpx2
request and response objects, the client's auth, redirect and hook passes, and the adapter's header
conversion: half the CPU of a call (docs/benchmarks.md). It keeps what those passes do for this request:
the client's cookies both ways, the adapter's mapping of aiohttp's errors to httpx2's (and so to the SDK's),
the SDK's own status errors, decoding of a compressed body, and a redirect the client follows, which is
sent again the full way, and the client's log line per request (at DEBUG in the workers).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import openai
from multidict import CIMultiDict
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._models import FinalRequestOptions
from openai._vendor.httpx_aiohttp.transport import AiohttpTransport, map_aiohttp_exceptions

try:  # the HTTP library under the openai package: httpx2 from its 3.x, httpx before
    import httpx2 as http
except ImportError:  # pragma: no cover (the locked environment has httpx2)
    import httpx as http  # type: ignore[no-redef,import-not-found,unused-ignore]

PATH = "/chat/completions"
# The client's logger, whose INFO line per request the direct path writes as the client would.
_http_log = logging.getLogger(http.__name__)
# Headers that belong to one request and are set again for each: the body's length and the read timeout.
_PER_CALL = frozenset({"content-length", "x-stainless-read-timeout"})


class Answer:
    """A 2xx answer's body, and the HTTP response it came in, made only when asked for (to report a body
    that is not JSON): the direct path reads the body without one."""

    __slots__ = ("_headers", "_reason", "_response", "_status", "_url", "content")

    def __init__(self, content: bytes, response: Any = None, *, status: int = 200, headers: Any = None,
                 reason: str | None = None, url: Any = None) -> None:
        self.content = content
        self._response = response
        self._status, self._headers, self._reason, self._url = status, headers, reason, url

    def response(self) -> Any:
        """The answer as the SDK's HTTP library's response (httpx2.Response)."""
        if self._response is None:
            self._response = _response(self._status, self._headers, self.content, self._reason,
                                       http.Request("POST", self._url))
        return self._response


class PreparedChat:
    """The URL and headers of one client's chat-completions request, and a way to send a body with them."""

    __slots__ = ("_client", "_direct", "_headers", "_url")

    def __init__(self, client: openai.AsyncOpenAI, url: Any, headers: Any, direct: _Direct | None = None) -> None:
        self._client = client
        self._url = url
        self._headers = headers
        self._direct = direct

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
        return cls(client, request.url, headers, _Direct.of(client, request.url, headers))

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers every call sends (the read timeout and the body's length are added per call)."""
        return list(self._headers.multi_items())

    @property
    def direct(self) -> bool:
        """Whether calls go to the client's aiohttp session directly (the module's docstring says when)."""
        return self._direct is not None

    async def send(self, body: dict[str, Any], timeout: float) -> Answer:
        """POST `body` as JSON (encoded as the SDK encodes it); the answer when the provider answered 2xx, else
        the SDK's error."""
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        if self._direct is not None:
            answer = await self._direct.send(content, timeout)
            if answer is not None:
                return answer
            # A redirect the client follows: sent again through the client, which follows it.
        response = await self._send_through_client(content, timeout)
        return Answer(response.content, response)

    async def _send_through_client(self, content: bytes, timeout: float) -> Any:
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


class _Direct:
    """A client's requests sent to its own aiohttp session, as the SDK's aiohttp transport sends them."""

    __slots__ = ("_client", "_follows", "_headers", "_timeouts", "_transport", "_url", "_url_text")

    def __init__(self, client: openai.AsyncOpenAI, transport: AiohttpTransport, url: Any, headers: Any) -> None:
        self._client = client
        self._transport = transport
        self._url, self._url_text = url, str(url)
        self._headers: CIMultiDict[str] = CIMultiDict(headers.multi_items())
        self._follows = bool(client._client.follow_redirects)
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @classmethod
    def of(cls, client: openai.AsyncOpenAI, url: Any, headers: Any) -> _Direct | None:
        """The direct path for `client`'s requests to `url`, or None when its httpx2 client would act on them
        (a proxy or other mounted transport, an auth or event hook, credentials in the URL, a workload
        identity) or its transport is not the SDK's aiohttp one with a session of its own."""
        http_client = client._client
        transport = http_client._transport_for_url(url)
        if (type(transport) is not AiohttpTransport or transport is not http_client._transport
                or transport.proxy is not None or http_client._auth is not None
                or any(http_client._event_hooks.values()) or url.username or url.password
                or getattr(client, "_workload_identity_auth", None) is not None
                or (transport.client is not None and not isinstance(transport.client, aiohttp.ClientSession))):
            return None  # (a session factory makes a session per request)
        return cls(client, transport, url, headers)

    def _session(self) -> aiohttp.ClientSession:
        """The transport's session, made as its first request makes it: on the loop of the first call, not on
        the one the template was built on (a prefork child warms in its parent)."""
        session = self._transport.client
        if not isinstance(session, aiohttp.ClientSession):
            session = self._transport.client = self._transport.get_client()
        return session

    def _timeout(self, timeout: float) -> aiohttp.ClientTimeout:
        made = self._timeouts.get(timeout)
        if made is None:
            if len(self._timeouts) > 64:  # tiers' timeouts are few; a caller varying it gets no cache
                self._timeouts.clear()
            # As the transport maps httpx2's timeout (connect, read and pool all `timeout`).
            made = self._timeouts[timeout] = aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout,
                                                                   connect=timeout)
        return made

    async def send(self, content: bytes, timeout: float) -> Answer | None:
        """The answer to `content`; the SDK's error for a status, a timeout or a failed connection; None for a
        redirect the client would follow."""
        headers = self._headers.copy()
        headers["content-length"] = str(len(content))
        headers["x-stainless-read-timeout"] = str(timeout)
        jar = self._client._client.cookies
        if jar:  # cookies the provider set on earlier answers, as the client sends them
            carrier = http.Request("POST", self._url)
            jar.set_cookie_header(carrier)
            cookie = carrier.headers.get("cookie")
            if cookie:
                headers["cookie"] = cookie
        try:
            with map_aiohttp_exceptions():  # aiohttp's errors as httpx2's, as the transport raises them
                async with self._session().request(
                        "POST", self._url_text, headers=headers, data=content, allow_redirects=False,
                        auto_decompress=False, compress=False, timeout=self._timeout(timeout)) as answer:
                    raw = await answer.read()
                    status, raw_headers, reason, seen = answer.status, answer.raw_headers, answer.reason, answer.headers
        except timeout_exceptions() as exc:
            raise openai.APITimeoutError(request=http.Request("POST", self._url)) from exc
        except request_exceptions() as exc:
            raise openai.APIConnectionError(request=http.Request("POST", self._url)) from exc
        if self._follows and status in _REDIRECTS and "location" in seen:
            return None  # (the client sends it again and logs both answers)
        if _http_log.isEnabledFor(logging.INFO):  # the line the client logs per request, as it words it
            _http_log.info('HTTP Request: %s %s "%s %d %s"', "POST", self._url, "HTTP/1.1", status,
                           reason or "")
        cookies = "set-cookie" in seen
        if 200 <= status < 300 and not cookies and seen.get("content-encoding", "identity") == "identity":
            return Answer(raw, status=status, headers=raw_headers, reason=reason, url=self._url)
        response = _response(status, raw_headers, raw, reason, http.Request("POST", self._url))
        if cookies:
            jar.extract_cookies(response)
        if not response.is_success:  # as the SDK's request(): any answer but a 2xx is an error
            raise self._client._make_status_error_from_response(response)
        return Answer(response.content, response)


# The statuses httpx2 follows when they carry a Location (its Response.has_redirect_location).
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _response(status: int, raw_headers: Any, content: bytes, reason: str | None, request: Any) -> Any:
    """An httpx2 response as the SDK's aiohttp transport makes it, with the (decoded) body read."""
    extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
    if reason:
        extensions["reason_phrase"] = reason.encode()
    return http.Response(status_code=status, headers=raw_headers, content=content, request=request,
                         extensions=extensions)
