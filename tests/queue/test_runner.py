"""The queue's runner against real stand-in servers on loopback: dispatch, retries, cancel, progress."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from lorabench.catalog import Catalog
from lorabench.queue import JobEvent, Queue, RetryPolicy
from lorabench.sdnext import StandinServer, Txt2ImgRequest

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, down_min=0.2, down_max=0.5, settle_timeout=10)
TXT2IMG = "/sdapi/v1/txt2img"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def servers():
    started: list[StandinServer] = []

    def make(**options) -> StandinServer:
        srv = StandinServer(**options).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def make_queue(tmp_path):
    made: list[Queue] = []

    def make(backends, name: str = "q", **options) -> Queue:
        options.setdefault("retry", FAST)
        options.setdefault("lease_s", 5.0)
        catalog = options.pop("catalog", None) or Catalog(":memory:")
        q = Queue(catalog, backends, path=tmp_path / f"{name}.sqlite", results_dir=tmp_path / f"{name}-results",
                  **options)  # fmt: skip
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


def req(i: int, steps: int = 3, **extra) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt=f"picture {i}", seed=i, width=64, height=64, steps=steps, **extra)


def events_of(q: Queue, job_id: str) -> list[str]:
    return [e["event"] for e in q.log(job_id)]


async def _timed_batch(q: Queue, first: int, count: int, steps: int) -> float:
    jobs = [q.submit(req(i, steps)) for i in range(first, first + count)]
    started = time.perf_counter()
    async with q:
        done = await q.wait_all([j.id for j in jobs], timeout=60)
    assert {j.state for j in done} == {"succeeded"}
    return time.perf_counter() - started


@pytest.mark.anyio
async def test_two_backends_share_the_work_with_about_double_throughput(servers, make_queue):
    one = servers(step_time=0.02)
    a, b = servers(step_time=0.02), servers(step_time=0.02)
    single = await _timed_batch(make_queue([one.url], name="one"), 0, 8, 10)
    double = await _timed_batch(make_queue([a.url, b.url], name="two"), 100, 8, 10)
    assert len(a.generation_log) >= 3 and len(b.generation_log) >= 3
    assert len(a.generation_log) + len(b.generation_log) == 8
    assert single / double > 1.6, (single, double)


@pytest.mark.anyio
async def test_duplicate_submission_generates_once(servers, make_queue):
    srv = servers()
    q = make_queue([srv.url])
    first = q.submit(req(1))
    assert q.submit(req(1)).id == first.id
    async with q:
        job = await q.wait(first.id, timeout=20)
        assert q.submit(req(1)).id == first.id  # also after it ran
        await asyncio.sleep(0.3)
    assert job.state == "succeeded" and len(srv.generation_log) == 1
    assert len(q.results(first.id)) == 1
    assert job.queue_wait_s is not None and job.generation_s and job.total_s


@pytest.mark.anyio
async def test_cancel_queued_and_running(servers, make_queue, tmp_path):
    srv = servers(step_time=0.05)
    q = make_queue([srv.url])
    long = q.submit(req(1, steps=60))  # about 3 s
    behind = q.submit(req(2, steps=60))
    async with q:
        async for ev in q.watch(long.id):
            if ev.kind == "progress" and (ev.step or 0) >= 3:
                break
        assert q.cancel(behind.id).state == "cancelled"
        flagged = q.cancel(long.id)
        assert flagged.state == "running" and flagged.cancel_requested
        t0 = time.monotonic()
        done = await q.wait(long.id, timeout=10)
        assert time.monotonic() - t0 < 2.5
    assert done.state == "cancelled" and q.get(behind.id).state == "cancelled"
    (start, end), *rest = srv.generation_log
    assert not rest, "the queued job never ran"
    assert end - start < 2.5, "the server saw the interrupt and stopped early"
    assert q.history.count(job_id=long.id) == 0 and q.history.count(job_id=behind.id) == 0
    assert not list((tmp_path / "q-results").rglob("*.jpg"))
    assert "cancel-requested" in events_of(q, long.id)


@pytest.mark.anyio
async def test_retry_on_503_then_success(servers, make_queue):
    srv = servers()
    srv.inject("status503", times=2, path=TXT2IMG)
    q = make_queue([srv.url])
    job = q.submit(req(1))
    async with q:
        done = await q.wait(job.id, timeout=20)
    assert done.state == "succeeded" and done.attempt == 3
    assert events_of(q, job.id).count("retry") == 2
    assert len(srv.generation_log) == 1


@pytest.mark.anyio
async def test_429_honours_retry_after(servers, make_queue):
    srv = servers()
    srv.inject("status429", times=1, path=TXT2IMG)
    q = make_queue([srv.url])
    job = q.submit(req(1))
    async with q:
        done = await q.wait(job.id, timeout=20)
    assert done.state == "succeeded" and done.attempt == 2
    log = q.log(job.id)
    retried = next(e["at"] for e in log if e["event"] == "retry")
    reclaimed = [e["at"] for e in log if e["event"] == "claimed"][1]
    assert reclaimed - retried >= 0.95  # the stand-in says Retry-After: 1


@pytest.mark.anyio
async def test_validation_error_fails_after_one_attempt(servers, make_queue):
    srv = servers()
    q = make_queue([srv.url])
    job = q.submit(req(1, extra_fields={"steps": "abc"}))
    async with q:
        done = await q.wait(job.id, timeout=20)
    assert done.state == "failed" and done.attempt == 1 and done.error_code == "bad_request"
    assert "steps" in done.error
    assert srv.generation_log == []


@pytest.mark.anyio
async def test_always_503_fails_after_max_attempts_and_500_at_once(servers, make_queue):
    srv = servers()
    srv.inject("status503", times=50, path=TXT2IMG)
    q = make_queue([srv.url], retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, down_min=0.05))
    job = q.submit(req(1))
    async with q:
        done = await q.wait(job.id, timeout=20)
        assert done.state == "failed" and done.attempt == 3 and "after 3 attempts" in done.error
        assert events_of(q, job.id).count("sent") == 3
        srv.clear_faults()
        srv.inject("error500", times=1, path=TXT2IMG)
        crashed = await q.wait(q.submit(req(2)).id, timeout=20)
    assert crashed.state == "failed" and crashed.attempt == 1


@pytest.mark.anyio
async def test_disconnect_mid_response_is_not_resent(servers, make_queue):
    srv = servers()
    srv.inject("disconnect", times=1, path=TXT2IMG)
    q = make_queue([srv.url])
    job = q.submit(req(1))
    async with q:
        done = await q.wait(job.id, timeout=20)
        assert done.state == "interrupted" and done.attempt == 1
        assert "not sent again" in done.error and "idle" in done.error
        assert len(srv.generation_log) == 1 and events_of(q, job.id).count("sent") == 1
        await asyncio.sleep(0.3)
        assert len(srv.generation_log) == 1, "an interrupted job is never re-sent by itself"
        q.resume(job.id)
        resumed = await q.wait(job.id, timeout=20)
    assert resumed.state == "succeeded" and len(srv.generation_log) == 2


@pytest.mark.anyio
async def test_deadline_interrupts_the_server_and_the_next_job_runs(servers, make_queue):
    srv = servers(step_time=0.05)
    q = make_queue([srv.url])
    slow = q.submit(req(1, steps=60), timeout=0.6)
    after = q.submit(req(2))
    async with q:
        done = await q.wait(slow.id, timeout=20)
        nxt = await q.wait(after.id, timeout=20)
    assert done.state == "interrupted" and done.error_code == "deadline"
    assert nxt.state == "succeeded"
    start, end = srv.generation_log[0]
    assert end - start < 2.0, "the timed-out generation was interrupted on the server"


@pytest.mark.anyio
async def test_refused_backend_is_marked_down_and_the_other_goes_on(servers, make_queue):
    dead = servers()
    dead_url = dead.url
    dead.stop()
    good = servers()
    q = make_queue([dead_url, good.url])
    jobs = [q.submit(req(i)) for i in range(6)]
    async with q:
        done = await q.wait_all([j.id for j in jobs], timeout=30)
        status = {s.url: s for s in q.backends()}
    assert {j.state for j in done} == {"succeeded"}
    assert all(j.attempt == 1 for j in done), "a refused connection does not use up an attempt"
    assert len(good.generation_log) == 6
    assert status[dead_url].state == "down" and status[dead_url].last_error
    assert status[good.url].state == "up" and status[good.url].jobs_done == 6
    assert any("requeued" in events_of(q, j.id) for j in jobs)


@pytest.mark.anyio
async def test_progress_stream_callbacks_and_previews(servers, make_queue):
    srv = servers(step_time=0.05)
    q = make_queue([srv.url], previews=True)
    seen: list[JobEvent] = []
    unsubscribe = q.on_progress(seen.append)
    streamed: list[JobEvent] = []

    async def consume() -> None:
        async for ev in q.events():
            streamed.append(ev)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)  # the stream subscribes when iteration starts
    job = q.submit(req(1, steps=40))
    async with q:
        watched = [ev async for ev in q.watch(job.id)]
    await asyncio.sleep(0.05)
    consumer.cancel()
    unsubscribe()
    progress = [e for e in seen if e.kind == "progress"]
    sampling = [e for e in progress if e.phase == "Inference"]  # SD.Next reports progress per phase
    assert len(sampling) >= 2
    assert all(0 < (e.fraction or 0) <= 1 and e.steps == 40 and 0 < (e.step or 0) <= 40 for e in sampling)
    assert all(e.eta is not None and e.eta >= 0 for e in sampling)
    assert any(e.preview and e.preview.startswith(b"\xff\xd8") for e in sampling)
    gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
    assert min(gaps) >= 0.45, "at most two polls a second"
    assert [e.kind for e in seen if e.kind != "progress"] == ["queued", "running", "succeeded"]
    assert [e.kind for e in streamed if e.kind != "progress"] == ["queued", "running", "succeeded"]
    assert watched[-1].kind == "succeeded" and watched[-1].paths
    assert q.get(job.id).progress == 1.0


@pytest.mark.anyio
async def test_model_still_loading_is_retried(servers, make_queue):
    srv = servers()
    srv.set_model_loading(True)
    q = make_queue([srv.url], retry=RetryPolicy(max_attempts=8, base_delay=0.2, max_delay=0.4))
    job = q.submit(req(1))
    async with q:
        await asyncio.sleep(0.5)
        srv.set_model_loading(False)
        done = await q.wait(job.id, timeout=20)
    assert done.state == "succeeded" and done.attempt >= 2


def test_start_without_a_loop_runs_in_a_thread(servers, make_queue):
    srv = servers()
    q = make_queue([srv.url])
    runner = q.start()
    assert isinstance(runner, threading.Thread)
    job = q.submit(req(1))
    deadline = time.monotonic() + 20
    while q.get(job.id).state != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert q.get(job.id).state == "succeeded"
    q.close()
    assert not runner.is_alive()


@pytest.mark.anyio
async def test_credentials_come_from_the_environment_only(servers, make_queue, tmp_path, monkeypatch):
    srv = servers(auth=("alice", "pw-from-env-123"))
    monkeypatch.setenv("SDNEXT_USER", "alice")
    monkeypatch.setenv("SDNEXT_PASSWORD", "pw-from-env-123")
    q = make_queue([srv.url])
    job = q.submit(req(1))
    async with q:
        assert (await q.wait(job.id, timeout=20)).state == "succeeded"
    monkeypatch.delenv("SDNEXT_USER")
    monkeypatch.delenv("SDNEXT_PASSWORD")
    unauthenticated = make_queue([srv.url], name="anon")
    refused = unauthenticated.submit(req(2))
    async with unauthenticated:
        failed = await unauthenticated.wait(refused.id, timeout=20)
    assert failed.state == "failed" and failed.error_code == "auth" and failed.attempt == 1
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("*.sqlite*"))
    assert b"pw-from-env-123" not in stored
