"""Result sinks: the folder sink's path template cannot escape; the webhook sink against a loopback receiver."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lorabench.catalog import Catalog
from lorabench.catalog._history import ResultRecord
from lorabench.queue import Delivery, FolderSink, Queue, RetryPolicy, WebhookSink
from lorabench.sdnext import StandinServer, Txt2ImgRequest


@pytest.fixture
def anyio_backend():
    return "asyncio"


def record(tmp_path, *, lora="ink", prompt="a cat", seed=42, **extra) -> ResultRecord:
    source = tmp_path / "src.jpg"
    source.write_bytes(b"\xff\xd8\xff fake jpeg")
    values = {
        "id": 7, "job_id": "ab" * 8, "job_key": "k", "image_index": 0, "path": str(source), "format": "JPEG",
        "width": 8, "height": 8, "bytes": 14, "content_sha256": "0" * 64, "seed": seed, "prompt": prompt,
        "negative_prompt": "", "request": {}, "infotext": None, "params": {}, "backend": "http://127.0.0.1:7860",
        "day": date(2026, 5, 4), "created_at": datetime(2026, 5, 4, 12, 30, 1),
        "loras": [{"name": lora, "weight": 0.8, "hash": None, "lora_id": None, "matched_by": None}],
    }  # fmt: skip
    values.update(extra)
    return ResultRecord(**values)


def test_folder_sink_template(tmp_path):
    sink = FolderSink(tmp_path / "out")
    assert sink.target_for(record(tmp_path)) == (tmp_path / "out" / "2026-05-04" / "ink" / "42.jpg").resolve()
    custom = FolderSink(tmp_path / "out", "{loras}/{job}_{index}-{time}.{ext}")
    assert custom.target_for(record(tmp_path)).name == f"{'ab' * 8}_0-123001.jpg"


@pytest.mark.parametrize(
    "hostile",
    ["../../etc/passwd", "..", "/etc/cron.d/x", "..\\..\\win", "a/../../b", "\x00nul", "C:\\Windows", " .. "],
)
def test_folder_sink_values_cannot_escape(tmp_path, hostile):
    out = tmp_path / "out"
    for sink in (FolderSink(out), FolderSink(out, "{prompt}/{lora}/{backend}/{seed}.{ext}")):
        target = sink.target_for(record(tmp_path, lora=hostile, prompt=hostile, backend=hostile))
        assert target.is_relative_to(out.resolve())
        assert ".." not in target.relative_to(out.resolve()).parts


@pytest.mark.parametrize(
    "template",
    ["../{seed}.{ext}", "/tmp/{seed}.{ext}", "a/../../{seed}", "C:\\x\\{seed}", "{nope}.png", "{seed!r}", "{seed:>9}"],
)
def test_folder_sink_rejects_bad_templates(tmp_path, template):
    with pytest.raises(ValueError, match=r"placeholder|relative path|format spec"):
        FolderSink(tmp_path / "out", template)


@pytest.mark.anyio
async def test_folder_sink_copies_without_overwriting_and_refuses_symlink_escapes(tmp_path):
    out = tmp_path / "out"
    sink = FolderSink(out)
    first = await sink.deliver(record(tmp_path))
    second = await sink.deliver(record(tmp_path))
    assert first.ok and second.ok and first.detail != second.detail
    assert sorted(p.name for p in (out / "2026-05-04" / "ink").iterdir()) == ["42.jpg", "42_1.jpg"]
    (tmp_path / "outside").mkdir()
    (out / "2026-05-04" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="outside"):
        await sink.deliver(record(tmp_path, lora="link"))
    assert not list((tmp_path / "outside").iterdir())


class Receiver:
    """A tiny loopback HTTP server that records JSON bodies and answers ``status`` after ``delay``."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.bodies: list[dict] = []
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.hits += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.bodies.append(json.loads(body))
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Exploding:
    name = "exploding"

    async def deliver(self, result: ResultRecord) -> Delivery:
        raise RuntimeError("sink bug")


@pytest.mark.anyio
async def test_sinks_run_after_success_and_a_failing_one_never_blocks(tmp_path):
    good, bad = Receiver(), Receiver(status=500, delay=0.3)
    sinks = [
        FolderSink(tmp_path / "copies", "{date}/{lora}/{seed}.{ext}", name="folder"),
        WebhookSink(good.url, name="good-hook"),
        WebhookSink(bad.url, name="bad-hook", attempts=3, base_delay=0.05),
        Exploding(),
    ]
    try:
        with StandinServer() as srv:
            q = Queue(Catalog(":memory:"), [srv.url], path=tmp_path / "q.sqlite", results_dir=tmp_path / "results",
                      sinks=sinks, retry=RetryPolicy(base_delay=0.01))  # fmt: skip
            jobs = [q.submit(Txt2ImgRequest(prompt=f"cat {i} <lora:ink:0.5>", seed=i, width=64, height=64, steps=2))
                    for i in range(3)]  # fmt: skip
            async with q:
                started = time.monotonic()
                done = await q.wait_all([j.id for j in jobs], timeout=20)
                took = time.monotonic() - started
            # stop() waited for the deliveries still running
        assert {j.state for j in done} == {"succeeded"}
        assert took < 1.5, f"the failing webhook (~1 s per result) must not hold the queue up ({took:.2f} s)"
        assert bad.hits == 9  # three attempts for each of three results
        assert len(good.bodies) == 3
        body = next(b for b in good.bodies if b["result"]["seed"] == 1)
        assert body["event"] == "lorabench.result" and body["result"]["prompt"] == "cat 1 <lora:ink:0.5>"
        assert body["result"]["loras"][0]["name"] == "ink" and body["result"]["sha256"]
        for job in done:
            [result] = q.results(job.id)
            outcome = {d["sink"]: d for d in result.deliveries}
            assert outcome["folder"]["ok"] and outcome["good-hook"]["ok"]
            assert not outcome["bad-hook"]["ok"] and outcome["bad-hook"]["attempts"] == 3
            assert outcome["bad-hook"]["detail"] == "HTTP 500"
            assert not outcome["exploding"]["ok"] and "sink bug" in outcome["exploding"]["detail"]
            copy = tmp_path / "copies" / result.day.isoformat() / "ink" / f"{result.seed}.jpg"
            assert copy.read_bytes() == Path(result.path).read_bytes()
        assert "token=abc" not in repr(sinks[1]) and "token=abc" not in sinks[1].name
        q.close()
    finally:
        good.close()
        bad.close()
