"""``StandinServer``: a faithful local stand-in for SD.Next (or A1111) on a real loopback socket.

Built on the standard library's ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive, one thread
per connection), it implements the endpoints lorabench uses with SD.Next's semantics from
``docs/sdnext-api.md`` and draws deterministic pictures with Pillow instead of running a model.

Fault injection (:meth:`StandinServer.inject`) applies to the next ``times`` requests whose
path (without query) equals ``path`` (any path when ``None``), before auth and rate limits:

==================  ==================================================================================
``refuse``          read the request, then close the connection with a TCP reset before sending a byte
                    (the client cannot tell it from a refused/unreachable server)
``hang``            read the request and never answer until the server stops
``trickle``         the real answer, its body sent one byte every 0.2 s
``error500``        500 with SD.Next's JSON error body
``malformed_json``  200 ``application/json`` whose body is the real answer cut short (invalid JSON)
``disconnect``      the real answer's headers and half its body, then the connection is closed
``huge_body``       200 claiming ``Content-Length: 300000000`` and streaming JSON filler fast
``huge_chunked``    the same with chunked encoding (no length: the client must count)
``status503``       503 ``server not ready``
``status429``       429 rate limited with ``Retry-After: 1``
==================  ==================================================================================
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import math
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lorabench.sdnext._standin_engine import Engine
from lorabench.sdnext._standin_handler import Handler, HTTPServer, Limiter

__all__ = ["FAULTS", "StandinServer"]


FAULTS = frozenset(
    {
        "refuse",
        "hang",
        "trickle",
        "error500",
        "malformed_json",
        "disconnect",
        "huge_body",
        "huge_chunked",
        "status503",
        "status429",
    }
)


@dataclass
class _Fault:
    name: str
    remaining: int
    path: str | None


class StandinServer:
    """A real HTTP server on loopback that behaves like SD.Next (``flavor="sdnext"``) or A1111.

    Parameters
    ----------
    host, port:
        Where to listen; port 0 picks a free port (see :attr:`url` once started).
    lora_dir:
        The LoRA folder listed by ``/sdapi/v1/loras`` (scanned recursively for ``.safetensors``).
    step_time:
        Seconds per sampling step; a generation takes about ``steps * step_time``.
    auth:
        ``(user, password)`` or ``"user:password"``: HTTP Basic is then required (401 otherwise).
    flavor:
        ``"sdnext"`` or ``"a1111"`` (404 on ``/version``, PNG by default, 200 on interrupt, …).
    rate_limit:
        Requests per second per (client IP, path); more get 429 with ``Retry-After``.

    Use it as ``with StandinServer(...) as srv: srv.url`` (serves in a daemon thread), or
    :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lora_dir: str | os.PathLike[str] | None = None,
        step_time: float = 0.0,
        auth: tuple[str, str] | str | None = None,
        flavor: str = "sdnext",
        rate_limit: float | None = None,
    ) -> None:
        if flavor not in ("sdnext", "a1111"):
            raise ValueError("flavor must be 'sdnext' or 'a1111'")
        if step_time < 0:
            raise ValueError("step_time must be >= 0")
        if rate_limit is not None and not rate_limit > 0:
            raise ValueError("rate_limit must be a positive number of requests per second")
        if isinstance(auth, str):
            user, sep, password = auth.partition(":")
            if not sep or not user:
                raise ValueError("auth must be 'user:password'")
            auth = (user, password)
        self.host, self._port, self.flavor = host, int(port), flavor
        self._auth = auth
        self._limiter = Limiter(rate_limit) if rate_limit else None
        self.engine = Engine(flavor, Path(lora_dir) if lora_dir is not None else None, step_time)
        self._faults: list[_Fault] = []
        self._faults_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._stopping = self.engine.stopping
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.url if self._httpd else f"{self.host}:{self._port} (stopped)"
        return f"StandinServer({where}, flavor={self.flavor!r}, auth={'***' if self._auth else None})"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StandinServer:
        """Bind and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("the stand-in server is already running")
        self._stopping.clear()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("_Bound", (HTTPServer,), {"address_family": family})
        httpd = server_class((self.host, self._port), Handler)
        httpd.standin = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"sdnext-standin:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wake hung/trickling handlers and generations, close every connection."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    close = stop

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    # ------------------------------------------------------------------ facts and knobs

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        return int(self._httpd.server_address[1]) if self._httpd else self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._httpd is None:
            raise RuntimeError("the stand-in server is not running; call start() or use it as a context manager")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def generation_log(self) -> list[tuple[float, float]]:
        """``(start, end)`` ``time.monotonic()`` pairs of every generation, in run order."""
        return list(self.engine.generation_log)

    def set_model_loading(self, loading: bool = True) -> None:
        """While loading, generations answer 200 with no images and ``info: ""`` (§7)."""
        self.engine.loading = bool(loading)
        if loading:
            self.engine.state.begin("Load model")
        else:
            self.engine.state.finish()

    def inject(self, fault: str, *, times: int = 1, path: str | None = None) -> None:
        """Make the next ``times`` requests to ``path`` (any when ``None``) fail with ``fault``."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._faults_lock:
            self._faults.append(_Fault(fault, int(times), path))

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        with self._faults_lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> str | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.path is None or fault.path == path:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault.name
        return None

    def _check_auth(self, header: str | None) -> str | None:
        """``None`` when allowed, else the 401 detail."""
        if self._auth is None:
            return None
        if not header:
            return "Not authenticated"
        scheme, _, token = header.partition(" ")
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            user = password = ""
        ok = scheme.lower() == "basic" and hmac.compare_digest(user.encode(), self._auth[0].encode())
        ok = hmac.compare_digest(password.encode(), self._auth[1].encode()) and ok
        if ok:
            return None
        return "Unauthorized" if self.flavor == "sdnext" else "Incorrect username or password"

    def _check_rate(self, ip: str, path: str) -> int | None:
        """``None`` when allowed, else the ``Retry-After`` seconds."""
        if self._limiter is None:
            return None
        wait = self._limiter.check((ip, path))
        return None if wait is None else max(1, math.ceil(wait))
