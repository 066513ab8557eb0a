"""One attempt at one job on one backend: send, watch, cancel, and settle what came back.

The generation POST is never re-sent blindly: ``submitted_at`` is stored before it goes out,
and an outcome that may mean "it ran" (timeout, disconnect, truncated answer) ends the job
``interrupted`` after a look at the server's ``/progress``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from lorabench.errors import LorabenchError, QueueError
from lorabench.queue._backends import Backend
from lorabench.queue._events import JobEvent
from lorabench.queue._jobs import Job
from lorabench.queue._request import request_from_json
from lorabench.queue._results import write_images
from lorabench.queue._retry import Verdict, classify
from lorabench.sdnext import GenerationResult, Img2ImgRequest

if TYPE_CHECKING:
    from lorabench.queue._runner import Runner

__all__ = ["Attempt"]

logger = logging.getLogger("lorabench.queue")


class Attempt:
    """A claimed job being run by ``runner`` on ``backend``."""

    def __init__(self, runner: Runner, backend: Backend, job: Job) -> None:
        self.runner = runner
        self.store = runner.store
        self.job = job
        self.backend = backend
        self.sent = False
        self.done = False
        self.cancelled = False
        self.interrupter: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the run

    async def run(self) -> Coroutine[Any, Any, None] | None:
        """Send the job and settle it; after a successful generation, return the coroutine that
        saves its results (the runner runs it in the background so the backend can take its next
        job meanwhile — the job stays ``running``, under its lease, until its results are recorded)."""
        job = self.job
        self.runner.emit(JobEvent.of(job, "running"))
        try:
            request = request_from_json(job.kind, job.request)
        except (LorabenchError, TypeError, ValueError) as exc:
            await self.end("failed", "bad_request", f"the stored request is unusable: {exc}")
            return None
        if self.cancelled or not await self.runner.db(self.store.mark_submitted, job.id, self.runner.worker_id):
            await self.end("cancelled", None, None)
            return None
        self.sent = True
        poller = asyncio.create_task(self._poll()) if self.runner.config.progress_interval > 0 else None
        started = time.perf_counter()
        result: GenerationResult | None = None
        error: Exception | None = None
        timeout = job.timeout or self.runner.config.job_timeout
        try:
            if isinstance(request, Img2ImgRequest):
                result = await self.backend.api.img2img(request, timeout=timeout)
            else:
                result = await self.backend.api.txt2img(request, timeout=timeout)
        except Exception as exc:
            error = exc
        finally:
            self.done = True
            helpers = [t for t in (poller, self.interrupter) if t is not None]
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        generation_s = time.perf_counter() - started
        if self.cancelled:
            await self.end("cancelled", None, None)
        elif error is not None:
            await self._failed(error)
        else:
            assert result is not None
            self.backend.succeeded()
            return self._succeeded(result, generation_s)
        return None

    def abandon(self) -> None:
        """The runner was stopped hard mid-job (synchronous: the task is being cancelled)."""
        job, worker = self.job, self.runner.worker_id
        try:
            if self.sent:
                message = "the worker stopped while the generation was running; resume to run it again"
                self.store.finish(job.id, worker, "interrupted", error_code="worker_stopped", error=message)
            else:
                message = "the worker stopped before sending the job"
                self.store.retry(job.id, worker, delay=0, refund=True, error_code="worker_stopped", error=message)
            found = self.store.find(job.id)
            if found is not None:
                self.runner.emit(JobEvent.of(found))
        except LorabenchError:
            logger.exception("lorabench: could not release job %s", job.id)

    async def end(self, state: str, code: str | None, message: str | None) -> None:
        """Finish in ``state`` (a cancel request turns it into ``cancelled``) and tell."""
        db = self.runner.db
        await db(self.store.finish, self.job.id, self.runner.worker_id, state, error_code=code, error=message)
        found = await db(self.store.find, self.job.id)
        if found is not None:
            self.runner.emit(JobEvent.of(found))

    # ------------------------------------------------------------------ outcomes

    async def _succeeded(self, result: GenerationResult, generation_s: float) -> None:
        job, backend, runner = self.job, self.backend, self.runner
        try:
            day, files = await asyncio.to_thread(
                write_images, runner.results_dir, job.id, list(result.outputs), list(result.all_seeds)
            )
            records = await asyncio.to_thread(
                runner.history.record,
                job.id,
                job.key,
                job.request,
                files,
                day=day,
                backend=backend.url,
                queue_wait_s=(job.started_at or job.created_at) - job.created_at,
                generation_s=generation_s,
                total_s=time.time() - job.created_at,
            )
        except Exception as exc:
            logger.exception("lorabench: the results of job %s could not be saved", job.id)
            message = (
                f"the generation finished but its results could not be saved ({exc}); files already written "
                "are adopted when a runner starts next"
            )
            await self.end("interrupted", "save_failed", message)
            return
        ids = [r.id for r in records]
        finish = self.store.finish
        if not await runner.db(
            finish, job.id, runner.worker_id, "succeeded", result_ids=ids, generation_s=generation_s
        ):
            # cancelled meanwhile, or the job was taken from us: no result rows may stay
            await asyncio.to_thread(runner.history.delete, ids)
            await self.end("cancelled", None, None)
            return
        found = await runner.db(self.store.get, job.id)
        runner.emit(JobEvent.of(found, paths=tuple(r.path for r in records)))
        runner.deliver(records)

    async def _failed(self, exc: Exception) -> None:
        job, backend, runner = self.job, self.backend, self.runner
        verdict = classify(exc)
        if verdict.backend_fault and backend.fault(verdict.message, immediate=verdict.outcome == "not_sent"):
            logger.warning("lorabench: backend %s marked down: %s", backend.url, verdict.message)
        elif not verdict.backend_fault:
            backend.failures = 0
        if verdict.outcome == "unknown":
            await self._settle_unknown(verdict)
            return
        if verdict.outcome == "final" or (verdict.outcome == "transient" and job.attempt >= job.max_attempts):
            suffix = f" (gave up after {job.attempt} attempts)" if verdict.outcome == "transient" else ""
            await self.end("failed", verdict.code, verdict.message + suffix)
            return
        refund = verdict.outcome == "not_sent"
        if verdict.retry_after is not None:
            backend.pause(verdict.retry_after)
        delay = 0.0 if refund else runner.policy.delay(job.attempt, verdict.retry_after)
        requeued = await runner.db(
            self.store.retry,
            job.id,
            runner.worker_id,
            delay=delay,
            refund=refund,
            error_code=verdict.code,
            error=verdict.message,
        )
        if not requeued:  # a cancel request arrived meanwhile
            await self.end("cancelled", None, None)
            return
        found = await runner.db(self.store.get, job.id)
        runner.emit(JobEvent.of(found, "retrying", retry_in=delay))
        runner.notify()

    async def _settle_unknown(self, verdict: Verdict) -> None:
        """The POST may have run: never re-send it; look at the server, then mark ``interrupted``."""
        backend = self.backend
        note = "the server could not be asked afterwards"
        try:
            progress = await backend.progress()
            if not progress.idle and verdict.code == "deadline":
                await backend.interrupt()
            note = "the server is idle and no result arrived"
            if not progress.idle:
                note = await self._wait_idle()
        except (LorabenchError, TimeoutError):
            backend.go_down("no answer after an interrupted generation")
        message = f"{verdict.message}; {note}; the request was not sent again — resume the job to run it once more"
        await self.end("interrupted", verdict.code, message)

    async def _wait_idle(self) -> str:
        limit = self.runner.policy.settle_timeout
        deadline = time.monotonic() + limit
        idle_reads = 0
        while time.monotonic() < deadline and not self.runner.stopping:
            await asyncio.sleep(0.5)
            idle_reads = idle_reads + 1 if (await self.backend.progress()).idle else 0
            if idle_reads >= 2:  # SD.Next's state flickers to idle between phases: read twice
                return "the server was still busy afterwards (probably finishing this job) and is idle now"
        return f"the server was still busy {limit:g} s later"

    # ------------------------------------------------------------------ progress and cancel

    async def _poll(self) -> None:
        """Poll ``/progress`` (at most twice a second) while the POST is open; publish and store it."""
        config, backend, job = self.runner.config, self.backend, self.job
        interval = max(0.5, config.progress_interval)
        while not self.done:
            await asyncio.sleep(interval)
            try:
                p = await backend.progress(previews=config.previews)
            except (LorabenchError, TimeoutError):
                continue
            if self.done or p.idle or not p.state.job:
                continue
            steps = p.state.sampling_steps or None
            event = JobEvent(
                kind="progress",
                job_id=job.id,
                state="running",
                fraction=p.progress,
                step=p.state.sampling_step,
                steps=steps,
                eta=p.eta_relative,
                phase=p.state.job,
                preview=p.current_image,
                backend=backend.url,
                attempt=job.attempt,
            )
            self.runner.emit(event)
            with contextlib.suppress(QueueError):
                await self.runner.db(
                    self.store.set_progress, job.id, self.runner.worker_id, p.progress, event.step, steps, event.eta
                )

    def cancel(self) -> None:
        """A cancel request: interrupt the server if the POST is open (runs in the runner's loop)."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.sent and not self.done and self.interrupter is None:
            self.interrupter = asyncio.create_task(self._interrupt_until_done())

    async def _interrupt_until_done(self) -> None:
        """Interrupt now, and again while the POST is still open (an interrupt that reaches the
        server before it began the generation is lost)."""
        while not self.done:
            await self.backend.interrupt()
            await asyncio.sleep(1.0)
