"""Reading files into catalog rows, in this process or in ``jobs`` worker processes.

Header parsing is pure Python (JSON, key patterns, sidecars), so threads would
share one core; a large import reads in worker processes instead. They are
plain ``python -m lorabench.importer._reader_process`` children fed chunks over pipes, not
a ``multiprocessing`` pool: no fork of a process that holds DuckDB threads, and
no re-import of the caller's ``__main__`` script (a script without a main guard
would run again in every worker). A worker sees end-of-file on its stdin when
the importer ends or dies, and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import marshal
import os
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import IO, Any

from lorabench.catalog._rows import error_row, lora_row
from lorabench.errors import FileReadError
from lorabench.files import inspect
from lorabench.importer._scan import Found

__all__ = ["read_file", "read_files", "serve"]

POOL_MIN_FILES = 1000  # below this a pool costs more to start than it saves
_CHUNK = 64

Read = tuple[dict[str, Any], dict[str, str] | None]


def read_file(f: Found, now: datetime) -> Read:
    """The catalog row for one file, and the error to report if the reader refused it."""
    try:
        info = inspect(f.path)
    except FileReadError as exc:
        status = "unsafe" if exc.code == "unsafe_format" else "error"
        row = error_row(f.path, root=f.root, folder=f.folder, name=f.name, size=f.size, mtime_ns=f.mtime_ns,
                        inode=f.inode, device=f.device, code=exc.code, message=exc.message, status=status,
                        now=now, sidecar_fingerprint=f.sidecar_fingerprint)  # fmt: skip
        return row, {"path": f.path, "code": exc.code, "message": exc.message}
    row = lora_row(info, root=f.root, folder=f.folder, inode=f.inode, device=f.device,
                   sidecar_fingerprint=f.sidecar_fingerprint, now=now)  # fmt: skip
    row["path"] = f.path
    return row, None


def _read_chunk(files: Sequence[Found], now: datetime) -> list[Read]:
    return [read_file(f, now) for f in files]


def read_files(files: Sequence[Found], now: datetime, jobs: int) -> Iterator[Read]:
    """``read_file`` for each file, in order; in ``jobs`` worker processes when there are many."""
    if jobs <= 1 or len(files) < POOL_MIN_FILES:
        for f in files:
            yield read_file(f, now)
        return
    chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    workers = [_start_worker() for _ in range(min(jobs, len(chunks)))]
    n = len(workers)
    # Each worker gets chunks i ≡ w (mod n) from its own feeder thread, at most two ahead of what has
    # been read back: a request larger than the pipe buffer then blocks only its feeder, never the
    # loop below that drains the replies (one thread doing both would deadlock with the worker).
    slots = [threading.Semaphore(2) for _ in range(n)]
    stop = threading.Event()

    def feed(w: int) -> None:
        try:
            for i in range(w, len(chunks), n):
                slots[w].acquire()
                if stop.is_set():
                    return
                _send(workers[w].stdin, _request(chunks[i], now))
        except (OSError, ValueError):  # the worker died or its pipe was closed: the reader loop reports it
            return

    feeders = [threading.Thread(target=feed, args=(w,), daemon=True, name=f"lorabench-read-{w}") for w in range(n)]
    for thread in feeders:
        thread.start()
    done = False
    try:
        for i in range(len(chunks)):
            w = i % n
            status, payload = _receive(workers[w].stdout)
            if status != "ok":
                raise RuntimeError(f"a reader process failed: {payload}")
            slots[w].release()
            yield from payload
        done = True
    finally:
        stop.set()
        for w in range(n):
            slots[w].release()
        for worker in workers:
            if not done:  # stopped early: a feeder may be blocked writing to it; killing it frees the feeder
                worker.kill()
            _stop(worker)
        for thread in feeders:
            thread.join(timeout=5)


def _start_worker() -> subprocess.Popen[bytes]:
    # The importer's own import path, so that a worker finds the same lorabench (not one in its cwd).
    path = os.pathsep.join(p for p in sys.path if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    return subprocess.Popen([sys.executable, "-m", "lorabench.importer._reader_process"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)  # fmt: skip


def _stop(worker: subprocess.Popen[bytes]) -> None:
    for stream in (worker.stdin, worker.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        worker.wait(timeout=5)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


# Messages are marshal data (plain str/int/float/bool/None/list/tuple/dict), never pickles: lorabench
# does not import pickle at all. Datetimes travel as ISO text with the names of the keys that held them.


def _send(stream: IO[bytes] | None, message: Any) -> None:
    assert stream is not None
    data = marshal.dumps(message)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _read_message(stream: IO[bytes] | None) -> Any:
    assert stream is not None
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return marshal.loads(stream.read(size))


def _receive(stream: IO[bytes] | None) -> Any:
    message = _read_message(stream)
    if message is None:
        raise RuntimeError("a reader process ended unexpectedly")
    status, payload = message
    if status != "ok":
        return status, payload
    return status, [(_revive(row, dates), error) for row, dates, error in payload]


def _flatten(row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    dates = [k for k, v in row.items() if isinstance(v, datetime)]
    return ({**row, **{k: row[k].isoformat() for k in dates}} if dates else row), dates


def _revive(row: dict[str, Any], dates: list[str]) -> dict[str, Any]:
    for key in dates:
        row[key] = datetime.fromisoformat(row[key])
    return row


def _request(files: Sequence[Found], now: datetime) -> tuple[list[tuple[Any, ...]], str]:
    return [dataclasses.astuple(f) for f in files], now.isoformat()


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """A reader process's loop: chunks of files in, rows out, until stdin ends."""
    while True:
        message = _read_message(stdin)
        if message is None:
            return
        files, now = [Found(*f) for f in message[0]], datetime.fromisoformat(message[1])
        try:
            reply: tuple[str, Any] = ("ok", [(*_flatten(row), error) for row, error in _read_chunk(files, now)])
        except Exception:  # a bug, not a bad file (those become error rows): report it, keep serving
            reply = ("error", traceback.format_exc(limit=5))
        _send(stdout, reply)
