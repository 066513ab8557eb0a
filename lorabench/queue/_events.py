"""Job events: what a progress bar or a widget subscribes to.

Events are published by the runner (and by ``submit``/``cancel``/``resume`` in this process)
and delivered to async streams — each bound to the event loop that opened it, fed thread-safely
— and to plain callbacks, called in the publishing thread (the kernel's thread in a notebook).
A slow stream drops its oldest *progress* events, never a state change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from lorabench.queue._jobs import SETTLED, Job

__all__ = ["EventBus", "JobEvent", "ProgressCallback"]

logger = logging.getLogger("lorabench.queue")

_STREAM_SIZE = 1000


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job.

    ``kind`` is ``"progress"`` or the name of the state the job entered (``"queued"``,
    ``"running"``, ``"succeeded"``, ``"failed"``, ``"cancelled"``, ``"interrupted"``), or
    ``"retrying"`` (back in the queue after a transient failure, see ``retry_in``).
    """

    kind: str
    job_id: str
    state: str
    fraction: float | None = None
    """0…1 of the server's current phase (SD.Next's progress is per phase)."""
    step: int | None = None
    steps: int | None = None
    eta: float | None = None
    """Seconds left, as the server estimates it."""
    phase: str | None = None
    """The server's job/phase name (``"Inference"``, ``"VAE Decode"``, …)."""
    preview: bytes | None = field(default=None, repr=False)
    """The server's live preview (JPEG), when previews are enabled."""
    backend: str | None = None
    attempt: int | None = None
    error_code: str | None = None
    error: str | None = None
    retry_in: float | None = None
    result_ids: tuple[int, ...] = ()
    paths: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)

    @property
    def settled(self) -> bool:
        """The job reached a state in which nothing more happens by itself."""
        return self.kind != "progress" and self.state in SETTLED

    @classmethod
    def of(cls, job: Job, kind: str | None = None, **extra: object) -> JobEvent:
        """A state event from a job snapshot."""
        values: dict[str, object] = {
            "kind": kind or job.state,
            "job_id": job.id,
            "state": job.state,
            "fraction": job.progress,
            "step": job.step,
            "steps": job.steps,
            "eta": job.eta,
            "backend": job.backend,
            "attempt": job.attempt,
            "error_code": job.error_code,
            "error": job.error,
            "result_ids": tuple(job.result_ids),
        }
        values.update(extra)
        return cls(**values)  # type: ignore[arg-type]


ProgressCallback = Callable[[JobEvent], object]


class _Stream:
    def __init__(self, loop: asyncio.AbstractEventLoop, job_id: str | None) -> None:
        self.loop = loop
        self.job_id = job_id
        self.queue: asyncio.Queue[JobEvent] = asyncio.Queue(maxsize=_STREAM_SIZE)

    def put(self, event: JobEvent) -> None:
        if self.queue.full():
            if event.kind == "progress":
                return
            dropped = []
            while not self.queue.empty():
                old = self.queue.get_nowait()
                if old.kind != "progress":
                    dropped.append(old)
            for old in dropped[-(_STREAM_SIZE - 1) :]:
                self.queue.put_nowait(old)
        self.queue.put_nowait(event)


class EventBus:
    """Fan-out of :class:`JobEvent` to streams and callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[_Stream] = []
        self._callbacks: list[ProgressCallback] = []

    def subscribe(self, callback: ProgressCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that unsubscribes."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    def emit(self, event: JobEvent) -> None:
        """Publish (from any thread)."""
        with self._lock:
            streams, callbacks = list(self._streams), list(self._callbacks)
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for stream in streams:
            if stream.job_id is not None and stream.job_id != event.job_id:
                continue
            if stream.loop is current:
                stream.put(event)
            elif not stream.loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    stream.loop.call_soon_threadsafe(stream.put, event)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                logger.exception("lorabench queue: a progress callback failed (ignored)")

    @contextlib.contextmanager
    def _open(self, job_id: str | None) -> Iterator[_Stream]:
        stream = _Stream(asyncio.get_running_loop(), job_id)
        with self._lock:
            self._streams.append(stream)
        try:
            yield stream
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._streams.remove(stream)

    async def stream(self, job_id: str | None = None) -> AsyncIterator[JobEvent]:
        """Every event (of one job when ``job_id`` is given), until the consumer stops."""
        with self._open(job_id) as stream:
            while True:
                yield await stream.queue.get()

    def open(self, job_id: str | None = None) -> contextlib.AbstractContextManager[_Stream]:
        """A subscription whose ``queue`` receives the events (for ``watch``)."""
        return self._open(job_id)
