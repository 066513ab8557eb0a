"""SDNextClient against the real stand-in server on loopback (and a few httpx.MockTransport cases)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import struct
import time
import tracemalloc
import zlib

import httpx
import pytest
from _loras import write_lora
from PIL import Image

from lorabench.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    DeadlineExceededError,
    InsecureAuthError,
    ModelNotLoadedError,
    ProtocolError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    ServerUnavailableError,
    UnknownSamplerError,
)
from lorabench.sdnext import (
    GenerationResult,
    Img2ImgRequest,
    SDNextClient,
    StandinServer,
    Txt2ImgRequest,
    map_sampler,
)
from lorabench.sdnext._http import RedactingFilter, install_log_filter, redact

SECRET = "pa55-w0rd-xyzzy"
SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture
def lora_dir(tmp_path):
    root = tmp_path / "loras"
    write_lora(root / "style_a.safetensors", {"ss_output_name": "StyleA"})
    write_lora(root / "sub" / "style.b.v2.safetensors")
    (root / "broken.safetensors").write_bytes(b"not a safetensors file")
    (root / "notes.txt").write_text("ignored")
    return root


@pytest.fixture
def make_server(lora_dir):
    servers: list[StandinServer] = []

    def make(**kwargs) -> StandinServer:
        kwargs.setdefault("lora_dir", lora_dir)
        srv = StandinServer(**kwargs).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture(params=["sdnext", "a1111"])
def flavor(request):
    return request.param


def req(**kwargs) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{**SMALL, "seed": 7, **kwargs})


# --------------------------------------------------------------------------- endpoints


@pytest.mark.anyio
async def test_detection_is_cached_and_per_flavor(make_server, flavor):
    srv = make_server(flavor=flavor)
    async with SDNextClient(srv.url) as sd:
        found = await sd.detect()
        assert found.app == flavor
        assert (found.version == "058a7f0") == (flavor == "sdnext")
        srv.inject("status503", path="/sdapi/v1/version", times=5)
        assert await sd.detect() is found  # cached: no second request
        assert sd.server is found


@pytest.mark.anyio
async def test_every_endpoint(make_server, flavor, lora_dir):
    srv = make_server(flavor=flavor)
    async with SDNextClient(srv.url) as sd:
        models = await sd.sd_models()
        assert models[0].title.startswith("sdxl-base-1.0 [")
        assert len(models[0].hash) == 10
        names = [s.name for s in await sd.samplers()]
        assert map_sampler("LMSD", flavor) in names
        assert ("Default" in names) == (flavor == "sdnext")
        loras = {entry.name: entry for entry in await sd.loras()}
        dotted = "style_b_v2" if flavor == "sdnext" else "style.b.v2"
        assert set(loras) == {"style_a", dotted}  # broken file skipped
        assert loras["style_a"].alias == "StyleA"
        assert loras["style_a"].tag(0.5) == "<lora:style_a:0.5>"
        write_lora(lora_dir / "late.safetensors")
        assert "late" not in {e.name for e in await sd.loras()}
        await sd.refresh_loras()
        assert "late" in {e.name for e in await sd.loras()}
        memory = await sd.memory()
        assert memory.ram_total
        assert not memory.cuda_available
        options = await sd.get_options()
        assert options.samples_format == ("jpg" if flavor == "sdnext" else "png")
        assert options.sd_model_checkpoint == models[0].title
        assert (await sd.set_options({"jpeg_quality": 80}))["jpeg_quality"] is True
        progress = await sd.progress()
        assert progress.idle
        assert progress.progress == 0
        await sd.interrupt()
        await sd.skip()
        result = await sd.txt2img(req(prompt="a cat <lora:style_a:0.8>"))
        assert len(result.images) == 1
        assert result.seed == 7
        assert result.all_seeds == [7]
        init = result.images[0].data
        edited = await sd.img2img(Img2ImgRequest(**SMALL, seed=3, prompt="edit", init_images=[init]))
        assert edited.images[0].width == 64
        assert edited.info["denoising_strength"] in (0.5, 0.75)


@pytest.mark.anyio
async def test_requests_always_send_explicit_values():
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/sdapi/v1/version":
            return httpx.Response(404, json={"detail": "Not Found"})
        sent.append(json.loads(request.content))
        png = io.BytesIO()
        Image.new("RGB", (8, 8)).save(png, "PNG")
        info = json.dumps({"seed": 1, "all_seeds": [1], "infotexts": ["x"]})
        return httpx.Response(200, json={"images": [base64.b64encode(png.getvalue()).decode()], "info": info})

    async with SDNextClient("http://sd.test", transport=httpx.MockTransport(handler)) as sd:
        await sd.txt2img(Txt2ImgRequest(prompt="p", sampler_name="LMSD"))
    body = sent[0]
    for key in ("steps", "cfg_scale", "width", "height", "sampler_name", "seed", "n_iter", "batch_size", "clip_skip"):
        assert body[key] is not None, key
    assert (body["steps"], body["cfg_scale"], body["width"], body["sampler_name"]) == (50, 7.0, 512, "LMS")
    sdnext = Txt2ImgRequest(sampler_name="LMS").to_payload("sdnext")
    assert (sdnext["steps"], sdnext["cfg_scale"], sdnext["height"], sdnext["sampler_name"]) == (20, 6.0, 1024, "LMSD")
    assert Txt2ImgRequest.from_json(sdnext).to_payload("sdnext") == sdnext
    with pytest.raises(ValueError, match="steps"):
        Txt2ImgRequest(steps=0)


@pytest.mark.anyio
async def test_formats_jpeg_by_default_png_after_options(make_server):
    srv = make_server()
    async with SDNextClient(srv.url) as sd:
        assert (await sd.txt2img(req())).images[0].format == "JPEG"
        assert (await sd.set_options({"samples_format": "png"})) == {"samples_format": True}
        png = (await sd.txt2img(req())).images[0]
        assert png.format == "PNG"
        assert png.data.startswith(b"\x89PNG")
        await sd.set_options({"samples_format": "webp"})
        assert (await sd.txt2img(req())).images[0].format == "WEBP"
    a1111 = make_server(flavor="a1111")
    async with SDNextClient(a1111.url) as sd:
        assert (await sd.txt2img(req())).images[0].format == "PNG"


@pytest.mark.anyio
async def test_infotext_and_info_round_trip(make_server, flavor):
    srv = make_server(flavor=flavor)
    prompt = "a castle <lora:style_a:0.7> <lora:StyleA:0.3>" if flavor == "a1111" else "a castle <lora:style_a:0.7>"
    prompt += " <lora:sub/style.b.v2:1.25>" if flavor == "sdnext" else " <lora:style.b.v2:1.25>"
    async with SDNextClient(srv.url) as sd:
        result = await sd.txt2img(req(prompt=prompt, negative_prompt="blurry", seed=1234, batch_size=2))
    assert isinstance(result, GenerationResult)
    assert result.all_seeds == [1234, 1235]
    assert result.info["all_seeds"] == [1234, 1235]
    assert result.info["prompt"] == prompt
    assert isinstance(result.info["infotexts"], list)
    for image, seed in zip(result.images, (1234, 1235), strict=True):
        text = image.infotext
        assert text is not None
        assert text.seed == seed
        assert text.steps == 3
        assert (text.width, text.height) == (64, 64)
        assert text.negative_prompt == "blurry"
        weights = {lora["name"]: lora["weight"] for lora in text.loras}
        assert weights["style_a"] == 0.7
        assert text.app == flavor
    extra = result.info["extra_generation_params"]
    if flavor == "sdnext":
        assert set(result.info) >= {"cfg_end", "detailer", "detailer_model", "job_timestamp"}
        assert extra["LoRA networks"] == "style_a, style_b_v2"
        assert result.images[0].parameters.splitlines()[-1].endswith('LoRA networks: "style_a, style_b_v2"')
    else:
        assert set(result.info) >= {"restore_faces", "sd_model_name", "version"}
        hashes = result.images[0].infotext.lora_hashes
        assert set(hashes) == {"StyleA", "style.b.v2"}
        assert all(len(h) == 12 for h in hashes.values())
        assert "Lora hashes" in extra


@pytest.mark.anyio
async def test_unknown_sampler(make_server, flavor):
    srv = make_server(flavor=flavor)
    async with SDNextClient(srv.url) as sd:
        with pytest.raises(UnknownSamplerError):
            await sd.txt2img(req(sampler_name="No Such Sampler"))
        assert (await sd.txt2img(req(sampler_name="DPM++ 2M"))).images


@pytest.mark.anyio
async def test_unknown_lora_is_skipped(make_server, flavor):
    srv = make_server(flavor=flavor)
    async with SDNextClient(srv.url) as sd:
        result = await sd.txt2img(req(prompt="x <lora:style_a:1> <lora:missing_one:0.5>"))
        plain = await sd.txt2img(req(prompt="x <lora:style_a:1>"))
    assert result.images[0].to_pil().tobytes() == plain.images[0].to_pil().tobytes()  # no effect
    assert "missing_one" not in json.dumps(result.info["extra_generation_params"])


@pytest.mark.anyio
async def test_bad_requests_carry_details(make_server):
    srv = make_server()
    async with SDNextClient(srv.url) as sd:
        with pytest.raises(BadRequestError) as info:
            await sd.txt2img(Txt2ImgRequest(extra_fields={"steps": "abc", "width": 512.5}))
        assert {tuple(d["loc"]) for d in info.value.details} == {("body", "steps"), ("body", "width")}
        with pytest.raises(BadRequestError, match="Init image is none"):
            await sd.img2img(Img2ImgRequest(**SMALL))


# --------------------------------------------------------------------------- auth and credentials


@pytest.mark.anyio
async def test_auth_401_then_success_and_no_leaks(make_server, flavor, caplog, monkeypatch):
    for name in ("SDNEXT_USER", "SDNEXT_PASSWORD", "SDNEXT_URL"):
        monkeypatch.delenv(name, raising=False)
    srv = make_server(flavor=flavor, auth=("alice", SECRET))
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")
    errors: list[Exception] = []
    async with SDNextClient(srv.url) as anonymous:
        with pytest.raises(AuthenticationError) as denied:
            await anonymous.sd_models()
        errors.append(denied.value)
    async with SDNextClient(srv.url, auth=("alice", "wrong")) as wrong:
        with pytest.raises(AuthenticationError) as denied:
            await wrong.version()
        errors.append(denied.value)
    userinfo_url = srv.url.replace("http://", f"http://alice:{SECRET}@")
    for client in (SDNextClient(srv.url, auth=("alice", SECRET)), SDNextClient(userinfo_url)):
        async with client as sd:
            assert SECRET not in repr(sd)
            assert "alice" not in repr(sd)
            assert "auth=***" in repr(sd)
            assert SECRET not in sd.base_url
            assert (await sd.detect()).app == flavor
            assert (await sd.txt2img(req())).images
            await sd.progress()
            srv.inject("error500", path="/sdapi/v1/sd-models")
            with pytest.raises(ServerError) as failed:
                await sd.sd_models()
            errors.append(failed.value)
    assert "HTTP Request" in caplog.text
    assert SECRET not in caplog.text
    assert base64.b64encode(f"alice:{SECRET}".encode()).decode() not in caplog.text
    assert "skip_current_image" not in caplog.text
    for err in errors:
        assert SECRET not in str(err)
        assert SECRET not in repr(err)


@pytest.mark.anyio
async def test_env_credentials(make_server, monkeypatch):
    srv = make_server(auth="bob:" + SECRET)
    monkeypatch.setenv("SDNEXT_URL", srv.url)
    monkeypatch.setenv("SDNEXT_USER", "bob")
    monkeypatch.setenv("SDNEXT_PASSWORD", SECRET)
    async with SDNextClient() as sd:
        assert sd.base_url == srv.url
        assert await sd.sd_models()
    monkeypatch.delenv("SDNEXT_PASSWORD")
    with pytest.raises(ConfigError):
        SDNextClient()


def test_insecure_auth_refused_at_construction(monkeypatch):
    monkeypatch.delenv("SDNEXT_USER", raising=False)
    monkeypatch.delenv("SDNEXT_PASSWORD", raising=False)
    with pytest.raises(InsecureAuthError) as info:
        SDNextClient("http://10.1.2.3:7860", auth=("u", SECRET))
    assert SECRET not in str(info.value)
    with pytest.raises(InsecureAuthError):
        SDNextClient(f"http://u:{SECRET}@10.1.2.3:7860")
    # Allowed: opt-in, https, loopback names and addresses, or no credentials (nothing connects here).
    SDNextClient("http://10.1.2.3:7860", auth=("u", SECRET), allow_insecure_auth=True)
    SDNextClient("https://10.1.2.3:7860", auth=("u", SECRET))
    for url in ("http://localhost:7860", "http://127.8.9.10:1", "http://[::1]:7860"):
        SDNextClient(url, auth=("u", SECRET))
    SDNextClient("http://10.1.2.3:7860")
    with pytest.raises(ConfigError):
        SDNextClient("ftp://127.0.0.1/")


def test_log_redaction_filter():
    install_log_filter()
    install_log_filter()
    assert sum(isinstance(f, RedactingFilter) for f in logging.getLogger("httpx").filters) == 1
    assert redact(f"GET http://u:{SECRET}@h:1/p?token=abc x") == "GET http://***@h:1/p?[redacted] x"
    assert SECRET not in redact(f"(b'Authorization', b'Basic {SECRET}')")
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "HTTP Request: %s", (f"http://a:{SECRET}@h/",), None)
    assert RedactingFilter().filter(record)
    assert SECRET not in record.getMessage()


# --------------------------------------------------------------------------- server states and faults


@pytest.mark.anyio
async def test_rate_limit(make_server):
    srv = make_server(rate_limit=2)
    async with SDNextClient(srv.url) as sd:
        await sd.sd_models()
        await sd.sd_models()
        with pytest.raises(RateLimitedError) as info:
            await sd.sd_models()
        assert info.value.retry_after is not None
        assert 1 <= info.value.retry_after <= 2
        await sd.samplers()  # keyed per path


@pytest.mark.anyio
async def test_model_loading(make_server):
    srv = make_server()
    srv.set_model_loading(True)
    async with SDNextClient(srv.url) as sd:
        progress = await sd.progress()
        assert progress.state.job == "Load model"
        assert not progress.idle
        with pytest.raises(ModelNotLoadedError):
            await sd.txt2img(req())
        srv.set_model_loading(False)
        assert (await sd.txt2img(req())).images
        with pytest.raises(ModelNotLoadedError):
            await sd.txt2img(req(extra_fields={"sd_model_checkpoint": "no-such-model"}))


FAULT_CASES = [
    ("refuse", ServerUnavailableError, {}),
    ("hang", DeadlineExceededError, {"timeout": 0.5}),
    ("trickle", DeadlineExceededError, {"timeout": 1.0}),
    ("error500", ServerError, {}),
    ("status503", ServerError, {}),
    ("status429", RateLimitedError, {}),
    ("malformed_json", ProtocolError, {}),
    ("disconnect", ProtocolError, {}),
    ("huge_body", ResponseTooLargeError, {"max_response_bytes": 2**20}),
    ("huge_chunked", ResponseTooLargeError, {"max_response_bytes": 2**20}),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "error", "options"), FAULT_CASES, ids=[c[0] for c in FAULT_CASES])
async def test_faults_map_to_typed_errors(make_server, fault, error, options):
    srv = make_server()
    async with SDNextClient(srv.url, **options) as sd:
        await sd.detect()
        srv.inject(fault, path="/sdapi/v1/sd-models")
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(error) as info:
                await sd.sd_models()
            elapsed = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert elapsed < options.get("timeout", 1.0) + 1.0
        if fault.startswith("huge"):
            assert peak < 16 * 2**20
        if fault == "status429":
            assert info.value.retry_after == 1
        assert await sd.sd_models()  # the fault was used up; the server is fine again


@pytest.mark.anyio
async def test_fault_on_generation_and_closed_port(make_server):
    srv = make_server()
    async with SDNextClient(srv.url) as sd:
        srv.inject("disconnect", path="/sdapi/v1/txt2img")
        with pytest.raises(ProtocolError, match="outcome is unknown"):
            await sd.txt2img(req())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with SDNextClient(f"http://127.0.0.1:{port}") as sd:
        with pytest.raises(ServerUnavailableError):
            await sd.version()


def _bomb_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"images": "nope", "info": "{}"}, ProtocolError),
        ({"images": ["!!not base64!!"], "info": "{}"}, ProtocolError),
        ({"images": [base64.b64encode(b"hello there").decode()], "info": "{}"}, ProtocolError),
        ({"images": [base64.b64encode(_bomb_png()).decode()], "info": "{}"}, ProtocolError),
        ({"images": [base64.b64encode(b"\xff\xd8\xff\xe0broken").decode()], "info": "{}"}, ProtocolError),
        ({"images": [], "info": '{"seed": 1}'}, ModelNotLoadedError),
        ({"images": [], "parameters": {}, "info": ""}, ModelNotLoadedError),
        ({"images": [], "info": "{not json"}, ProtocolError),
        ([1, 2], ProtocolError),
    ],
    ids=["shape", "base64", "not-image", "bomb", "truncated-jpeg", "no-images", "empty-info", "info-json", "list"],
)
async def test_bad_generation_answers(body, error):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/sdapi/v1/version":
            return httpx.Response(200, json={"app": "sd.next", "commit": "058a7f0"})
        return httpx.Response(200, json=body)

    async with SDNextClient("http://sd.test", transport=httpx.MockTransport(handler)) as sd:
        with pytest.raises(error):
            await sd.txt2img(Txt2ImgRequest())


# --------------------------------------------------------------------------- concurrency, progress, control


@pytest.mark.anyio
async def test_concurrent_generations_are_serialised(make_server):
    srv = make_server(step_time=0.02)
    async with SDNextClient(srv.url) as sd:
        first, second = await asyncio.gather(sd.txt2img(req(steps=6)), sd.txt2img(req(steps=6, seed=8)))
    assert first.seed == 7
    assert second.seed == 8
    (a_start, a_end), (b_start, b_end) = srv.generation_log
    assert a_end <= b_start
    assert b_end - a_start >= 2 * 6 * 0.02


async def _wait_for_steps(sd: SDNextClient, steps: int = 2) -> list:
    seen = []
    for _ in range(400):
        progress = await sd.progress(skip_current_image=False)
        seen.append(progress)
        if progress.state.sampling_step >= steps and progress.state.job in ("Inference", "scripts_txt2img"):
            return seen
        await asyncio.sleep(0.01)
    raise AssertionError("the generation never reached its sampling steps")


@pytest.mark.anyio
async def test_progress_phases_and_idle(make_server, flavor, lora_dir):
    srv = make_server(flavor=flavor, step_time=0.02)
    async with SDNextClient(srv.url) as sd:
        before = await sd.progress()
        assert before.idle
        assert before.id == (0 if flavor == "sdnext" else None)
        task = asyncio.create_task(sd.txt2img(req(prompt="<lora:style_a:1>", steps=30)))
        seen = await _wait_for_steps(sd, 3)
        busy = seen[-1]
        assert not busy.idle
        assert 0 < busy.progress <= 1
        assert busy.current_image is not None
        assert busy.current_image.startswith(b"\xff\xd8")
        if flavor == "sdnext":
            assert isinstance(busy.id, str)
            assert len(busy.id) == 15
        while not task.done():
            seen.append(await sd.progress())
            await asyncio.sleep(0.01)
        await task
        after = await sd.progress()
    jobs = {p.state.job for p in seen}
    assert ("Inference" in jobs) if flavor == "sdnext" else (jobs >= {"scripts_txt2img"})
    assert after.idle
    assert after.progress == 0
    assert after.id == ("" if flavor == "sdnext" else None)


@pytest.mark.anyio
async def test_interrupt_returns_early_with_preview(make_server, flavor):
    srv = make_server(flavor=flavor, step_time=0.02)
    async with SDNextClient(srv.url) as sd:
        started = time.monotonic()
        task = asyncio.create_task(sd.txt2img(req(steps=100)))
        await _wait_for_steps(sd)
        await sd.interrupt()
        result = await task
    assert time.monotonic() - started < 1.5
    assert result.interrupted
    assert len(result.images) == 1


@pytest.mark.anyio
async def test_skip_drops_the_current_iteration(make_server):
    srv = make_server(step_time=0.02)
    async with SDNextClient(srv.url) as sd:
        task = asyncio.create_task(sd.txt2img(req(steps=10, n_iter=3, seed=100)))
        await _wait_for_steps(sd)
        await sd.skip()
        result = await task
    assert result.all_seeds == [100, 101, 102]
    assert [img.infotext.seed for img in result.images] == [101, 102]


# --------------------------------------------------------------------------- pictures


@pytest.mark.anyio
async def test_pictures_are_deterministic_and_follow_loras(make_server):
    srv = make_server()
    async with SDNextClient(srv.url) as sd:

        async def pixels(prompt: str, seed: int = 7) -> tuple[bytes, bytes]:
            image = (await sd.txt2img(req(prompt=prompt, seed=seed, width=96, height=96))).images[0]
            return image.data, image.to_pil().tobytes()

        base = await pixels("a cat <lora:style_a:0.5>")
        assert await pixels("a cat <lora:style_a:0.5>") == base
        assert (await pixels("a cat <lora:style_a:1.5>"))[1] != base[1]
        assert (await pixels("a cat <lora:style_b_v2:0.5>"))[1] != base[1]
        assert (await pixels("a cat <lora:style_a:0.5>", seed=8))[1] != base[1]
        assert (await pixels("a dog <lora:style_a:0.5>"))[1] != base[1]
        random_seed = await sd.txt2img(req(seed=-1, batch_size=2))
        assert random_seed.seed >= 0
        assert random_seed.all_seeds == [random_seed.seed, random_seed.seed + 1]
        grid = await sd.txt2img(req(batch_size=2, save_images=True))
        assert len(grid.images) == 3
        assert grid.info["index_of_first_image"] == 1
        assert grid.outputs == grid.images[1:]
        assert grid.images[0].width == 128
