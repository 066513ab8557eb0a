"""The SD.Next servers a runner dispatches to, and their health.

Each backend runs one generation at a time (the server serialises them anyway). A backend
that refuses connections is marked down at once; one that answers 5xx ``backend_failures``
times in a row is marked down too. A down backend is probed (``GET /sdapi/v1/progress``)
after a jittered delay that doubles from ``down_min`` to ``down_max`` while it stays down;
the other backends go on meanwhile. A 429 pauses a backend for its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lorabench.errors import ConfigError, InsecureAuthError, LorabenchError
from lorabench.queue._retry import RetryPolicy
from lorabench.sdnext import Progress, SDNextClient
from lorabench.sdnext._http import is_loopback, redact, resolve_server

__all__ = ["Backend", "BackendSpec", "BackendStatus"]

BackendSpec = str | SDNextClient | Mapping[str, Any]
"""A URL, a ready client, or keyword arguments for :class:`~lorabench.sdnext.SDNextClient`."""

_CALL_TIMEOUT = 5.0


@dataclass(frozen=True)
class BackendStatus:
    """A snapshot of one backend."""

    url: str
    state: str
    """``"up"``, ``"down"`` (unreachable, probed again at ``retry_at``) or ``"paused"`` (429)."""
    busy_job: str | None
    retry_at: float | None
    failures: int
    last_error: str | None
    jobs_done: int


class Backend:
    """One server: its client (created in the runner's loop), health and current job."""

    def __init__(self, spec: BackendSpec, policy: RetryPolicy) -> None:
        self.policy = policy
        self._kwargs: dict[str, Any] | None = None
        self.client: SDNextClient | None = None
        if isinstance(spec, SDNextClient):
            self.client, self.owned = spec, False
            self.url = spec.base_url
        else:
            kwargs = {"base_url": spec} if isinstance(spec, str) else dict(spec)
            if not isinstance(kwargs.get("base_url"), str | None):
                raise ConfigError("a backend needs a base_url string")
            url, creds = resolve_server(kwargs.get("base_url"), kwargs.get("auth"))
            if creds and url.scheme == "http" and not is_loopback(url.host) and not kwargs.get("allow_insecure_auth"):
                raise InsecureAuthError(
                    f"Refusing to send Basic auth in clear text to {url.host}: use https or loopback"
                )
            self.url = str(url).rstrip("/")
            self._kwargs, self.owned = kwargs, True
        self.down = False
        self.unavailable_until = 0.0
        self.failures = 0
        self.downs = 0
        self.last_error: str | None = None
        self.busy_job: str | None = None
        self.jobs_done = 0

    def __repr__(self) -> str:
        return f"Backend({self.url!r}, {'down' if self.down else 'up'})"

    async def open(self) -> SDNextClient:
        """The client (a URL's client is made here, in the running loop)."""
        if self.client is None:
            assert self._kwargs is not None
            self.client = SDNextClient(**self._kwargs)
        return self.client

    async def aclose(self) -> None:
        """Close a client this backend made (a client passed in is the caller's)."""
        if self.owned and self.client is not None:
            client, self.client = self.client, None
            await client.aclose()

    @property
    def api(self) -> SDNextClient:
        if self.client is None:
            raise RuntimeError("backend not opened")
        return self.client

    # ------------------------------------------------------------------ health

    def wait_time(self, now: float | None = None) -> float:
        """Seconds until this backend may take a job (0 when it may now)."""
        return max(0.0, self.unavailable_until - (now or time.time()))

    def succeeded(self) -> None:
        self.failures = self.downs = 0
        self.down = False
        self.jobs_done += 1

    def fault(self, reason: str, *, immediate: bool = False) -> bool:
        """Count a server-side failure; True if the backend went down because of it."""
        self.failures += 1
        self.last_error = redact(reason)
        if immediate or self.failures >= self.policy.backend_failures:
            self.go_down(reason)
            return True
        return False

    def go_down(self, reason: str) -> None:
        self.downs += 1
        self.down = True
        self.failures = 0
        self.last_error = redact(reason)
        self.unavailable_until = time.time() + self.policy.down_delay(self.downs)

    def pause(self, seconds: float) -> None:
        self.unavailable_until = max(self.unavailable_until, time.time() + max(0.0, seconds))

    def came_back(self) -> None:
        self.down = False
        self.unavailable_until = 0.0

    def status(self) -> BackendStatus:
        waiting = self.wait_time()
        state = "down" if self.down else "paused" if waiting > 0 else "up"
        return BackendStatus(
            url=self.url,
            state=state,
            busy_job=self.busy_job,
            retry_at=self.unavailable_until if waiting > 0 else None,
            failures=self.failures,
            last_error=self.last_error,
            jobs_done=self.jobs_done,
        )

    # ------------------------------------------------------------------ short calls

    async def progress(self, *, previews: bool = False) -> Progress:
        """``/progress`` with a short deadline (errors propagate)."""
        async with asyncio.timeout(_CALL_TIMEOUT):
            return await self.api.progress(skip_current_image=not previews)

    async def probe(self) -> bool:
        """Whether the server answers ``/progress`` now."""
        try:
            await self.progress()
        except (LorabenchError, TimeoutError) as exc:
            self.last_error = redact(str(exc))
            return False
        return True

    async def interrupt(self) -> bool:
        """Ask the server to stop its current generation; False if that failed."""
        try:
            async with asyncio.timeout(_CALL_TIMEOUT):
                await self.api.interrupt()
        except (LorabenchError, TimeoutError):
            return False
        return True
