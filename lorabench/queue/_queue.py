"""``lorabench.queue.Queue``: the public face of the durable generation queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lorabench.catalog._history import History, ResultRecord
from lorabench.config import home_dir
from lorabench.errors import QueueError
from lorabench.queue._backends import Backend, BackendSpec, BackendStatus
from lorabench.queue._events import EventBus, JobEvent, ProgressCallback
from lorabench.queue._jobs import STATES, Job, new_worker_id
from lorabench.queue._recovery import recover
from lorabench.queue._request import canonical_request, dumps, job_key
from lorabench.queue._retry import RetryPolicy
from lorabench.queue._runner import Runner, RunnerConfig
from lorabench.queue._sinks import Sink
from lorabench.queue._store import JobStore
from lorabench.sdnext import Txt2ImgRequest
from lorabench.sdnext._http import DEFAULT_URL, resolve_server

if TYPE_CHECKING:
    from lorabench.catalog import Catalog

__all__ = ["Queue"]

logger = logging.getLogger("lorabench.queue")


def _normalise_url(url: str) -> str:
    found, _ = resolve_server(url, ("", ""))
    return str(found).rstrip("/")


class Queue:
    """A durable queue of generation jobs, run against one or more SD.Next servers.

    Parameters
    ----------
    catalog:
        Where results and history are recorded (and LoRAs are looked up).
    backends:
        SD.Next servers: URLs, ready :class:`~lorabench.sdnext.SDNextClient` objects, or
        mappings of ``SDNextClient`` keyword arguments. Default: ``SDNEXT_URL`` or
        ``http://127.0.0.1:7860``. Credentials come from ``SDNEXT_USER``/``SDNEXT_PASSWORD``
        (or a client's ``auth``) and are never stored with a job.
    path:
        The SQLite queue file (default ``<LORABENCH_HOME>/queue.sqlite``).
    results_dir:
        Where images go (default ``<LORABENCH_HOME>/results``).
    sinks:
        Deliveries run after each success (:class:`FolderSink`, :class:`WebhookSink`, …).
    retry:
        Retry and backend-health policy; ``max_attempts`` is the default per job.
    lease_s, heartbeat_s:
        A running job's lease and how often it is renewed; a job whose lease runs out (its
        worker died) is recovered by the next runner.
    progress_interval:
        Seconds between ``/progress`` polls of a busy backend (at least 0.5; 0 disables).
    previews:
        Ask for the live preview image with each poll (``JobEvent.preview``).
    job_timeout:
        Overall deadline of one generation (default: the client's, 600 s); a job past it is
        interrupted on the server and marked ``interrupted``.

    In a notebook, :meth:`start` runs the dispatcher as a task on the kernel's loop and returns
    at once; ``await queue.wait(job.id)`` waits for a job. Scripts use :meth:`run` (or
    ``lorabench worker``).
    """

    def __init__(
        self,
        catalog: Catalog,
        backends: Sequence[BackendSpec] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        results_dir: str | os.PathLike[str] | None = None,
        sinks: Iterable[Sink] = (),
        retry: RetryPolicy | None = None,
        lease_s: float = 30.0,
        heartbeat_s: float | None = None,
        progress_interval: float = 0.5,
        previews: bool = False,
        poll_interval: float = 0.25,
        job_timeout: float | None = None,
        worker_id: str | None = None,
    ) -> None:
        if lease_s <= 0 or (heartbeat_s is not None and not 0 < heartbeat_s < lease_s):
            raise ValueError("lease_s must be positive and heartbeat_s between 0 and lease_s")
        if progress_interval != 0 and progress_interval < 0.5:
            raise ValueError("progress_interval must be 0 (off) or at least 0.5 s (two polls a second)")
        self.catalog = catalog
        home = home_dir()
        self.path = os.fspath(path) if path is not None else str(home / "queue.sqlite")
        self.results_dir = Path(results_dir) if results_dir is not None else home / "results"
        self.history = History(catalog, results_dir=self.results_dir)
        self.retry_policy = retry or RetryPolicy()
        specs = list(backends) if backends else [os.environ.get("SDNEXT_URL") or DEFAULT_URL]
        self._backends = [Backend(spec, self.retry_policy) for spec in specs]
        urls = [b.url for b in self._backends]
        if len(set(urls)) != len(urls):
            raise ValueError(f"the same backend is listed twice: {urls}")
        self.store = JobStore(self.path)
        self.bus = EventBus()
        self.worker_id = worker_id or new_worker_id()
        config = RunnerConfig(
            lease_s=float(lease_s),
            heartbeat_s=float(heartbeat_s or max(0.1, min(5.0, lease_s / 4))),
            progress_interval=float(progress_interval),
            previews=bool(previews),
            poll_interval=float(poll_interval),
            job_timeout=job_timeout,
        )
        self._runner = Runner(
            store=self.store,
            history=self.history,
            bus=self.bus,
            backends=self._backends,
            results_dir=self.results_dir,
            sinks=list(sinks),
            policy=self.retry_policy,
            config=config,
            worker_id=self.worker_id,
        )
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Queue({self.path!r}, backends={[b.url for b in self._backends]}, running={self.running})"

    # ------------------------------------------------------------------ jobs

    def submit(
        self,
        request: Txt2ImgRequest | Mapping[str, Any] | str,
        *,
        priority: int = 0,
        backend: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Store a job (durable when this returns) and return it.

        ``request`` is a :class:`~lorabench.sdnext.Txt2ImgRequest` / ``Img2ImgRequest``, a
        txt2img payload mapping, or a bare prompt. A seed of -1 is replaced by a random seed
        now, so the job is reproducible. The same request (same seed) submitted again returns
        the existing job instead of generating twice. ``backend`` pins the job to one server;
        higher ``priority`` runs first; ``timeout`` overrides the generation deadline.
        """
        kind, data, seed = canonical_request(request)
        attempts = int(max_attempts or self.retry_policy.max_attempts)
        if attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        pinned = _normalise_url(backend) if backend else None
        key = job_key(kind, data)
        job, created = self.store.submit(
            secrets.token_hex(8),
            key,
            kind,
            dumps(data),
            seed,
            priority=int(priority),
            pinned_backend=pinned,
            max_attempts=attempts,
            timeout=timeout,
        )
        if created:
            self.bus.emit(JobEvent.of(job, "queued"))
            self._runner.notify()
        return job

    def get(self, job_id: str) -> Job:
        """A fresh snapshot of one job (:class:`~lorabench.errors.JobNotFoundError` if unknown)."""
        return self.store.get(job_id)

    def jobs(self, state: str | Iterable[str] | None = None, *, limit: int | None = None) -> list[Job]:
        """Jobs, newest first; ``state`` filters by one state or several."""
        states = [state] if isinstance(state, str) else None if state is None else list(state)
        for s in states or ():
            if s not in STATES:
                raise ValueError(f"unknown state {s!r}; states: {', '.join(STATES)}")
        return self.store.jobs(states, limit=limit)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        return self.store.counts()

    def log(self, job_id: str) -> list[dict[str, Any]]:
        """A job's transitions and attempts (``at``, ``event``, ``attempt``, ``backend``, ``detail``)."""
        self.store.get(job_id)
        return self.store.log(job_id)

    def results(self, job_id: str) -> list[ResultRecord]:
        """The results a job produced."""
        return self.history.for_job(job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a waiting one at once; a running one is interrupted on its server and
        then ends ``cancelled`` (no result rows stay). Finished jobs are returned unchanged."""
        job = self.store.request_cancel(job_id)
        if job.state == "running":
            self._runner.cancel_local(job_id)
        else:
            self.bus.emit(JobEvent.of(job))
        return job

    def resume(self, job_id: str) -> Job:
        """Queue an interrupted (or failed, or cancelled) job again, with fresh attempts.

        A job whose results were recorded after all is marked ``succeeded`` instead.
        """
        job = self.store.get(job_id)
        if job.state in ("interrupted", "failed", "cancelled") and self.history.jobs_with_results([job_id]):
            ids = [r.id for r in self.history.for_job(job_id)]
            self.store.settle(job_id, [job.state], "succeeded", result_ids=ids, detail="results were found")
            job = self.store.get(job_id)
        else:
            job = self.store.resume(job_id)
            self._runner.notify()
        self.bus.emit(JobEvent.of(job))
        return job

    def resume_interrupted(self) -> list[Job]:
        """Resume every interrupted job."""
        return [self.resume(job.id) for job in self.store.jobs(["interrupted"], newest_first=False)]

    def recover(self) -> list[Job]:
        """Settle jobs of dead workers and sweep the results folder now (a runner does this when it starts)."""
        changed = recover(self.store, self.history, self.results_dir, exclude=set(self._runner._inflight))
        for job in changed:
            self.bus.emit(JobEvent.of(job))
        return changed

    def backends(self) -> list[BackendStatus]:
        """Each backend's health and current job."""
        return [b.status() for b in self._backends]

    # ------------------------------------------------------------------ events

    def on_progress(self, callback: ProgressCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every :class:`JobEvent` (in the runner's thread); returns an
        unsubscribe function."""
        return self.bus.subscribe(callback)

    def events(self) -> AsyncIterator[JobEvent]:
        """Every event of this process's queue, as an async stream: ``async for ev in queue.events()``."""
        return self.bus.stream()

    async def watch(self, job_id: str, *, poll: float = 0.5) -> AsyncIterator[JobEvent]:
        """Events of one job, starting with its current state, until it settles.

        Works when the job runs in another process too (the queue file is polled every ``poll`` s).
        """
        self.store.get(job_id)
        with self.bus.open(job_id) as stream:
            job = self.store.get(job_id)
            yield JobEvent.of(job)
            if job.settled:
                return
            last = (job.state, job.progress, job.attempt)
            while True:
                try:
                    async with asyncio.timeout(poll):
                        event = await stream.queue.get()
                except TimeoutError:
                    job = self.store.get(job_id)
                    seen = (job.state, job.progress, job.attempt)
                    if seen == last:
                        continue
                    kind = "progress" if seen[0] == last[0] == "running" and seen[2] == last[2] else None
                    last, event = seen, JobEvent.of(job, kind)
                else:
                    if event.kind != "progress":
                        last = (event.state, last[1], event.attempt if event.attempt is not None else last[2])
                yield event
                if event.settled:
                    return

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job settles (succeeded, failed, cancelled or interrupted); returns it."""
        async with asyncio.timeout(timeout):
            async for _ in self.watch(job_id):
                pass
        return self.store.get(job_id)

    async def wait_all(self, job_ids: Iterable[str], timeout: float | None = None) -> list[Job]:
        """:meth:`wait` for several jobs."""
        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*(self.wait(j) for j in job_ids)))

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """Whether this queue's dispatcher runs (in this process)."""
        return (
            self._runner.running
            or bool(self._task and not self._task.done())
            or bool(self._thread and self._thread.is_alive())
        )

    def start(self) -> asyncio.Task[None] | threading.Thread:
        """Start dispatching in the background and return at once.

        With a running event loop (a notebook) the dispatcher is a task on it; otherwise it
        runs in a daemon thread with its own loop.
        """
        if self._closed:
            raise QueueError("This queue is closed.", hint="Create a new Queue.")
        if self._task is not None and not self._task.done():
            return self._task
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._task = loop.create_task(self._runner.serve(), name="lorabench-queue")
            self._task.add_done_callback(_report_crash)
            return self._task
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._runner.serve()), name="lorabench-queue", daemon=True
        )
        self._thread.start()
        return self._thread

    async def serve(self, *, once: bool = False) -> None:
        """Dispatch in the current loop until stopped (``once``: until no job is left to run)."""
        await self._runner.serve(once=once)

    def run(self, *, once: bool = False) -> None:
        """Dispatch until Ctrl-C (``once``: until no job is left to run); for scripts."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._runner.serve(once=once))
            return
        raise QueueError(
            "Queue.run() cannot be used inside a running event loop (a notebook)",
            hint="Use queue.start() there, then `await queue.wait(job.id)`.",
        )

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop dispatching. ``graceful`` lets generations in flight finish; otherwise they are
        abandoned and their jobs marked ``interrupted`` (or queued again if not yet sent)."""
        self._runner.request_stop(graceful=graceful)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def close(self) -> None:
        """Stop a background dispatcher (gracefully) and close the queue file."""
        if self._closed:
            return
        self._runner.request_stop(graceful=True)
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._task is not None and not self._task.done():
            self._task.add_done_callback(lambda _: self.store.close())
        else:
            self.store.close()
        self._closed = True

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Queue:
        """``async with queue:`` dispatches for the block (the queue stays open afterwards)."""
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop(graceful=exc_type is None)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("lorabench: the queue's dispatcher stopped with an error", exc_info=task.exception())
