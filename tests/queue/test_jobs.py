"""The job store, request canonicalisation and the retry policy, without any server."""

from __future__ import annotations

import random
import sqlite3
import threading

import httpx
import pytest

from lorabench.catalog import Catalog
from lorabench.errors import (
    BadRequestError,
    DeadlineExceededError,
    JobNotFoundError,
    ModelNotLoadedError,
    ProtocolError,
    QueueError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    ServerUnavailableError,
    UnknownSamplerError,
)
from lorabench.queue import Queue, RetryPolicy, build_prompt, job_key
from lorabench.queue._request import canonical_request, request_from_json
from lorabench.queue._retry import classify
from lorabench.queue._store import JobStore
from lorabench.sdnext import Img2ImgRequest, Txt2ImgRequest

SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture
def queue(tmp_path):
    q = Queue(Catalog(":memory:"), ["http://127.0.0.1:9"], path=tmp_path / "q.sqlite", results_dir=tmp_path / "r")
    yield q
    q.close()


def test_submit_is_durable_and_idempotent(tmp_path, queue):
    job = queue.submit(Txt2ImgRequest(prompt="a cat", seed=7, **SMALL), priority=3)
    assert job.state == "queued" and job.seed == 7 and job.priority == 3
    again = queue.submit(Txt2ImgRequest(prompt="a cat", seed=7, **SMALL))
    assert again.id == job.id
    assert queue.submit(Txt2ImgRequest(prompt="a cat", seed=8, **SMALL)).id != job.id
    # a second connection (another process would do the same) sees the job at once
    other = JobStore(tmp_path / "q.sqlite")
    assert other.get(job.id).key == job.key
    assert other.log(job.id)[0]["event"] == "submitted"
    other.close()
    conn = sqlite3.connect(tmp_path / "q.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_random_seed_is_fixed_at_submission(queue):
    job = queue.submit(Txt2ImgRequest(prompt="a dog", seed=-1, **SMALL))
    assert 0 <= job.seed < 2**32 and job.request["seed"] == job.seed
    assert job.key == job_key("txt2img", job.request)
    assert queue.submit(Txt2ImgRequest(prompt="a dog", seed=job.seed, **SMALL)).id == job.id
    # two "random" submissions are two different pictures
    assert queue.submit(Txt2ImgRequest(prompt="a dog", seed=-1, **SMALL)).id != job.id


def test_canonical_request_round_trip():
    kind, data, seed = canonical_request(
        Txt2ImgRequest(prompt="x", seed=5, override_settings={"b": 1, "a": 2}, extra_fields={"enable_hr": False})
    )
    assert (kind, seed) == ("txt2img", 5)
    rebuilt = request_from_json(kind, data)
    assert rebuilt == Txt2ImgRequest(prompt="x", seed=5, override_settings={"a": 2, "b": 1},
                                     extra_fields={"enable_hr": False})  # fmt: skip
    kind, data, _ = canonical_request(Img2ImgRequest(prompt="y", seed=1, init_images=[b"\x89PNGabc"], mask=b"m"))
    assert kind == "img2img" and request_from_json(kind, data).init_images == [b"\x89PNGabc"]
    assert request_from_json(kind, data).mask == b"m"
    with pytest.raises(QueueError, match="damaged"):
        request_from_json(kind, {**data, "init_images": ["not base64!"]})
    with pytest.raises(QueueError, match="Unknown job kind"):
        request_from_json("upscale", data)
    assert canonical_request({"prompt": "z", "seed": 3, "steps": 4})[1]["steps"] == 4
    assert canonical_request("just a prompt")[1]["prompt"] == "just a prompt"
    # key order and whitespace do not matter; any field does
    a = job_key("txt2img", {"prompt": "p", "seed": 1, "steps": 2})
    assert a == job_key("txt2img", {"steps": 2, "seed": 1, "prompt": "p"})
    assert a != job_key("txt2img", {"steps": 3, "seed": 1, "prompt": "p"})
    assert a != job_key("img2img", {"prompt": "p", "seed": 1, "steps": 2})


def test_build_prompt():
    assert build_prompt("a cat", [("ink", 0.8), ("x.v2", 1)]) == "a cat <lora:ink:0.8> <lora:x.v2:1>"
    with pytest.raises(QueueError):
        build_prompt("a", [("bad>name", 1)])


def test_claims_are_exclusive_across_connections(tmp_path):
    """Two connections (as two processes would) and eight threads claim 120 jobs: each exactly once."""
    path = tmp_path / "q.sqlite"
    stores = [JobStore(path), JobStore(path)]
    for i in range(120):
        stores[0].submit(f"{i:016x}", f"k{i}", "txt2img", '{"prompt": "p"}', i, priority=i % 3, pinned_backend=None,
                         max_attempts=3, timeout=None)  # fmt: skip
    claimed: list[str] = []
    lock = threading.Lock()

    def claim(store: JobStore, worker: str) -> None:
        while (job := store.claim(worker, "http://b", 30)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim, args=(stores[i % 2], f"h:1:{i}")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(f"{i:016x}" for i in range(120))
    assert stores[1].counts()["running"] == 120
    for store in stores:
        store.close()


def test_claim_order_priority_pin_and_not_before(tmp_path):
    store = JobStore(tmp_path / "q.sqlite")
    for name, priority, pin in (("a" * 16, 0, None), ("b" * 16, 5, None), ("c" * 16, 9, "http://other")):
        store.submit(name, name, "txt2img", "{}", 1, priority=priority, pinned_backend=pin, max_attempts=2,
                     timeout=None)  # fmt: skip
    first = store.claim("h:1:x", "http://mine", 30)
    assert first is not None and first.id == "b" * 16 and first.attempt == 1
    assert store.mark_submitted(first.id, "h:1:x")
    assert store.retry(first.id, "h:1:x", delay=60, refund=False, error_code="http_503", error="busy")
    second = store.claim("h:1:x", "http://mine", 30)
    assert second is not None and second.id == "a" * 16  # b waits for its retry; c is pinned elsewhere
    assert store.claim("h:1:x", "http://mine", 30) is None
    assert store.claim("h:1:y", "http://other", 30).id == "c" * 16
    assert not store.mark_submitted(second.id, "h:1:someone-else")
    assert store.finish(second.id, "h:1:someone-else", "succeeded") is None
    assert store.finish(second.id, "h:1:x", "succeeded", result_ids=[4]) == "succeeded"
    assert store.get(second.id).result_ids == [4]
    store.close()


def test_cancel_resume_and_not_found(queue):
    job = queue.submit(Txt2ImgRequest(prompt="c", seed=1, **SMALL))
    assert queue.cancel(job.id).state == "cancelled"
    assert queue.cancel(job.id).state == "cancelled"  # idempotent
    resumed = queue.resume(job.id)
    assert resumed.state == "queued" and resumed.attempt == 0 and not resumed.cancel_requested
    with pytest.raises(QueueError, match="only interrupted"):
        queue.resume(job.id)
    with pytest.raises(JobNotFoundError):
        queue.get("0" * 16)
    with pytest.raises(JobNotFoundError):
        queue.cancel("0" * 16)
    assert [e["event"] for e in queue.log(job.id)] == ["submitted", "cancelled", "resumed"]
    assert queue.counts()["queued"] == 1
    assert [j.id for j in queue.jobs("queued")] == [job.id]
    with pytest.raises(ValueError, match="unknown state"):
        queue.jobs("done")


def test_credentials_never_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("SDNEXT_USER", "alice")
    monkeypatch.setenv("SDNEXT_PASSWORD", "s3cret-pw-xyz")
    path = tmp_path / "q.sqlite"
    q = Queue(Catalog(":memory:"), ["http://bob:other-pw-abc@127.0.0.1:9"], path=path, results_dir=tmp_path / "r")
    job = q.submit(Txt2ImgRequest(prompt="p", seed=1), backend="http://bob:other-pw-abc@127.0.0.1:9/")
    assert job.pinned_backend == "http://127.0.0.1:9"
    assert q.backends()[0].url == "http://127.0.0.1:9"
    q.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("q.sqlite*"))
    assert b"s3cret-pw-xyz" not in blob and b"other-pw-abc" not in blob and b"alice" not in blob


def test_retry_policy_backoff():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(0)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        waits = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert cap / 2 <= min(waits) and max(waits) <= cap
        assert max(waits) - min(waits) > cap / 4  # jittered
    assert policy.delay(1, retry_after=5.0) >= 5.0
    assert 5 * 0.8 <= RetryPolicy(down_min=5, down_max=30).down_delay(1, rng) <= 5 * 1.2
    assert RetryPolicy(down_min=5, down_max=30).down_delay(9, rng) <= 30 * 1.2
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def _unavailable(cause: BaseException) -> ServerUnavailableError:
    try:
        raise ServerUnavailableError("POST /sdapi/v1/txt2img: cannot connect") from cause
    except ServerUnavailableError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (_unavailable(httpx.ConnectError("refused")), "not_sent"),
        (_unavailable(httpx.RemoteProtocolError("closed")), "unknown"),
        (RateLimitedError("POST /sdapi/v1/txt2img answered 429", retry_after=2.0), "transient"),
        (ServerError("POST /sdapi/v1/txt2img answered 503: server not ready"), "transient"),
        (ServerError("POST /sdapi/v1/txt2img answered 502"), "transient"),
        (ServerError("POST /sdapi/v1/txt2img answered 500: boom"), "final"),
        (ModelNotLoadedError("no images"), "transient"),
        (BadRequestError("POST /sdapi/v1/txt2img answered 422: steps"), "final"),
        (UnknownSamplerError("answered 404: Sampler not found"), "final"),
        (ResponseTooLargeError("too big"), "final"),
        (DeadlineExceededError("did not complete"), "unknown"),
        (ProtocolError("the connection broke off mid-response"), "unknown"),
        (RuntimeError("bug"), "final"),
    ],
)
def test_classify(exc, outcome):
    verdict = classify(exc)
    assert verdict.outcome == outcome
    if isinstance(exc, RateLimitedError):
        assert verdict.retry_after == 2.0
