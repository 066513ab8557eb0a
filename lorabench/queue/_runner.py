"""The runner: one asyncio task per backend taking jobs from the store, one generation at a time each.

It lives on whatever loop runs :meth:`Runner.serve` — the kernel's loop in a notebook, the
``asyncio.run`` loop of ``lorabench worker``. SQLite calls go through one dedicated thread and
DuckDB/file work through the default executor, so the loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lorabench.catalog._history import History, ResultRecord
from lorabench.errors import LorabenchError, QueueError
from lorabench.queue._attempt import Attempt
from lorabench.queue._backends import Backend
from lorabench.queue._events import EventBus, JobEvent
from lorabench.queue._jobs import Job
from lorabench.queue._recovery import recover
from lorabench.queue._retry import RetryPolicy
from lorabench.queue._sinks import Delivery, Sink
from lorabench.queue._store import JobStore

__all__ = ["Runner", "RunnerConfig"]

logger = logging.getLogger("lorabench.queue")
T = TypeVar("T")


@dataclass(frozen=True)
class RunnerConfig:
    """Timing knobs of a runner (see ``Queue`` for their meaning)."""

    lease_s: float = 30.0
    heartbeat_s: float = 5.0
    progress_interval: float = 0.5
    previews: bool = False
    poll_interval: float = 0.25
    job_timeout: float | None = None
    delivery_concurrency: int = 4


class Runner:
    """Dispatches jobs from a :class:`JobStore` to backends and records what comes back."""

    def __init__(
        self,
        *,
        store: JobStore,
        history: History,
        bus: EventBus,
        backends: Sequence[Backend],
        results_dir: Path,
        sinks: Sequence[Sink],
        policy: RetryPolicy,
        config: RunnerConfig,
        worker_id: str,
    ) -> None:
        self.store, self.history, self.bus = store, history, bus
        self.backends = list(backends)
        self.results_dir = results_dir
        self.sinks = list(sinks)
        self.policy, self.config, self.worker_id = policy, config, worker_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._hard = False
        self._wakers: list[asyncio.Event] = []
        self._inflight: dict[str, Attempt] = {}
        self._deliveries: set[asyncio.Task[None]] = set()
        self._saving: set[asyncio.Task[None]] = set()
        self._db_pool: ThreadPoolExecutor | None = None
        self._delivery_slots: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ thread-safe controls

    @property
    def running(self) -> bool:
        return self._loop is not None

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            fn()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    def notify(self) -> None:
        """New work may be there: wake idle backends (from any thread)."""
        self._call(self._wake_all)

    def cancel_local(self, job_id: str) -> None:
        """A job this runner may hold got a cancel request (from any thread)."""
        self._call(lambda: self._on_cancel(job_id))

    def request_stop(self, *, graceful: bool = True) -> None:
        """Stop taking jobs; ``graceful`` lets jobs in flight finish, else they are abandoned."""

        def stop() -> None:
            self._hard = self._hard or not graceful
            if self._stop is not None:
                self._stop.set()
            self._wake_all()

        self._call(stop)

    def _wake_all(self) -> None:
        for waker in self._wakers:
            waker.set()

    def emit(self, event: JobEvent) -> None:
        self.bus.emit(event)

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._db_pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._db_pool, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ serving

    async def serve(self, *, once: bool = False) -> None:
        """Run until stopped (or, with ``once``, until no job this runner can take is left)."""
        if self._loop is not None:
            raise QueueError("This runner is already running", hint="Stop it before starting it again.")
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._hard = False
        self._wakers = [asyncio.Event() for _ in self.backends]
        self._db_pool = ThreadPoolExecutor(1, thread_name_prefix="lorabench-queue-db")
        self._delivery_slots = asyncio.Semaphore(max(1, self.config.delivery_concurrency))
        tasks: list[asyncio.Task[None]] = []
        try:
            for backend in self.backends:
                await backend.open()
            await self.db(self.store.register_worker, self.worker_id, [b.url for b in self.backends])
            await self.recover(sweep_results=True)
            tasks = [
                asyncio.create_task(self._backend_loop(b, w)) for b, w in zip(self.backends, self._wakers, strict=True)
            ]
            tasks.append(asyncio.create_task(self._heartbeat_loop()))
            if once:
                tasks.append(asyncio.create_task(self._drain_then_stop()))
            await self._stop.wait()
        except asyncio.CancelledError:
            self._hard = True  # Ctrl-C or a cancelled task: abandon jobs in flight (they become interrupted)
            raise
        finally:
            await self._shutdown(tasks)

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        assert self._stop is not None
        self._stop.set()
        self._wake_all()
        loops, helpers = tasks[: len(self.backends)], tasks[len(self.backends) :]
        for task in helpers + (loops if self._hard else []):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._saving:  # results of finished generations are always saved, even on a hard stop
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._saving, return_exceptions=True)
        if self._deliveries:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(30):
                    await asyncio.gather(*self._deliveries, return_exceptions=True)
        for sink in self.sinks:
            closer = getattr(sink, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        for backend in self.backends:
            with contextlib.suppress(Exception):
                await backend.aclose()
        with contextlib.suppress(Exception):
            await self.db(self.store.unregister_worker, self.worker_id)
        if self._db_pool is not None:
            self._db_pool.shutdown(wait=False)
        self._loop = self._stop = self._db_pool = None
        self._wakers = []

    async def _pause(self, seconds: float, waker: asyncio.Event | None = None) -> None:
        """Sleep up to ``seconds``; wakes early on stop (and on ``waker``)."""
        assert self._stop is not None
        event = waker or self._stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await event.wait()

    @property
    def stopping(self) -> bool:
        return self._stop is None or self._stop.is_set()

    async def _backend_loop(self, backend: Backend, waker: asyncio.Event) -> None:
        slots = asyncio.Semaphore(2)  # one generation in flight, plus the previous job's results being saved
        while not self.stopping:
            wait = backend.wait_time()
            if wait > 0:
                await self._pause(wait)
                if self.stopping:
                    break
                if backend.down:
                    if await backend.probe():
                        backend.came_back()
                        logger.info("lorabench: backend %s is back", backend.url)
                    else:
                        backend.go_down(backend.last_error or "unreachable")
                continue
            await slots.acquire()
            waker.clear()
            try:
                job = None if self.stopping else await self.db(self.store.claim, self.worker_id, backend.url,
                                                               self.config.lease_s)  # fmt: skip
            except QueueError:
                logger.warning("lorabench: could not claim a job (queue file busy); retrying", exc_info=True)
                job = None
            if job is None:
                slots.release()
                await self._pause(self.config.poll_interval, waker)
                continue
            try:
                await self._run(backend, job, slots)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one job kill the backend's loop
                logger.exception("lorabench: job %s failed inside the runner", job.id)
                with contextlib.suppress(Exception):
                    await self.db(
                        self.store.finish,
                        job.id,
                        self.worker_id,
                        "interrupted",
                        error_code="internal",
                        error="the runner failed while handling this job",
                    )

    async def _heartbeat_loop(self) -> None:
        last_recovery = time.monotonic()
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                flagged = await self.db(self.store.heartbeat, self.worker_id, self.config.lease_s)
            except QueueError:
                logger.warning("lorabench: heartbeat failed (queue file busy)", exc_info=True)
                continue
            for job_id in flagged:
                self._on_cancel(job_id)
            if time.monotonic() - last_recovery >= self.config.lease_s:
                last_recovery = time.monotonic()
                with contextlib.suppress(LorabenchError):
                    await self.recover(sweep_results=False)

    async def _drain_then_stop(self) -> None:
        urls = [b.url for b in self.backends]
        quiet = 0
        while not self.stopping:
            await asyncio.sleep(self.config.poll_interval)
            busy = bool(self._inflight) or await self.db(self.store.runnable, urls) > 0
            quiet = 0 if busy else quiet + 1
            if quiet >= 2:
                self.request_stop()
                return

    # ------------------------------------------------------------------ recovery

    async def recover(self, *, sweep_results: bool = True) -> list[Job]:
        """Settle jobs whose worker is gone (never this runner's own), optionally sweep results."""
        changed = await asyncio.to_thread(
            recover,
            self.store,
            self.history,
            self.results_dir,
            exclude=set(self._inflight),
            sweep_results=sweep_results,
        )
        for job in changed:
            self.emit(JobEvent.of(job))
        return changed

    # ------------------------------------------------------------------ one job

    async def _run(self, backend: Backend, job: Job, slots: asyncio.Semaphore) -> None:
        """Run one attempt; its results are saved in a background task holding one of ``slots``."""
        attempt = Attempt(self, backend, job)
        self._inflight[job.id] = attempt
        backend.busy_job = job.id
        saving = None
        try:
            saving = await attempt.run()
        except asyncio.CancelledError:
            attempt.abandon()
            raise
        finally:
            attempt.done = True
            if attempt.interrupter is not None:
                attempt.interrupter.cancel()
            backend.busy_job = None
            if saving is None:
                self._inflight.pop(job.id, None)
                slots.release()
        if saving is None:
            return
        task = asyncio.create_task(self._save(job.id, saving, slots))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save(self, job_id: str, saving: Coroutine[Any, Any, None], slots: asyncio.Semaphore) -> None:
        try:
            await saving
        except Exception:
            logger.exception("lorabench: saving the results of job %s failed", job_id)
        finally:
            self._inflight.pop(job_id, None)
            slots.release()

    def _on_cancel(self, job_id: str) -> None:
        attempt = self._inflight.get(job_id)
        if attempt is not None:
            attempt.cancel()

    # ------------------------------------------------------------------ deliveries

    def deliver(self, records: list[ResultRecord]) -> None:
        """Run the sinks for new results in the background."""
        if self.sinks and records:
            task = asyncio.create_task(self._deliver(records))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, records: list[ResultRecord]) -> None:
        assert self._delivery_slots is not None
        async with self._delivery_slots:
            for record in records:
                for sink in self.sinks:
                    try:
                        outcome = await sink.deliver(record)
                    except Exception as exc:
                        outcome = Delivery(ok=False, attempts=1, detail=f"{type(exc).__name__}: {exc}"[:500])
                    if not outcome.ok:
                        logger.warning(
                            "lorabench: sink %s failed for result %s: %s", sink.name, record.id, outcome.detail
                        )
                    try:
                        await asyncio.to_thread(
                            self.history.record_delivery,
                            record.id,
                            sink.name,
                            ok=outcome.ok,
                            attempts=outcome.attempts,
                            detail=outcome.detail,
                        )
                    except Exception:
                        logger.exception("lorabench: could not record a delivery of result %s", record.id)
