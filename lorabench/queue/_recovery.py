"""Recovery after a kernel restart or a killed worker: nothing is lost, nothing runs twice silently.

A running job whose lease expired (or whose worker process on this host is gone) is settled:

- results were already recorded for it → ``succeeded`` (the worker died just before saying so);
- it had a cancel request → ``cancelled``;
- the POST was never sent (``submitted_at`` unset) → back to ``queued`` (nothing ran);
- otherwise → ``interrupted``: the generation may have run, so it is not sent again unless the
  user resumes it.

Then the results folder is swept (:func:`lorabench.queue._results.sweep`).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from lorabench.catalog._history import History
from lorabench.queue._jobs import Job
from lorabench.queue._results import sweep
from lorabench.queue._store import JobStore

__all__ = ["recover", "settle_expired"]


def settle_expired(store: JobStore, history: History, job: Job, has_results: bool) -> bool:
    """Move one expired running job to where it belongs; False if it changed meanwhile."""
    who = job.worker_id or "?"
    if has_results:
        ids = [r.id for r in history.for_job(job.id)]
        return store.settle(
            job.id,
            ["running"],
            "succeeded",
            worker_id=job.worker_id,
            result_ids=ids,
            detail=f"worker {who} stopped after recording the results",
        )
    if job.cancel_requested:
        return store.settle(
            job.id,
            ["running"],
            "cancelled",
            worker_id=job.worker_id,
            detail=f"worker {who} stopped; the job was cancelled",
        )
    if job.submitted_at is None:
        return store.retry(
            job.id,
            who,
            delay=0,
            refund=True,
            error_code="worker_lost",
            error=f"worker {who} stopped before sending the job; queued again",
        )
    return store.settle(
        job.id,
        ["running"],
        "interrupted",
        worker_id=job.worker_id,
        detail=f"worker {who} stopped (lease expired) while the generation may have been running; "
        "it was not sent again — resume the job to run it once more",
    )


def recover(
    store: JobStore,
    history: History,
    results_dir: Path,
    *,
    exclude: Collection[str] = (),
    sweep_results: bool = True,
) -> list[Job]:
    """Settle expired jobs (except ``exclude``: this process's own), then sweep; returns changed jobs."""
    expired = [j for j in store.expired() if j.id not in exclude]
    changed: list[str] = []
    if expired:
        have = history.jobs_with_results([j.id for j in expired])
        changed += [j.id for j in expired if settle_expired(store, history, j, j.id in have)]
    if sweep_results:
        changed += sweep(results_dir, store, history).jobs_adopted
    return [store.get(job_id) for job_id in dict.fromkeys(changed)]
