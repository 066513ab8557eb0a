"""``lorabench worker`` and ``lorabench generate``: the generation queue from a shell.

``worker`` runs the dispatcher (``asyncio.run``) against one or more SD.Next servers until
Ctrl-C, or with ``--once`` until no job is left. ``generate`` submits one job; with ``--wait``
it follows the job to its end (a live worker runs it, or — when none is running — this
command runs it itself) and prints the result paths. Credentials come only from
``SDNEXT_USER`` / ``SDNEXT_PASSWORD``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from lorabench.errors import ConfigError

__all__ = ["register"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", metavar="FILE", default=None, help="queue file (default: $LORABENCH_HOME/queue.sqlite)")
    p.add_argument(
        "--catalog",
        metavar="FILE",
        default=None,
        help="catalog file (default: $LORABENCH_CATALOG or $LORABENCH_HOME/catalog.duckdb)",
    )
    p.add_argument("--results", metavar="DIR", default=None, help="results folder (default: $LORABENCH_HOME/results)")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run the generation queue against SD.Next servers",
        description="Take jobs from the queue and run them on SD.Next, one at a time per server, until "
        "Ctrl-C (or, with --once, until no job is left). Jobs a killed worker left behind are recovered "
        "when a worker starts: never-sent ones run, possibly-sent ones become 'interrupted'.",
    )
    p.add_argument(
        "--backend",
        metavar="URL",
        action="append",
        default=[],
        help="an SD.Next server (repeat for several; default: $SDNEXT_URL or http://127.0.0.1:7860)",
    )
    p.add_argument("--once", action="store_true", help="stop when no job is left to run")
    p.add_argument("--status", action="store_true", help="print job counts and live workers as JSON, then exit")
    p.add_argument("--lease", type=float, default=30.0, metavar="S", help="job lease in seconds (default: 30)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _common(p)
    p.set_defaults(func=run_worker)

    p = sub.add_parser(
        "generate",
        help="queue a txt2img job (and optionally wait for its images)",
        description="Queue one txt2img job. The same request with the same seed returns the existing job. "
        "With --wait, follow it to the end and print the image paths (exit 1 unless it succeeded).",
    )
    p.add_argument("--prompt", required=True, help="the prompt")
    p.add_argument(
        "--lora",
        metavar="NAME:WEIGHT",
        action="append",
        default=[],
        help="add <lora:NAME:WEIGHT> to the prompt (repeatable; weight defaults to 1)",
    )
    p.add_argument("--negative", default="", help="the negative prompt")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the server's)")
    p.add_argument("--seed", type=int, default=-1, help="seed (default: a random one, fixed at submission)")
    p.add_argument("--width", type=int, default=None, help="image width")
    p.add_argument("--height", type=int, default=None, help="image height")
    p.add_argument("--cfg", type=float, default=None, help="CFG scale")
    p.add_argument("--sampler", default=None, help="sampler name as the server spells it")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default: 0)")
    p.add_argument("--backend", metavar="URL", default=None, help="run it on this server only")
    p.add_argument("--wait", action="store_true", help="wait for the job, printing progress and the result paths")
    p.add_argument("--json", action="store_true", help="print the job (and results) as JSON")
    _common(p)
    p.set_defaults(func=run_generate)


def _open_queue(args: argparse.Namespace, backends: list[str] | None, **options: Any) -> Any:
    from lorabench.catalog import Catalog
    from lorabench.queue import Queue

    return Queue(Catalog(args.catalog), backends or None, path=args.queue, results_dir=args.results, **options)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _describe(ev: Any) -> str:
    if ev.kind == "progress":
        steps = f" step {ev.step}/{ev.steps}" if ev.steps else ""
        eta = f" eta {ev.eta:.1f}s" if ev.eta else ""
        return f"job {ev.job_id}: {ev.phase or 'running'} {100 * (ev.fraction or 0):.0f}%{steps}{eta}"
    text = f"job {ev.job_id}: {ev.kind}"
    if ev.backend and ev.kind == "running":
        text += f" on {ev.backend}"
    if ev.retry_in is not None:
        text += f" (retry in {ev.retry_in:.1f}s)"
    if ev.error and ev.kind in ("failed", "interrupted", "retrying"):
        text += f": {ev.error}"
    return text


def run_worker(args: argparse.Namespace) -> int:
    """``lorabench worker``."""
    if args.lease <= 1:
        raise ConfigError("--lease must be more than 1 second")
    queue = _open_queue(args, args.backend, lease_s=args.lease)
    try:
        if args.status:
            doc = {"path": queue.path, "counts": queue.counts(), "workers": queue.store.live_workers(2 * args.lease)}
            json.dump(doc, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
            return 0
        if not args.quiet:
            queue.on_progress(lambda ev: ev.kind == "progress" or _say(_describe(ev)))
            urls = ", ".join(b.url for b in queue.backends())
            _say(f"lorabench worker {queue.worker_id}: {urls}; queue {queue.path}{' (once)' if args.once else ''}")
        queue.run(once=args.once)
        if not args.quiet:
            _say(f"done: {json.dumps(queue.counts())}")
        return 0
    finally:
        queue.close()
        queue.catalog.close()


def _parse_loras(items: list[str]) -> list[tuple[str, float]]:
    loras = []
    for item in items:
        name, sep, weight = item.rpartition(":")
        if not sep:
            name, weight = item, "1"
        try:
            loras.append((name.strip(), float(weight)))
        except ValueError:
            raise ConfigError(f"--lora {item!r}: the weight must be a number, as in NAME:0.8") from None
    return loras


def run_generate(args: argparse.Namespace) -> int:
    """``lorabench generate``."""
    from lorabench.queue import build_prompt
    from lorabench.sdnext import Txt2ImgRequest

    try:
        request = Txt2ImgRequest(
            prompt=build_prompt(args.prompt, _parse_loras(args.lora)),
            negative_prompt=args.negative,
            steps=args.steps,
            seed=args.seed,
            width=args.width,
            height=args.height,
            cfg_scale=args.cfg,
            sampler_name=args.sampler,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    queue = _open_queue(args, [args.backend] if args.backend else None)
    try:
        job = queue.submit(request, backend=args.backend, priority=args.priority)
        _say(f"job {job.id}: {job.state} (seed {job.seed})")
        if args.wait and not job.settled:
            job = asyncio.run(_follow(queue, job.id))
        results = queue.results(job.id) if job.state == "succeeded" else []
        if args.json:
            doc = {
                "job": {k: v for k, v in vars(job).items() if k != "request"} | {"prompt": job.prompt},
                "results": [r.path for r in results],
            }
            json.dump(doc, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        elif args.wait:
            for record in results:
                print(record.path)
        else:
            print(job.id)
        if args.wait and job.state != "succeeded":
            _say(f"job {job.id} ended {job.state}: {job.error or ''}".rstrip(": "))
            return 1
        return 0
    finally:
        queue.close()
        queue.catalog.close()


async def _follow(queue: Any, job_id: str) -> Any:
    """Print the job's events until it settles; run it here when no live worker can."""
    job = queue.get(job_id)
    stale = 2 * queue._runner.config.lease_s
    serving = [
        w for w in queue.store.live_workers(stale) if not job.pinned_backend or job.pinned_backend in w["backends"]
    ]
    task = None
    if not serving:
        _say(f"job {job_id}: no worker is running; running it here")
        task = asyncio.create_task(queue.serve())
    try:
        async for ev in queue.watch(job_id):
            _say(_describe(ev))
    finally:
        if task is not None:
            await queue.stop()
            await asyncio.gather(task, return_exceptions=True)
    return queue.get(job_id)
