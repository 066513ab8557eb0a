"""The durable SQLite store of jobs (see ``_jobs`` for the state machine).

Job state is high-churn (leases, heartbeats, progress), so it lives in its own SQLite file in
WAL mode (``<LORABENCH_HOME>/queue.sqlite``), not in the DuckDB catalog: readers never block
writers, several processes (a notebook and ``lorabench worker``) share it on one host, and
``busy_timeout`` makes a writer wait for another instead of failing. Every transition is one
guarded transaction (``UPDATE … WHERE id = ? AND state = ?``) and is recorded in ``job_log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lorabench.errors import JobNotFoundError, QueueError
from lorabench.queue._jobs import STATES, Job, pid_alive
from lorabench.queue._schema import SCHEMA, STORE_VERSION

__all__ = ["JobStore"]


class JobStore:
    """The queue's SQLite file: one connection, serialised by a lock, usable from any thread.

    Parameters
    ----------
    path:
        The file (created with its folder); ``":memory:"`` works for single-process use only.
    busy_timeout:
        Seconds a writer waits for another process's transaction.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = os.fspath(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise QueueError(f"Cannot open the queue file {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if self.path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QueueError(f"The queue file {self.path} cannot use WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
        self._conn = conn
        self._migrate()

    def _migrate(self) -> None:
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > STORE_VERSION:
                raise QueueError(
                    f"The queue file {self.path} has version {version}; this lorabench knows {STORE_VERSION}",
                    hint="Upgrade lorabench, or point the queue at another file.",
                )
            if version < STORE_VERSION:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {STORE_VERSION}")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` under the lock; rolled back on any error."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise QueueError(f"The queue file {self.path} is busy or unusable: {exc}") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise QueueError(f"The queue file {self.path} failed: {exc}") from exc
                raise

    def _one(self, job_id: str) -> Job:
        row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None:
            raise JobNotFoundError(f"No job {job_id!r} in {self.path}")
        return Job.from_row(row)

    def _log(self, job_id: str, event: str, *, attempt: int | None = None, backend: str | None = None,
             detail: str | None = None, now: float | None = None) -> None:  # fmt: skip
        self._conn.execute(
            "INSERT INTO job_log (job_id, at, event, attempt, backend, detail) VALUES (?, ?, ?, ?, ?, ?)",
            [job_id, now or time.time(), event, attempt, backend, detail],
        )

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str) -> Job:
        """One job; :class:`JobNotFoundError` if there is none."""
        with self._lock:
            return self._one(job_id)

    def find(self, job_id: str) -> Job | None:
        """One job or ``None``."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", [job_id]).fetchone()
        return None if row is None else Job.from_row(row)

    def jobs(
        self, states: Iterable[str] | None = None, *, limit: int | None = None, newest_first: bool = True
    ) -> list[Job]:
        """Jobs, optionally only those in ``states``."""
        sql, params = "SELECT * FROM jobs", []
        if states is not None:
            wanted = list(states)
            sql += f" WHERE state IN ({', '.join('?' * len(wanted))})" if wanted else " WHERE 0"
            params += wanted
        sql += " ORDER BY created_at DESC, rowid DESC" if newest_first else " ORDER BY created_at, rowid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            return [Job.from_row(r) for r in self._conn.execute(sql, params).fetchall()]

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state present, zero when none)."""
        with self._lock:
            rows = self._conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        found = {r[0]: r[1] for r in rows}
        return {s: int(found.get(s, 0)) for s in STATES}

    def log(self, job_id: str) -> list[dict[str, Any]]:
        """The job's transitions and attempts, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT at, event, attempt, backend, detail FROM job_log WHERE job_id = ? ORDER BY id", [job_id]
            ).fetchall()
        return [dict(r) for r in rows]

    def runnable(self, backends: Sequence[str] | None = None) -> int:
        """Queued jobs that one of ``backends`` may run (any backend when ``None``)."""
        sql = "SELECT count(*) FROM jobs WHERE state = 'queued'"
        params: list[Any] = []
        if backends is not None:
            sql += f" AND (pinned_backend IS NULL OR pinned_backend IN ({', '.join('?' * len(backends))}))"
            params += list(backends)
        with self._lock:
            return int(self._conn.execute(sql, params).fetchone()[0])

    # ------------------------------------------------------------------ submitting

    def submit(
        self,
        job_id: str,
        key: str,
        kind: str,
        request_json: str,
        seed: int,
        *,
        priority: int,
        pinned_backend: str | None,
        max_attempts: int,
        timeout: float | None,
    ) -> tuple[Job, bool]:
        """Store a job (durable when this returns); ``(existing job, False)`` for a known key."""
        now = time.time()
        with self._tx() as conn:
            cur = conn.execute(
                """INSERT INTO jobs (id, job_key, state, kind, request, seed, priority, pinned_backend,
                       max_attempts, timeout_s, created_at, updated_at)
                   VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (job_key) DO NOTHING""",
                [job_id, key, kind, request_json, seed, priority, pinned_backend, max_attempts, timeout, now, now],
            )
            created = cur.rowcount == 1
            if created:
                self._log(job_id, "submitted", now=now)
            row = conn.execute("SELECT * FROM jobs WHERE job_key = ?", [key]).fetchone()
        return Job.from_row(row), created

    # ------------------------------------------------------------------ the runner's transitions

    def claim(self, worker_id: str, backend: str, lease_s: float) -> Job | None:
        """Atomically take the best runnable job for ``backend`` (priority, then age)."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                """UPDATE jobs SET state = 'running', worker_id = ?, backend = ?, lease_expires = ?,
                       heartbeat_at = ?, attempt = attempt + 1, started_at = ?, submitted_at = NULL,
                       progress = NULL, step = NULL, steps = NULL, eta = NULL, updated_at = ?
                   WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND not_before <= ?
                               AND (pinned_backend IS NULL OR pinned_backend = ?)
                               ORDER BY priority DESC, created_at, rowid LIMIT 1)
                     AND state = 'queued'
                   RETURNING *""",
                [worker_id, backend, now + lease_s, now, now, now, now, backend],
            ).fetchone()
            if row is None:
                return None
            job = Job.from_row(row)
            self._log(job.id, "claimed", attempt=job.attempt, backend=backend, detail=worker_id, now=now)
        return job

    def mark_submitted(self, job_id: str, worker_id: str) -> bool:
        """Record that the POST is about to be sent; False if the job is no longer ours or is cancelled."""
        now = time.time()
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET submitted_at = ?, updated_at = ? WHERE id = ? AND state = 'running' "
                "AND worker_id = ? AND cancel_requested = 0",
                [now, now, job_id, worker_id],
            )
            if cur.rowcount == 1:
                self._log(job_id, "sent", now=now)
            return cur.rowcount == 1

    def heartbeat(self, worker_id: str, lease_s: float) -> list[str]:
        """Extend the leases of this worker's running jobs; returns those with a cancel request."""
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "UPDATE jobs SET heartbeat_at = ?, lease_expires = ? WHERE worker_id = ? AND state = 'running'",
                [now, now + lease_s, worker_id],
            )
            conn.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", [now, worker_id])
            rows = conn.execute(
                "SELECT id FROM jobs WHERE worker_id = ? AND state = 'running' AND cancel_requested = 1", [worker_id]
            ).fetchall()
        return [r[0] for r in rows]

    def set_progress(
        self,
        job_id: str,
        worker_id: str,
        fraction: float | None,
        step: int | None,
        steps: int | None,
        eta: float | None,
    ) -> None:
        """Store the latest progress reading (not logged)."""
        with self._lock:
            self._conn.execute(
                "UPDATE jobs SET progress = ?, step = ?, steps = ?, eta = ? WHERE id = ? AND worker_id = ? "
                "AND state = 'running'",
                [fraction, step, steps, eta, job_id, worker_id],
            )

    def finish(
        self,
        job_id: str,
        worker_id: str,
        state: str,
        *,
        error_code: str | None = None,
        error: str | None = None,
        result_ids: Sequence[int] = (),
        generation_s: float | None = None,
    ) -> str | None:
        """End our attempt in ``state``; returns the state reached, or ``None`` when the job is no
        longer ours. A job with a cancel request ends ``cancelled`` instead of failed/interrupted,
        and cannot end ``succeeded``. A job that expired into ``interrupted`` meanwhile but was not
        resumed is still ours (its generation did run once)."""
        assert state in ("succeeded", "failed", "cancelled", "interrupted")
        now = time.time()
        guard = "AND cancel_requested = 0" if state == "succeeded" else ""
        with self._tx() as conn:
            row = conn.execute(
                f"""UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE ? END,
                        error_code = ?, error = ?, result_ids = ?, finished_at = ?,
                        generation_s = coalesce(?, generation_s), queue_wait_s = started_at - created_at,
                        lease_expires = NULL, updated_at = ?,
                        progress = CASE WHEN ? = 'succeeded' THEN 1.0 ELSE progress END
                    WHERE id = ? AND worker_id = ? AND state IN ('running', 'interrupted') {guard}
                    RETURNING state""",  # noqa: S608
                [
                    state,
                    error_code,
                    error,
                    json.dumps(list(result_ids)),
                    now,
                    generation_s,
                    now,
                    state,
                    job_id,
                    worker_id,
                ],
            ).fetchone()
            if row is None:
                return None
            self._log(job_id, row[0], detail=error, now=now)
            return str(row[0])

    def retry(self, job_id: str, worker_id: str, *, delay: float, refund: bool, error_code: str, error: str) -> bool:
        """Back to ``queued`` after ``delay`` seconds; ``refund`` gives the attempt back (nothing was sent)."""
        now = time.time()
        with self._tx() as conn:
            cur = conn.execute(
                """UPDATE jobs SET state = 'queued', not_before = ?, attempt = attempt - ?, worker_id = NULL,
                       lease_expires = NULL, submitted_at = NULL, error_code = ?, error = ?, updated_at = ?
                   WHERE id = ? AND worker_id = ? AND state = 'running' AND cancel_requested = 0""",
                [now + max(0.0, delay), 1 if refund else 0, error_code, error, now, job_id, worker_id],
            )
            if cur.rowcount == 1:
                self._log(job_id, "requeued" if refund else "retry", detail=f"in {delay:.2f} s: {error}", now=now)
            return cur.rowcount == 1

    # ------------------------------------------------------------------ the user's transitions

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a waiting job at once; flag a running one (its worker interrupts it)."""
        now = time.time()
        with self._tx() as conn:
            job = self._one(job_id)
            if job.state in ("queued", "interrupted") or (
                job.state == "running" and ((job.lease_expires or 0) < now or not pid_alive(job.worker_id))
            ):
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?, updated_at = ?, "
                    "lease_expires = NULL WHERE id = ? AND state = ?",
                    [now, now, job_id, job.state],
                )
                self._log(job_id, "cancelled", detail=f"while {job.state}", now=now)
            elif job.state == "running" and not job.cancel_requested:
                conn.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", [now, job_id])
                self._log(job_id, "cancel-requested", now=now)
            return self._one(job_id)

    def resume(self, job_id: str) -> Job:
        """An interrupted, failed or cancelled job back to ``queued`` with fresh attempts."""
        now = time.time()
        with self._tx() as conn:
            job = self._one(job_id)
            if job.state not in ("interrupted", "failed", "cancelled"):
                raise QueueError(
                    f"Job {job_id} is {job.state}; only interrupted, failed or cancelled jobs can be resumed",
                    hint="Wait for it, or cancel it first.",
                )
            conn.execute(
                """UPDATE jobs SET state = 'queued', attempt = 0, not_before = 0, worker_id = NULL,
                       lease_expires = NULL, submitted_at = NULL, cancel_requested = 0, finished_at = NULL,
                       progress = NULL, step = NULL, steps = NULL, eta = NULL, updated_at = ?
                   WHERE id = ? AND state = ?""",
                [now, job_id, job.state],
            )
            self._log(job_id, "resumed", detail=f"from {job.state}", now=now)
            return self._one(job_id)

    def settle(
        self,
        job_id: str,
        from_states: Sequence[str],
        state: str,
        *,
        detail: str,
        worker_id: str | None = None,
        result_ids: Sequence[int] | None = None,
    ) -> bool:
        """Guarded move used by recovery and the orphan sweep."""
        now = time.time()
        marks = ", ".join("?" * len(from_states))
        sql = (
            f"UPDATE jobs SET state = ?, updated_at = ?, lease_expires = NULL, error = ?, "  # noqa: S608
            f"finished_at = CASE WHEN ? IN ('succeeded', 'cancelled') THEN ? ELSE finished_at END, "
            f"result_ids = coalesce(?, result_ids) WHERE id = ? AND state IN ({marks})"
        )
        params: list[Any] = [
            state,
            now,
            detail if state != "succeeded" else None,
            state,
            now,
            None if result_ids is None else json.dumps(list(result_ids)),
            job_id,
            *from_states,
        ]
        if worker_id is not None:
            sql += " AND worker_id IS ?"
            params.append(worker_id)
        with self._tx() as conn:
            cur = conn.execute(sql, params)
            if cur.rowcount == 1:
                self._log(job_id, state, detail=detail, now=now)
            return cur.rowcount == 1

    def expired(self) -> list[Job]:
        """Running jobs whose lease ran out, or whose worker process (on this host) is gone."""
        now = time.time()
        with self._lock:
            rows = self._conn.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
        jobs = [Job.from_row(r) for r in rows]
        return [j for j in jobs if (j.lease_expires or 0) < now or not pid_alive(j.worker_id)]

    # ------------------------------------------------------------------ workers

    def register_worker(self, worker_id: str, backends: Sequence[str]) -> None:
        now = time.time()
        host = worker_id.partition(":")[0]
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, host, pid, backends, started_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [worker_id, host, os.getpid(), json.dumps(list(backends)), now, now],
            )

    def unregister_worker(self, worker_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM workers WHERE id = ?", [worker_id])

    def live_workers(self, stale_s: float) -> list[dict[str, Any]]:
        """Workers that sent a heartbeat in the last ``stale_s`` seconds and whose process lives."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM workers WHERE heartbeat_at >= ?", [time.time() - stale_s]
            ).fetchall()
        out = []
        for r in rows:
            if pid_alive(r["id"]):
                out.append({**dict(r), "backends": json.loads(r["backends"] or "[]")})
        return out
