"""Real processes: a worker SIGKILLed mid-job and restarted, the CLI, and a soak with injected faults."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lorabench.catalog import Catalog
from lorabench.queue import SETTLED, Queue, RetryPolicy
from lorabench.sdnext import StandinServer, Txt2ImgRequest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORABENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LORABENCH_CATALOG", raising=False)
    monkeypatch.delenv("SDNEXT_URL", raising=False)
    return tmp_path / "home"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lorabench", *args], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _sigint_default() -> None:
    """In the worker, before exec: Ctrl-C as in a terminal. A test run started in the background (``cmd &``
    in a script) inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_worker(url: str, *extra: str) -> subprocess.Popen[str]:
    # stderr goes to a file, not a pipe nobody reads while the worker runs (a full pipe would stall it)
    log = tempfile.NamedTemporaryFile("w+", prefix="lorabench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "lorabench", "worker", "--backend", url, "--lease", "3", *extra],
        stdout=subprocess.DEVNULL, stderr=log, text=True, cwd=REPO, env={**os.environ},
        preexec_fn=_sigint_default,
    )  # fmt: skip
    log.close()
    worker.log_path = log.name  # type: ignore[attr-defined]
    return worker


def finish(worker: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    """Wait for a worker; its exit status and stderr. A worker that does not end is killed and reported."""
    try:
        rc = worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        pytest.fail(f"the worker did not end within {timeout} s; its stderr:\n{Path(worker.log_path).read_text()}")
    text = Path(worker.log_path).read_text()
    os.unlink(worker.log_path)
    return rc, text


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    stop = time.monotonic() + timeout
    while time.monotonic() < stop:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_killed_worker_loses_nothing_and_never_runs_a_job_twice_silently(home):
    with StandinServer(step_time=0.05) as srv:
        q = Queue(Catalog(), [srv.url])  # the notebook: submits, never runs
        jobs = [q.submit(Txt2ImgRequest(prompt=f"p{i}", seed=i, width=64, height=64, steps=16)) for i in range(5)]
        worker = spawn_worker(srv.url)

        def victim():
            if q.counts()["succeeded"] < 1:
                return None
            running = q.jobs("running")
            return running[0] if running and running[0].submitted_at and (running[0].progress or 0) > 0.1 else None

        killed = wait_for(victim, what="a job in progress after one success")
        worker.send_signal(signal.SIGKILL)
        finish(worker, timeout=10)
        assert q.get(killed.id).state == "running"  # nobody has said anything yet
        # The next kernel (here: this process) finds it at once: the worker's process is gone.
        changed = {j.id: j.state for j in q.recover()}
        assert changed == {killed.id: "interrupted"}
        counts = q.counts()
        assert sum(counts.values()) == 5 and counts["running"] == 0
        assert {j.state for j in q.jobs()} <= {"succeeded", "queued", "interrupted"}

        restarted = spawn_worker(srv.url, "--once")
        rc, err = finish(restarted, timeout=60)
        assert rc == 0, err
        states = {j.id: j.state for j in q.jobs()}
        assert states[killed.id] == "interrupted", "an interrupted job is never re-run by itself"
        assert [s for i, s in states.items() if i != killed.id] == ["succeeded"] * 4
        wait_for(lambda: srv.engine.state.idle(), what="the orphaned generation to end")
        assert len(srv.generation_log) == 5  # four jobs + the one that was running when the worker died

        q.resume(killed.id)
        again = spawn_worker(srv.url, "--once")
        rc, err = finish(again, timeout=60)
        assert rc == 0, err
        assert {j.state for j in q.jobs()} == {"succeeded"}
        assert len(srv.generation_log) == 6  # the resumed job ran once more, because the user asked
        assert all(len(q.results(j.id)) == 1 for j in jobs)
        assert any(e["event"] == "interrupted" for e in q.log(killed.id))
        q.close()
        q.catalog.close()


@pytest.mark.slow
def test_cli_generate_and_worker(home):
    with StandinServer(step_time=0.01) as srv:
        args = ["--prompt", "a cat", "--lora", "ink:0.8", "--steps", "4", "--seed", "3", "--width", "64",
                "--height", "64", "--backend", srv.url]  # fmt: skip
        done = cli("generate", *args, "--wait")
        assert done.returncode == 0, done.stderr
        [path] = done.stdout.split()
        assert Path(path).is_file() and Path(path).is_relative_to(home / "results")
        assert "running it here" in done.stderr and "succeeded" in done.stderr
        again = cli("generate", *args, "--wait")
        assert again.returncode == 0 and again.stdout.split() == [path] and len(srv.generation_log) == 1

        dog = ["--prompt", "a dog", "--seed", "5", "--steps", "2", "--width", "64", "--height", "64"]
        queued = cli("generate", *dog)
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.strip()
        status = json.loads(cli("worker", "--status").stdout)
        assert status["counts"]["queued"] == 1 and status["workers"] == []
        ran = cli("worker", "--backend", srv.url, "--once")
        assert ran.returncode == 0, ran.stderr
        assert f"job {job_id}: succeeded" in ran.stderr
        doc = json.loads(cli("generate", *dog, "--json").stdout)
        assert doc["job"]["id"] == job_id and doc["job"]["state"] == "succeeded"

        worker = spawn_worker(srv.url)  # with a live worker, `generate --wait` only follows the job
        wait_for(lambda: json.loads(cli("worker", "--status").stdout)["workers"], what="the worker to register")
        bird = cli("generate", "--prompt", "a bird", "--seed", "9", "--steps", "2", "--width", "64", "--height", "64",
                   "--wait")  # fmt: skip
        assert bird.returncode == 0 and "running it here" not in bird.stderr and Path(bird.stdout.strip()).is_file()
        worker.send_signal(signal.SIGINT)
        rc, err = finish(worker, timeout=20)
        assert rc == 130, err
        assert json.loads(cli("worker", "--status").stdout)["workers"] == []

        bad = cli("generate", "--prompt", "x", "--lora", "ink:heavy")
        assert bad.returncode == 1 and "weight must be a number" in bad.stderr
        with Catalog() as catalog:
            assert catalog.sql("SELECT count(*) AS n FROM results")[0]["n"] == 3


@pytest.mark.slow
@pytest.mark.anyio
async def test_soak_with_injected_faults(tmp_path):
    """300 jobs on two zero-time stand-ins while faults are injected at random: every job settles,
    every success has exactly one result, and no job was ever sent again after it may have run."""
    faults = ["status503"] * 6 + ["error500"] * 2 + ["disconnect"] * 3 + ["refuse"] * 2 + ["malformed_json"] * 2
    faults += ["status429"]
    policy = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05, down_min=0.05, down_max=0.2)
    rng = random.Random(1)
    with StandinServer() as a, StandinServer() as b:
        q = Queue(Catalog(":memory:"), [a.url, b.url], path=tmp_path / "q.sqlite", results_dir=tmp_path / "r",
                  retry=policy, lease_s=10)  # fmt: skip
        stop = threading.Event()

        def sprinkle() -> None:  # about one request in ten fails one way or another
            while not stop.wait(0.1):
                rng.choice((a, b)).inject(rng.choice(faults), path="/sdapi/v1/txt2img")

        injector = threading.Thread(target=sprinkle, daemon=True)
        jobs = [q.submit(Txt2ImgRequest(prompt=f"soak {i}", seed=i, width=32, height=32, steps=1)) for i in range(300)]
        injector.start()
        try:
            async with q:
                done = await q.wait_all([j.id for j in jobs], timeout=120)
        finally:
            stop.set()
            injector.join()
        states = [j.state for j in done]
        assert set(states) <= SETTLED
        succeeded = [j for j in done if j.state == "succeeded"]
        interrupted = [j for j in done if j.state == "interrupted"]
        assert len(succeeded) > 200, {s: states.count(s) for s in set(states)}
        assert all(len(j.result_ids) == 1 for j in succeeded)
        assert q.history.count() == len(succeeded)
        generations = len(a.generation_log) + len(b.generation_log)
        assert len(succeeded) <= generations <= len(succeeded) + len(interrupted)
        for job in done:
            events = [e["event"] for e in q.log(job.id)]
            sends = [i for i, e in enumerate(events) if e == "sent"]
            for first, second in itertools.pairwise(sends):
                between = events[first:second]
                assert "retry" in between or "requeued" in between, (job.id, events)
        q.close()
