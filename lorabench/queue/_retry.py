"""What a failed attempt means, and how long to wait before the next one.

Every exception from a generation POST is sorted into one of four outcomes:

``not_sent``
    The connection was refused (or timed out) before the request left: nothing ran. The job
    goes back to the queue without losing an attempt, and the backend is marked down.
``transient``
    The server answered that it cannot work now — 429 (its ``Retry-After`` is honoured),
    502/503/504, or 200 without images because the model is (still) loading. Nothing was
    generated: retried with capped exponential backoff and jitter, up to ``max_attempts``.
``final``
    The request itself is wrong or cannot succeed (400/422 validation, an unknown sampler,
    401, 404, 500, a body over the size cap): the job fails at once.
``unknown``
    The POST may have reached the server and run — a read timeout or deadline, the connection
    closed after the request was sent, a response cut off mid-way. It is **never re-sent
    blindly**: the runner looks at ``/progress`` and marks the job ``interrupted``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

import httpx

from lorabench.errors import (
    DeadlineExceededError,
    LorabenchError,
    ModelNotLoadedError,
    ProtocolError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    ServerUnavailableError,
)

__all__ = ["Outcome", "RetryPolicy", "Verdict", "classify", "http_status"]

Outcome = Literal["not_sent", "transient", "final", "unknown"]
_STATUS = re.compile(r"\banswered (\d{3})\b")
_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Retry and backend-health settings of a queue.

    Parameters
    ----------
    max_attempts:
        Attempts per job for transient failures (the first try included).
    base_delay, max_delay:
        Backoff before retry *n* is ``base_delay * 2**(n-1)`` capped at ``max_delay``, with
        "equal jitter" (a random half of it added), and never shorter than ``Retry-After``.
    backend_failures:
        Consecutive transient server failures (5xx) after which a backend is marked down
        (a refused connection marks it down at once).
    down_min, down_max:
        A down backend is probed again after ``down_min`` seconds, doubling up to ``down_max``
        (jittered) while it stays down.
    settle_timeout:
        After an unknown outcome, how long to wait for a busy server to become idle.
    """

    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 60.0
    backend_failures: int = 3
    down_min: float = 5.0
    down_max: float = 30.0
    settle_timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min(self.base_delay, self.max_delay, self.down_min, self.down_max, self.settle_timeout) < 0:
            raise ValueError("delays must be >= 0")
        if self.backend_failures < 1:
            raise ValueError("backend_failures must be >= 1")

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds before retrying after failed attempt number ``attempt`` (1-based)."""
        rng = rng or random
        cap = min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1))
        wait = cap / 2 + rng.random() * cap / 2
        if retry_after is not None:
            wait = max(wait, float(retry_after))
        return wait

    def down_delay(self, downs: int, rng: random.Random | None = None) -> float:
        """Seconds a backend stays down after its ``downs``-th consecutive failure (1-based)."""
        rng = rng or random
        cap = min(self.down_max, self.down_min * 2 ** max(0, downs - 1))
        return cap * (0.8 + 0.4 * rng.random())


@dataclass(frozen=True)
class Verdict:
    """How one failure is handled."""

    outcome: Outcome
    code: str
    message: str
    retry_after: float | None = None
    backend_fault: bool = False
    """Counts against the backend's health (refused connection, 5xx)."""


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an SD.Next error was raised for, if it says."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    found = _STATUS.search(str(getattr(exc, "message", "") or exc))
    return int(found.group(1)) if found else None


def _never_connected(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout)


def classify(exc: BaseException) -> Verdict:
    """Sort a generation POST's exception (see the module docstring)."""
    message = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    code = getattr(exc, "code", None) or type(exc).__name__
    if isinstance(exc, ServerUnavailableError):
        if _never_connected(exc):
            return Verdict("not_sent", code, message, backend_fault=True)
        return Verdict("unknown", "connection_lost", message, backend_fault=True)
    if isinstance(exc, RateLimitedError):
        return Verdict("transient", code, message, retry_after=exc.retry_after)
    if isinstance(exc, ModelNotLoadedError):
        return Verdict("transient", code, message)
    if isinstance(exc, ResponseTooLargeError):
        return Verdict("final", code, message)
    if isinstance(exc, DeadlineExceededError | ProtocolError):
        return Verdict("unknown", code, message)
    if isinstance(exc, ServerError):
        status = http_status(exc)
        if status in _RETRY_STATUSES:
            return Verdict("transient", f"http_{status}", message, backend_fault=True)
        return Verdict("final", code, message)
    if isinstance(exc, LorabenchError):
        return Verdict("final", code, message)
    return Verdict("final", "internal", f"{type(exc).__name__}: {message}")
