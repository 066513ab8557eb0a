"""Benchmark the generation queue against stand-in SD.Next servers on loopback.

The stand-in answers every request ~40 ms late as shipped (Nagle's algorithm on its socket meets
the client's delayed ACK), which swamps millisecond measurements; this benchmark sets
``TCP_NODELAY`` on the stand-in's accepted sockets (as uvicorn does) except for the ``*_asis``
keys, measured without it.

1. Dispatch overhead (goal <= 5 ms): ``--jobs`` jobs through the queue on one stand-in with a short
   fixed generation (``--overhead-step-time``: inference + VAE phase, ~20 ms) versus the same
   requests sent directly with ``SDNextClient``; the difference per job is what the queue adds on
   the backend's critical path (claim, mark sent, POST, hand-off). Saving results (image fsync +
   catalog commit, ``persist_ms_per_job`` alone) overlaps with the backend's next generation.
   ``*_zero`` keys: the same at zero generation time, where saving becomes the limit.
   ``submit_ms_per_job``: one durable SQLite transaction per submitted job.
2. Throughput with 1, 2 and 4 backends at a fixed generation time (``--step-time`` x ``--steps``,
   default 0.01 s x 10): jobs per second and the speed-up over one backend (goal >= 0.9 N).

Prints one JSON line. Usage: python benchmarks/bench_queue.py [--jobs 200] [--per-backend 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from _common import emit, environment, scratch

from lorabench.catalog import Catalog
from lorabench.catalog._history import History
from lorabench.queue import Queue, RetryPolicy
from lorabench.queue._results import write_images
from lorabench.sdnext import SDNextClient, StandinServer, Txt2ImgRequest, _standin_handler


@contextlib.contextmanager
def nodelay() -> Iterator[None]:
    """Set TCP_NODELAY on the stand-in's accepted sockets (as uvicorn does) while inside."""
    original = _standin_handler.Handler.setup

    def setup(self: _standin_handler.Handler) -> None:
        original(self)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    _standin_handler.Handler.setup = setup  # type: ignore[method-assign]
    try:
        yield
    finally:
        _standin_handler.Handler.setup = original  # type: ignore[method-assign]


def request(i: int, steps: int) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt=f"bench {i}", seed=i, width=64, height=64, steps=steps)


async def direct(url: str, count: int, steps: int) -> float:
    """Seconds to run ``count`` generations one after another without the queue."""
    async with SDNextClient(url) as sd:
        await sd.txt2img(request(-1 - 10_000, steps))  # warm: detect the server, open the connection
        started = time.perf_counter()
        for i in range(count):
            await sd.txt2img(request(i, steps))
        return time.perf_counter() - started


async def queued(root: Path, urls: list[str], first: int, count: int, steps: int) -> tuple[float, float]:
    """``(submit seconds, run seconds)`` for ``count`` jobs through a fresh queue on ``urls``."""
    catalog = Catalog(root / "catalog.duckdb")
    q = Queue(catalog, urls, path=root / "queue.sqlite", results_dir=root / "results", retry=RetryPolicy())
    warm = [q.submit(request(first - 1 - i, steps)) for i in range(len(urls))]
    async with q:
        await q.wait_all([j.id for j in warm], timeout=60)
        started = time.perf_counter()
        jobs = [q.submit(request(i, steps)) for i in range(first, first + count)]
        submitted = time.perf_counter()
        done = await q.wait_all([j.id for j in jobs], timeout=600)
        finished = time.perf_counter()
    q.close()
    catalog.close()
    if any(j.state != "succeeded" for j in done):
        raise RuntimeError(f"not every job succeeded: {sorted({j.state for j in done})}")
    return submitted - started, finished - started


async def overhead(root: Path, jobs: int, step_time: float) -> tuple[float, float, float]:
    """``(direct, queued, submit)`` seconds per job on one stand-in with ``step_time``."""
    with StandinServer(step_time=step_time) as srv:
        direct_s = await direct(srv.url, jobs, 1)
        submit_s, queue_s = await queued(root, [srv.url], 1_000_000, jobs, 1)
    return direct_s / jobs, queue_s / jobs, submit_s / jobs


def persist(root: Path, count: int) -> float:
    """Seconds per job to write one image (fsync, rename) and record it in the catalog."""
    with StandinServer() as srv:
        image = asyncio.run(_one_image(srv.url))
    catalog = Catalog(root / "catalog.duckdb")
    history = History(catalog, results_dir=root / "results")
    started = time.perf_counter()
    for i in range(count):
        day, files = write_images(root / "results", f"{i:016x}", [image], [i], day=date.today())
        history.record(f"{i:016x}", f"key{i}", {"prompt": "bench", "seed": i}, files, day=day)
    took = time.perf_counter() - started
    catalog.close()
    return took / count


async def _one_image(url: str) -> object:
    async with SDNextClient(url) as sd:
        return (await sd.txt2img(request(0, 1))).outputs[0]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def main(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {"benchmark": "queue", **environment(), "overhead_jobs": args.jobs}
    with scratch("lorabench-bench-queue-", args.keep) as root:
        with nodelay():
            d, q, submit = await overhead(root / "overhead", args.jobs, args.overhead_step_time)
            dz, qz, _ = await overhead(root / "overhead-zero", args.jobs, 0.0)
        da, qa, _ = await overhead(root / "overhead-asis", args.jobs, args.overhead_step_time)
        result.update({
            "direct_ms_per_job": _ms(d), "queue_ms_per_job": _ms(q), "dispatch_overhead_ms_per_job": _ms(q - d),
            "dispatch_overhead_goal_ms": 5.0, "submit_ms_per_job": _ms(submit),
            "persist_ms_per_job": _ms(await asyncio.to_thread(persist, root / "persist", 100)),
            "direct_ms_per_job_zero": _ms(dz), "queue_ms_per_job_zero": _ms(qz),
            "direct_ms_per_job_asis": _ms(da), "queue_ms_per_job_asis": _ms(qa),
            "dispatch_overhead_ms_per_job_asis": _ms(qa - da),
        })  # fmt: skip
        rates: dict[int, float] = {}
        with nodelay():
            for n in (1, 2, 4):
                servers = [StandinServer(step_time=args.step_time).start() for _ in range(n)]
                try:
                    count = args.per_backend * n
                    urls = [s.url for s in servers]
                    _, took = await queued(root / f"backends{n}", urls, 2_000_000 * n, count, args.steps)
                finally:
                    for srv in servers:
                        srv.stop()
                rates[n] = count / took
        result.update({
            "generation_s": round(args.step_time * args.steps, 3),
            "jobs_per_s": {str(n): round(r, 2) for n, r in rates.items()},
            "speedup": {str(n): round(rates[n] / rates[1], 2) for n in rates},
            "speedup_goal": {str(n): round(0.9 * n, 2) for n in rates},
        })  # fmt: skip
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs for the overhead measurement (default: 200)")
    parser.add_argument("--per-backend", type=int, default=12, help="jobs per backend for throughput (default: 12)")
    parser.add_argument("--overhead-step-time", type=float, default=0.01,
                        help="stand-in seconds per step for the overhead run (default: 0.01)")  # fmt: skip
    parser.add_argument("--step-time", type=float, default=0.01, help="stand-in seconds per step (default: 0.01)")
    parser.add_argument("--steps", type=int, default=10, help="steps per generation (default: 10)")
    parser.add_argument("--keep", metavar="DIR", default=None, help="work in DIR and keep it")
    emit(asyncio.run(main(parser.parse_args())))
