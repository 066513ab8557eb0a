"""The stand-in's HTTP plumbing: a threading server, the request handler, faults and a rate limiter."""

from __future__ import annotations

import collections
import gzip
import json
import logging
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from lorabench.sdnext._standin_routes import route
from lorabench.sdnext._standin_spec import NO_CONTENT, error_body

if TYPE_CHECKING:
    from lorabench.sdnext._standin import StandinServer

__all__ = ["HTTPServer", "Handler", "Limiter"]

logger = logging.getLogger("lorabench.sdnext.standin")

_HUGE = 300_000_000
_MAX_REQUEST = 256 * 2**20
_TRICKLE_GAP = 0.2


class Limiter:
    """A sliding window of ``rate`` requests per second per (client IP, path)."""

    def __init__(self, rate: float) -> None:
        self.count = max(1, round(rate))
        self.window = self.count / rate
        self._hits: dict[tuple[str, str], collections.deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: tuple[str, str]) -> float | None:
        """``None`` if allowed (and counted), else the seconds until a slot frees up."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, collections.deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.count:
                return hits[0] + self.window - now
            hits.append(now)
            return None


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: StandinServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("stand-in connection from %s ended with an error", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    timeout = 120
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls
        self.server.standin._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.standin._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ------------------------------------------------------------------ request handling

    def _handle(self, method: str) -> None:
        st = self.server.standin
        path = self.path.partition("?")[0]
        fault = st._take_fault(path)
        if fault == "refuse":
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        if fault == "hang":
            st._stopping.wait()
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_REQUEST:
            self._send(413 if length > 0 else 400, {"detail": "bad request body length"}, close=True)
            return
        body = self.rfile.read(length) if length else b""
        if fault in ("error500", "status503", "status429"):
            status, detail = {
                "error500": (500, ""),
                "status503": (503, "server not ready"),
                "status429": (429, f"{self.client_address[0]}:{path}: rate limit exceeded"),
            }[fault]
            payload = error_body(
                st.flavor,
                status,
                detail,
                "RuntimeError" if status == 500 else "HTTPException",
                "injected fault" if status == 500 else "",
            )
            self._send(status, payload, headers={"Retry-After": "1"} if status == 429 else None)
            return
        if fault in ("huge_body", "huge_chunked"):
            self._huge(chunked=fault == "huge_chunked")
            return
        started = time.perf_counter()
        try:
            status, payload, headers = route(st, method, self.path, self.headers, body, self.client_address[0])
        except Exception as exc:  # SD.Next's middleware turns crashes into its 500 error shape
            logger.exception("stand-in: %s %s failed", method, path)
            status, payload, headers = 500, error_body(st.flavor, 500, "", type(exc).__name__, str(exc)), {}
        headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
        if fault == "malformed_json":
            data = _encode(payload)[: max(1, len(_encode(payload)) // 2)]
            if _is_json(data):
                data = b'{"images": ["'
            self._raw(200, {"Content-Type": "application/json"}, data)
        elif fault in ("trickle", "disconnect"):
            self._partial(status, payload, headers, trickle=fault == "trickle")
        else:
            self._send(status, payload, headers=headers)

    def _prepare(self, status: int, payload: Any, headers: dict[str, str] | None) -> tuple[dict[str, str], bytes]:
        out = dict(headers or {})
        if payload is NO_CONTENT:
            return out, b""
        data = _encode(payload)
        out.setdefault("Content-Type", "application/json")
        if len(data) >= 2048 and "gzip" in self.headers.get("Accept-Encoding", "").lower():
            data = gzip.compress(data, compresslevel=5, mtime=0)
            out["Content-Encoding"] = "gzip"
        return out, data

    def _raw(self, status: int, headers: dict[str, str], data: bytes, *, length: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if status != 204:
            self.send_header("Content-Length", str(len(data) if length is None else length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _send(self, status: int, payload: Any, *, headers: dict[str, str] | None = None, close: bool = False) -> None:
        if close:
            self.close_connection = True
        out, data = self._prepare(status, payload, headers)
        self._raw(status, out, data)

    def _partial(self, status: int, payload: Any, headers: dict[str, str], *, trickle: bool) -> None:
        out, data = self._prepare(status, payload, headers)
        self.close_connection = True
        if not trickle:
            self._raw(status, out, data[: len(data) // 2], length=len(data))
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._raw(status, out, b"", length=len(data))
        stopping = self.server.standin._stopping
        for i in range(len(data)):
            if stopping.wait(_TRICKLE_GAP if i else 0):
                return
            self.wfile.write(data[i : i + 1])

    def _huge(self, *, chunked: bool) -> None:
        self.close_connection = True
        headers = {"Content-Type": "application/json"}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        if not chunked:
            self.send_header("Content-Length", str(_HUGE))
        self.send_header("Connection", "close")
        self.end_headers()
        head = b'{"images": ["'
        filler = b" " * 65536
        sent = 0
        stopping = self.server.standin._stopping
        first = True
        while sent < _HUGE and not stopping.is_set():
            piece = head + filler[len(head) :] if first else filler[: min(len(filler), _HUGE - sent)]
            first = False
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked and not stopping.is_set():
            self.wfile.write(b"0\r\n\r\n")


def _encode(payload: Any) -> bytes:
    return b"" if payload is NO_CONTENT else json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True
