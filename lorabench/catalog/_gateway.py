"""The one way into the DuckDB file.

DuckDB lets one process write (or several read) and refuses a second opener at
once; it never waits. The gateway hides that:

- every access runs inside ``with gateway.session(write=…) as conn:``; the
  connection is opened on demand and closed again soon after (``linger``), so
  another process — a notebook beside a scheduled import — gets its turn;
- processes queue on a cross-process file lock beside the catalog
  (``catalog.duckdb.lock``); a DuckDB lock held by some other program is retried
  with jittered backoff; past the deadline a :class:`CatalogLockedError` names
  the holder's PID;
- a write session is one transaction: committed on success, rolled back on error;
- a WAL that cannot be replayed is moved to ``quarantine/<timestamp>/`` (never
  deleted) and the catalog reopened, with a loud warning;
- checkpoints happen only here, guarded (see :meth:`Gateway.checkpoint`).

DuckDB's own checkpoints (on close, at its WAL size threshold) are switched off;
why every checkpoint is guarded is told in :mod:`lorabench.catalog._guard`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import re
import shutil
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import filelock

from lorabench.catalog._guard import drop_guard, restore_interrupted_checkpoint, wal_size, write_guard
from lorabench.catalog._storage import check_folder, ensure_free_space
from lorabench.errors import CatalogError, CatalogLockedError

__all__ = ["Gateway"]

logger = logging.getLogger("lorabench.catalog")

_LOCK_CONFLICT = re.compile(r"Could not set lock|Conflicting lock|database is locked", re.IGNORECASE)
_PID = re.compile(r"PID (\d+)")
_YIELD_PAUSE = 0.03
_WAL_TROUBLE = re.compile(r"\bWAL\b|write-ahead|replay", re.IGNORECASE)
# DuckDB checkpoints by itself when the WAL passes this size; ours take over well before it.
_NO_AUTO_CHECKPOINT = "SET wal_autocheckpoint = '1000000GB'"


class Gateway:
    """Short-lived, lock-aware connections to one DuckDB catalog file.

    Parameters
    ----------
    path:
        The catalog file, or ``":memory:"``.
    deadline:
        Seconds to wait for another process before giving up.
    linger:
        Seconds an idle connection stays open for the next call (cheap bursts of
        queries) before it is closed and the file released.
    max_hold:
        Longest a lingering connection is kept across calls, so a busy notebook
        cannot starve a scheduled import.
    tracer:
        Optional ``callable(sql, params)`` called for every statement run through
        :meth:`execute`.
    checkpoint_bytes:
        WAL size at which releasing the file checkpoints it first. Closing for
        good also folds in a WAL this gateway wrote to; a process that only read
        never copies the file. Until then commits live in the WAL, which each
        open replays.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        deadline: float = 60.0,
        linger: float = 0.25,
        max_hold: float = 2.0,
        tracer: Callable[[str, object], None] | None = None,
        on_open: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
        checkpoint_bytes: int = 4 << 20,
    ) -> None:
        self.path = os.fspath(path)
        self.memory = self.path == ":memory:"
        self.deadline = deadline
        self.linger = linger
        self.max_hold = max_hold
        self.tracer = tracer
        self.on_open = on_open
        self.checkpoint_bytes = checkpoint_bytes
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._opened_at = 0.0
        self._depth = 0
        self._mutex = threading.RLock()
        self._timer: threading.Timer | None = None
        self._closed = False
        self._released_at = 0.0
        self._holds = 0
        self._wal_at_open = 0
        self._wrote = False  # whether this gateway grew the WAL (only then does closing fold it in)
        self._filelock: filelock.BaseFileLock | None = None
        if not self.memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._filelock = filelock.FileLock(self.path + ".lock", thread_local=False)
            check_folder(self.path)  # warns about network, FUSE and sync folders
        _GATEWAYS.add(self)

    def __repr__(self) -> str:
        return f"Gateway({self.path!r})"

    # -- connections -------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work; a write session is one transaction."""
        if self._closed:
            raise CatalogError("This catalog is closed.", hint="Open a new lorabench.Catalog.")
        with self._mutex:
            self._cancel_timer()
            conn = self._connection()
            self._depth += 1
            began = False
            try:
                if write and self._depth == 1:
                    conn.execute("BEGIN TRANSACTION")
                    began = True
                yield conn
                if began:
                    conn.execute("COMMIT")
            except BaseException:
                if began:
                    with contextlib.suppress(duckdb.Error):
                        conn.execute("ROLLBACK")
                raise
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._schedule_release()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._conn is not None:
            return self._conn
        if self.memory:
            self._conn = duckdb.connect(":memory:")
        else:
            self._acquire_filelock()
            try:
                restore_interrupted_checkpoint(self.path)
                self._conn = self._open_file()
                self._conn.execute("PRAGMA disable_checkpoint_on_shutdown")
                self._conn.execute(_NO_AUTO_CHECKPOINT)
                self._wal_at_open = self.wal_size()
            except BaseException:
                self._drop_connection()
                raise
        self._opened_at = time.monotonic()
        if self.on_open is not None:
            try:
                self.on_open(self._conn)
            except BaseException:
                self._close_now()
                raise
        return self._conn

    def _acquire_filelock(self) -> None:
        assert self._filelock is not None
        pause = self._released_at + _YIELD_PAUSE - time.monotonic()
        if pause > 0:  # just gave the file up: let a waiting process take its turn first
            time.sleep(pause)
        try:
            try:
                self._filelock.acquire(timeout=0)
            except filelock.Timeout:  # held: say so (a holding job hands over between batches), then wait
                with self._waiting():
                    self._filelock.acquire(timeout=self.deadline, poll_interval=0.005)
        except filelock.Timeout:
            holder = _read_holder(self.path)
            who = f" (PID {holder})" if holder else ""
            raise CatalogLockedError(
                f"The catalog {self.path} was held by another lorabench process{who} "
                f"for more than {self.deadline:g} s"
            ) from None
        with contextlib.suppress(OSError):
            Path(self.path + ".holder").write_text(str(os.getpid()))

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        marker = Path(self.path + ".waiting") / f"{os.getpid()}-{id(self)}"
        try:
            marker.parent.mkdir(exist_ok=True)
            marker.touch()
        except OSError:  # a read-only folder: the holder hands over on its own schedule
            yield
            return
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                marker.unlink()

    def _others_waiting(self) -> bool:
        """Whether another lorabench process is waiting for the file (stale markers are swept)."""
        try:
            entries = list(os.scandir(self.path + ".waiting"))
        except OSError:
            return False
        mine = f"{os.getpid()}-{id(self)}"
        for entry in entries:
            head = entry.name.split("-")[0]
            pid = int(head) if head.isdigit() else 0
            if entry.name == mine or pid <= 0:
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            except PermissionError:  # alive, another user's
                pass
            return True
        return False

    def _release_filelock(self) -> None:
        if self._filelock is not None and self._filelock.is_locked:
            self._filelock.release(force=True)

    def _open_file(self) -> duckdb.DuckDBPyConnection:
        stop = time.monotonic() + self.deadline
        delay = 0.005
        quarantined = False
        while True:
            try:
                return duckdb.connect(self.path)
            except duckdb.IOException as exc:
                message = str(exc)
                if not _LOCK_CONFLICT.search(message):
                    if self._can_quarantine(message, quarantined):
                        self._quarantine_wal(exc)
                        quarantined = True
                        continue
                    raise CatalogError(f"Cannot open the catalog {self.path}: {message}") from exc
                if time.monotonic() + delay > stop:
                    pid = _PID.search(message)
                    who = f" by PID {pid.group(1)}" if pid else ""
                    raise CatalogLockedError(
                        f"The catalog {self.path} is locked{who} and stayed locked for {self.deadline:g} s"
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.25)
            except duckdb.Error as exc:
                if not self._can_quarantine(str(exc), quarantined):
                    raise CatalogError(f"Cannot open the catalog {self.path}: {exc}") from exc
                self._quarantine_wal(exc)
                quarantined = True

    def _can_quarantine(self, message: str, already: bool) -> bool:
        """Only a failure that names the write-ahead log, with a WAL present, moves the WAL aside."""
        return not already and bool(_WAL_TROUBLE.search(message)) and Path(self.path + ".wal").exists()

    def _quarantine_wal(self, exc: Exception) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = Path(self.path).parent / "quarantine" / stamp
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(self.path + ".wal", target / (Path(self.path).name + ".wal"))
        message = (
            f"lorabench: the catalog's write-ahead log could not be replayed ({exc}); it was moved to "
            f"{target} and the catalog reopened without it. Recent changes may be missing."
        )
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    # -- checkpoints ---------------------------------------------------------------------

    def wal_size(self) -> int:
        """Bytes in the catalog's write-ahead log (0 when there is none)."""
        return 0 if self.memory else wal_size(self.path)

    def checkpoint(self) -> bool:
        """Fold the WAL into the catalog file, safely; False when there was nothing to fold.

        The file is first copied to ``<catalog>.pre-checkpoint`` (synced, then renamed into
        place); the copy is removed once DuckDB's checkpoint has returned. A process killed in
        between leaves the copy and the WAL, which the next open restores.
        """
        if self.memory:
            return False
        with self._mutex:
            if self._closed:
                raise CatalogError("This catalog is closed.", hint="Open a new lorabench.Catalog.")
            if self._depth:
                raise CatalogError("A checkpoint cannot run inside an open catalog session.",
                                   hint="Call checkpoint() after the session's block has ended.")  # fmt: skip
            self._cancel_timer()
            conn = self._connection()
            try:
                return self._checkpoint(conn)
            finally:
                self._schedule_release()

    def _checkpoint(self, conn: duckdb.DuckDBPyConnection) -> bool:
        wal = self.wal_size()
        if wal == 0:
            return False
        # Room for the copy, and for DuckDB to write the folded blocks beside the live ones.
        ensure_free_space(self.path, 2 * os.path.getsize(self.path) + wal + (16 << 20), "checkpoint the catalog")
        write_guard(self.path, wal)
        try:
            conn.execute("CHECKPOINT")
        except duckdb.Error as exc:
            # The file may be half-written: drop the connection before anything else is written, so
            # that the next open puts the pre-checkpoint copy back and replays the WAL.
            self._drop_connection()
            raise CatalogError(
                f"Could not checkpoint the catalog {self.path}: {exc}",
                hint="Every commit is still in the WAL; check free disk space and retry.",
            ) from exc
        drop_guard(self.path)
        return True

    # -- release -----------------------------------------------------------------------

    def _schedule_release(self) -> None:
        if self.memory or self._conn is None or self._holds:
            return
        held = time.monotonic() - self._opened_at
        if self.linger <= 0 or held >= self.max_hold:
            self._close_now()
            self._released_at = time.monotonic() if held >= self.max_hold else 0.0
            return
        self._timer = threading.Timer(self.linger, self._release_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def _release_if_idle(self) -> None:
        with self._mutex:
            if self._depth == 0 and not self._holds:
                self._close_now()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Keep the file between sessions for a batch job (an import); :meth:`offer_turn` hands it over."""
        with self._mutex:
            self._holds += 1
        try:
            yield
        finally:
            with self._mutex:
                self._holds -= 1
                if not self._holds and not self._depth:
                    self._cancel_timer()
                    self._schedule_release()

    def offer_turn(self, *, checkpoint_bytes: int | None = None) -> bool:
        """Between batches: release the file if another lorabench process is waiting for it.

        ``checkpoint_bytes`` overrides the WAL size past which the release checkpoints first.
        """
        if self.memory:
            return False
        with self._mutex:
            if self._depth or self._conn is None or not self._others_waiting():
                return False
            self._cancel_timer()
            self._close_now(threshold=checkpoint_bytes)
            self._released_at = time.monotonic()
            return True

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_now(self, *, final: bool = False, threshold: int | None = None) -> None:
        conn = self._conn
        try:
            if conn is not None and not self.memory:
                wal = self.wal_size()
                mine = self._wrote or wal > self._wal_at_open
                if wal and ((final and mine) or wal >= (self.checkpoint_bytes if threshold is None else threshold)):
                    try:
                        self._checkpoint(conn)
                    except (CatalogError, OSError) as exc:  # the WAL keeps every commit; a later close retries
                        logger.warning("lorabench: could not checkpoint %s: %s", self.path, exc)
        finally:  # even on Ctrl-C during the copy: never keep the file
            self._drop_connection()

    def _drop_connection(self) -> None:
        """Close the connection (DuckDB does not checkpoint on close here) and give the file up."""
        conn, self._conn = self._conn, None
        if conn is not None and not self.memory and self.wal_size() > self._wal_at_open:
            self._wrote = True
        if conn is not None:
            with contextlib.suppress(duckdb.Error):
                conn.close()
        if not self.memory:
            self._release_filelock()

    def release(self, *, yield_turn: bool = False) -> None:
        """Close the connection now (if idle) so other processes can open the file.

        With ``yield_turn`` the next open in this process waits a moment, so a
        process that is waiting for the file gets it first (used between import
        batches).
        """
        if self.memory:  # an in-memory catalog lives as long as its one connection
            return
        with self._mutex:
            self._cancel_timer()
            if self._depth == 0:
                had = self._conn is not None
                self._close_now()
                if had and yield_turn:
                    self._released_at = time.monotonic()

    def close(self) -> None:
        """Close for good."""
        with self._mutex:
            self._cancel_timer()
            try:
                if not self._closed:
                    if self._conn is None and self._wrote and self.wal_size():
                        self._reopen_briefly()  # to fold our WAL in below, if the file is free right now
                    self._close_now(final=True)
            finally:
                self._closed = True

    def _reopen_briefly(self) -> None:
        deadline, self.deadline = self.deadline, 0.0
        try:
            self._connection()
        except CatalogError:  # another process holds the file: it (or a later open) will checkpoint
            pass
        finally:
            self.deadline = deadline

    @property
    def is_open(self) -> bool:
        """Whether a connection (and the file) is held right now."""
        return self._conn is not None


_GATEWAYS: weakref.WeakSet[Gateway] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close lingering connections before the interpreter shuts down.

    Otherwise the linger timer may close DuckDB from a daemon thread during shutdown, which
    aborts the process.
    """
    for gateway in list(_GATEWAYS):
        with contextlib.suppress(Exception):
            gateway.close()


def _read_holder(path: str) -> str | None:
    try:
        return Path(path + ".holder").read_text().strip() or None
    except OSError:
        return None
