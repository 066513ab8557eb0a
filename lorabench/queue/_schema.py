"""The queue file's SQLite schema (``PRAGMA user_version`` records its version)."""

from __future__ import annotations

__all__ = ["SCHEMA", "STORE_VERSION"]

STORE_VERSION = 1

SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        job_key TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN
            ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
        kind TEXT NOT NULL CHECK (kind IN ('txt2img', 'img2img')),
        request TEXT NOT NULL,
        seed INTEGER NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        pinned_backend TEXT,
        backend TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        timeout_s REAL,
        not_before REAL NOT NULL DEFAULT 0,
        worker_id TEXT,
        lease_expires REAL,
        heartbeat_at REAL,
        submitted_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        progress REAL,
        step INTEGER,
        steps INTEGER,
        eta REAL,
        error_code TEXT,
        error TEXT,
        result_ids TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        queue_wait_s REAL,
        generation_s REAL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (priority DESC, created_at) WHERE state = 'queued'",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_worker ON jobs (worker_id) WHERE state = 'running'",
    """CREATE TABLE IF NOT EXISTS job_log (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        attempt INTEGER,
        backend TEXT,
        detail TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS job_log_job ON job_log (job_id, id)",
    """CREATE TABLE IF NOT EXISTS workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        backends TEXT NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    )""",
)
