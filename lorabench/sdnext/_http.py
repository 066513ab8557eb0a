"""The client's HTTP layer: server/credential resolution, log redaction, capped streaming, error mapping.

Error mapping (what each failure becomes):

- ``httpx.ConnectError`` / ``ConnectTimeout``, or the connection closed or reset **before any
  response byte** → :class:`ServerUnavailableError` (nothing was answered);
- the connection broken **after** the response started (truncated body) → :class:`ProtocolError`
  (for a generation POST the job's fate is unknown: do not blindly resubmit);
- read / write / pool timeouts and the per-call ``asyncio.timeout`` → :class:`DeadlineExceededError`;
- a body over ``max_response_bytes`` (announced by ``Content-Length`` or counted while
  streaming) → :class:`ResponseTooLargeError`, without reading the rest;
- 401 → :class:`AuthenticationError`; 429 → :class:`RateLimitedError` (``Retry-After``);
  400/404 naming the sampler → :class:`UnknownSamplerError`; 400/422 and other 4xx →
  :class:`BadRequestError` (``details``); 404 → :class:`SDNextError` (code ``not_found``);
  5xx → :class:`ServerError`; 3xx (never followed) or a non-JSON answer → :class:`ProtocolError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx

from lorabench.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    DeadlineExceededError,
    ProtocolError,
    RateLimitedError,
    ResponseTooLargeError,
    SDNextError,
    ServerError,
    ServerUnavailableError,
    UnknownSamplerError,
)

__all__ = [
    "DEFAULT_URL",
    "HttpLayer",
    "RedactingFilter",
    "Reply",
    "Secret",
    "install_log_filter",
    "is_loopback",
    "redact",
    "resolve_server",
]

DEFAULT_URL = "http://127.0.0.1:7860"
_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@'\"<>]+@")
_QUERY = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")
_AUTHZ = re.compile(r"(?i)\b(basic|bearer|token)(\s+)[a-z0-9+/=._~\-]{3,}")
_MAX_DETAIL = 300


class Secret:
    """A string that never shows itself in ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value (for the auth header only)."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


def redact(text: str) -> str:
    """Remove URL userinfo, query strings and Basic/Bearer credentials from ``text``."""
    text = _USERINFO.sub(r"\1***@", text)
    text = _QUERY.sub(r"\1?[redacted]", text)
    return _AUTHZ.sub(r"\1\2***", text)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites records with :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactingFilter()


def install_log_filter() -> None:
    """Add the redacting filter to the httpx/httpcore loggers, once (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(_FILTER)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def resolve_server(base_url: str | None, auth: tuple[str, str] | None) -> tuple[httpx.URL, tuple[str, str] | None]:
    """The server URL (userinfo removed) and the credentials to use.

    Credentials come from ``auth``, else from userinfo in the URL (then stripped), else
    from ``SDNEXT_USER`` / ``SDNEXT_PASSWORD``. The URL comes from ``base_url`` or
    ``SDNEXT_URL`` (default ``http://127.0.0.1:7860``).
    """
    text = base_url or os.environ.get("SDNEXT_URL") or DEFAULT_URL
    try:
        url = httpx.URL(text.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"Invalid SD.Next URL {redact(text)!r}: {type(exc).__name__}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"SD.Next URL must be http:// or https:// with a host, got {redact(text)!r}")
    if url.query or url.fragment:
        raise ConfigError("SD.Next URL must not contain a query string or fragment")
    from_url: tuple[str, str] | None = None
    if url.userinfo:
        from_url = (unquote(url.username), unquote(url.password))
        url = url.copy_with(username=None, password=None)
    if auth is None:
        auth = from_url
    if auth is None:
        user, password = os.environ.get("SDNEXT_USER"), os.environ.get("SDNEXT_PASSWORD")
        if bool(user) != bool(password):
            raise ConfigError("Set both SDNEXT_USER and SDNEXT_PASSWORD, or neither")
        auth = (user, password) if user and password else None
    if auth is not None and (len(auth) != 2 or not all(isinstance(p, str) for p in auth)):
        raise ConfigError("auth must be a (user, password) pair of strings")
    return url, auth


@dataclass(frozen=True)
class Reply:
    """A fully read (and capped) HTTP response."""

    status: int
    headers: httpx.Headers
    body: bytes
    what: str
    """``"METHOD /path"`` for messages (never the full URL)."""

    def json(self) -> Any:
        """The body as JSON; :class:`ProtocolError` when it is not JSON."""
        ctype = self.headers.get("content-type", "")
        if "json" not in ctype.lower():
            raise ProtocolError(f"{self.what} answered {self.status} with {ctype or 'no'} content type, not JSON")
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"{self.what} answered {self.status} with malformed JSON: {exc}") from exc

    def raise_for_status(self) -> None:
        """Map a non-2xx status to the error tree."""
        status = self.status
        if 200 <= status < 300:
            return
        detail, details = _error_detail(self.body)
        said = f": {detail}" if detail else ""
        message = f"{self.what} answered {status}{said}"
        if status == 401:
            raise AuthenticationError(message)
        if status == 429:
            raise RateLimitedError(message, retry_after=_retry_after(self.headers.get("retry-after")))
        if status in (400, 404) and "sampler" in detail.lower():
            raise UnknownSamplerError(message)
        if status in (400, 422):
            raise BadRequestError(message, details=details)
        if status == 404:
            raise SDNextError(
                message, code="not_found", hint="The server has no such endpoint or item; check it is SD.Next or A1111."
            )
        if 300 <= status < 400:
            raise ProtocolError(f"{self.what} answered a {status} redirect, which is never followed")
        if status >= 500:
            raise ServerError(message)
        raise BadRequestError(message, details=details)


def _clip(value: object) -> str:
    text = redact(" ".join(str(value).split()))
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _error_detail(body: bytes) -> tuple[str, list[Any]]:
    """A one-line summary and a list of details from SD.Next, A1111 or FastAPI error bodies."""
    try:
        data = json.loads(body[:1_000_000]) if body else None
    except (ValueError, RecursionError):
        return (_clip(body[:_MAX_DETAIL].decode("utf-8", "replace")) if body else ""), []
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list):  # FastAPI 422 validation errors
            items = [
                {"loc": list(d.get("loc") or []), "msg": str(d.get("msg", "")), "type": str(d.get("type", ""))}
                for d in detail
                if isinstance(d, dict)
            ]
            summary = "; ".join(f"{'.'.join(map(str, i['loc'][1:] or i['loc']))}: {i['msg']}" for i in items)
            return _clip(summary), items
        parts = [data.get(k) for k in ("detail", "error", "errors")]
        text = next((str(p) for p in parts if p not in (None, "")), "")
        if text in ("HTTPException",) and data.get("errors"):
            text = str(data["errors"])
        return _clip(text), ([_clip(text)] if text else [])
    if data in (None, ""):
        return "", []
    return _clip(data), [_clip(data)]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds == seconds else None


class HttpLayer:
    """One shared ``httpx.AsyncClient`` with deadlines and a byte cap on every response."""

    def __init__(
        self,
        url: httpx.URL,
        auth: tuple[str, str] | None,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
        max_response_bytes: int,
    ) -> None:
        self.max_response_bytes = max_response_bytes
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=url,
            auth=httpx.BasicAuth(*auth) if auth else None,
            timeout=httpx.Timeout(
                connect=min(5.0, timeout), read=min(timeout, 300.0), write=min(30.0, timeout), pool=min(10.0, timeout)
            ),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` ran."""
        return self._client.is_closed

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> Reply:
        """Send one request and read its whole (capped) body within ``deadline`` seconds."""
        limit = self.timeout if deadline is None else deadline
        what = f"{method} {path}"
        try:
            async with asyncio.timeout(limit):
                return await self._send(method, path, body, params, what)
        except TimeoutError:
            raise DeadlineExceededError(f"{what} did not complete within {limit:g} s") from None

    async def _send(self, method: str, path: str, body: Any, params: dict[str, str] | None, what: str) -> Reply:
        started = False
        try:
            async with self._client.stream(method, path, json=body, params=params) as response:
                started = True
                cap = self.max_response_bytes
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise ResponseTooLargeError(f"{what} announced {int(declared):,} bytes, over the {cap:,}-byte cap")
                chunks: list[bytes] = []
                total = 0
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    if total > cap:
                        raise ResponseTooLargeError(f"{what} sent more than the {cap:,}-byte cap; reading stopped")
                    chunks.append(chunk)
                return Reply(response.status_code, response.headers, b"".join(chunks), what)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnavailableError(f"{what}: cannot connect ({_clip(exc) or type(exc).__name__})") from exc
        except httpx.TimeoutException as exc:
            raise DeadlineExceededError(f"{what}: the server went silent ({type(exc).__name__})") from exc
        except httpx.DecodingError as exc:
            raise ProtocolError(f"{what}: undecodable response body ({type(exc).__name__})") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as exc:
            if not started:
                raise ServerUnavailableError(
                    f"{what}: the server closed the connection without answering ({type(exc).__name__})"
                ) from exc
            raise ProtocolError(
                f"{what}: the connection broke off mid-response ({type(exc).__name__}); "
                "a generation's outcome is unknown"
            ) from exc
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"{what}: transport failure ({type(exc).__name__})") from exc
