"""Jobs and their state machine (stored by ``_store.JobStore``, one guarded transaction per arrow)::

    queued ──claim──► running ──► succeeded
      ▲  ▲               │ ├────► failed        (final error, or transient errors past max_attempts)
      │  └─retry (delay)─┘ ├────► cancelled     (cancel: interrupt sent to the server, no results)
      │                    └────► interrupted   (outcome unknown: lease expired, disconnect, deadline)
      └──────────── resume ◄───── interrupted / failed / cancelled

``queued`` jobs waiting for a retry have ``not_before`` in the future. ``submitted_at`` is set
*before* the generation POST is sent, so a job whose lease expires before it was sent goes
back to ``queued`` (nothing ran), and one that may have been sent becomes ``interrupted``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SETTLED", "STATES", "TERMINAL", "Job", "new_worker_id", "pid_alive"]

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
SETTLED = TERMINAL | {"interrupted"}
"""States in which nothing more happens to a job until someone acts (``wait`` returns)."""


def new_worker_id() -> str:
    """``host:pid:random`` (the pid lets a restarted kernel see that the old one is gone)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def pid_alive(worker_id: str | None) -> bool:
    """False only when the worker ran on this host and its process is gone."""
    if not worker_id:
        return False
    host, _, rest = worker_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@dataclass(frozen=True)
class Job:
    """A snapshot of one job (read it again with ``Queue.get`` for fresh values)."""

    id: str
    key: str
    state: str
    kind: str
    request: dict[str, Any] = field(repr=False)
    seed: int
    priority: int = 0
    pinned_backend: str | None = None
    backend: str | None = None
    """The backend that ran (or runs) the job's latest attempt."""
    attempt: int = 0
    max_attempts: int = 4
    timeout: float | None = None
    not_before: float = 0.0
    worker_id: str | None = None
    lease_expires: float | None = None
    submitted_at: float | None = None
    cancel_requested: bool = False
    progress: float | None = None
    step: int | None = None
    steps: int | None = None
    eta: float | None = None
    error_code: str | None = None
    error: str | None = None
    result_ids: list[int] = field(default_factory=list)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    queue_wait_s: float | None = None
    generation_s: float | None = None

    @property
    def prompt(self) -> str:
        """The request's prompt."""
        return str(self.request.get("prompt") or "")

    @property
    def settled(self) -> bool:
        """Terminal, or interrupted (waiting for the user to resume or cancel it)."""
        return self.state in SETTLED

    @property
    def total_s(self) -> float | None:
        """Seconds from submission to the end, once finished."""
        return None if self.finished_at is None else self.finished_at - self.created_at

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            key=row["job_key"],
            state=row["state"],
            kind=row["kind"],
            request=json.loads(row["request"]),
            seed=row["seed"],
            priority=row["priority"],
            pinned_backend=row["pinned_backend"],
            backend=row["backend"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            timeout=row["timeout_s"],
            not_before=row["not_before"],
            worker_id=row["worker_id"],
            lease_expires=row["lease_expires"],
            submitted_at=row["submitted_at"],
            cancel_requested=bool(row["cancel_requested"]),
            progress=row["progress"],
            step=row["step"],
            steps=row["steps"],
            eta=row["eta"],
            error_code=row["error_code"],
            error=row["error"],
            result_ids=json.loads(row["result_ids"] or "[]"),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            queue_wait_s=row["queue_wait_s"],
            generation_s=row["generation_s"],
        )
