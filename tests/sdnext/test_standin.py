"""The stand-in server's wire behaviour, checked with plain httpx against sdnext-api.md."""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
import time

import httpx
import pytest
from _loras import write_lora
from PIL import Image

from lorabench.cli import _standin as standin_cli
from lorabench.errors import ConfigError
from lorabench.sdnext import FAULTS, SDNextClient, StandinServer, Txt2ImgRequest

SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 11}
SDNEXT_INFO_KEYS = {
    "prompt",
    "all_prompts",
    "negative_prompt",
    "all_negative_prompts",
    "seed",
    "all_seeds",
    "subseed",
    "all_subseeds",
    "subseed_strength",
    "width",
    "height",
    "sampler_name",
    "cfg_scale",
    "cfg_end",
    "steps",
    "batch_size",
    "detailer",
    "detailer_model",
    "sd_model_hash",
    "seed_resize_from_w",
    "seed_resize_from_h",
    "denoising_strength",
    "extra_generation_params",
    "index_of_first_image",
    "infotexts",
    "styles",
    "job_timestamp",
    "clip_skip",
}
A1111_EXTRA_INFO_KEYS = {
    "restore_faces",
    "face_restoration_model",
    "sd_model_name",
    "sd_vae_name",
    "sd_vae_hash",
    "is_using_inpainting_conditioning",
    "version",
}
SDNEXT_KEY_ORDER = [
    "Steps",
    "Size",
    "Sampler",
    "Scheduler",
    "Seed",
    "CFG scale",
    "CFG rescale",
    "CFG end",
    "CLiP-skip",
    "Batch",
    "App",
    "Version",
    "Operations",
    "Model",
    "Model hash",
    "Index",
    "Denoising strength",
    "LoRA networks",
    "LoRA hashes",
]


@pytest.fixture
def lora_dir(tmp_path):
    root = tmp_path / "loras"
    write_lora(root / "style_a.safetensors", {"ss_output_name": "StyleA", "ss_note": "data:image/png;base64,AAA"})
    write_lora(root / "sub" / "style.b.v2.safetensors", {"ss_tag_frequency": json.dumps({"set": {"cat": 2}})})
    (root / "empty.safetensors").write_bytes(b"")
    return root


@pytest.fixture
def serve(lora_dir):
    servers: list[tuple[StandinServer, httpx.Client]] = []

    def make(**kwargs) -> tuple[StandinServer, httpx.Client]:
        kwargs.setdefault("lora_dir", lora_dir)
        srv = StandinServer(**kwargs).start()
        http = httpx.Client(base_url=srv.url, timeout=10)
        servers.append((srv, http))
        return srv, http

    yield make
    for srv, http in servers:
        http.close()
        srv.stop()


@pytest.fixture(params=["sdnext", "a1111"])
def flavor(request):
    return request.param


def txt2img(http: httpx.Client, **fields) -> dict:
    response = http.post("/sdapi/v1/txt2img", json={**SMALL, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def user_comment(jpeg: bytes) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as img:
        return img.getexif().get_ifd(0x8769)[0x9286]


# --------------------------------------------------------------------------- shapes and codes


def test_version_and_control_codes(serve, flavor):
    _, http = serve(flavor=flavor)
    version = http.get("/sdapi/v1/version")
    interrupt, skip = http.post("/sdapi/v1/interrupt"), http.post("/sdapi/v1/skip")
    if flavor == "sdnext":
        assert version.json()["app"] == "sd.next"
        assert version.json()["commit"] == "058a7f0"
        assert (interrupt.status_code, interrupt.content, skip.status_code, skip.content) == (204, b"", 204, b"")
    else:
        assert version.status_code == 404
        assert (interrupt.status_code, interrupt.json(), skip.status_code, skip.json()) == (200, {}, 200, None)
    assert "X-Process-Time" in interrupt.headers
    assert http.get("/sdapi/v1/nope").status_code == 404
    assert http.get("/sdapi/v1/txt2img").status_code == 405


def test_sampler_rules_and_error_shapes(serve, flavor):
    _, http = serve(flavor=flavor)
    bad = http.post("/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Nope"})
    body = bad.json()
    if flavor == "sdnext":
        assert bad.status_code == 404
        assert body == {
            "error": "HTTPException",
            "code": 404,
            "detail": "Sampler not found",
            "body": "",
            "errors": "404: Sampler not found",
        }
        assert txt2img(http, sampler_name="euler A")["images"]  # case-insensitive
        assert http.post("/sdapi/v1/txt2img", json={**SMALL, "sampler_name": ""}).status_code == 404
        assert http.post("/sdapi/v1/txt2img", json={**SMALL, "sampler_name": None}).status_code == 404
        assert json.loads(txt2img(http)["info"])["sampler_name"] == "Default"
    else:
        assert bad.status_code == 400
        assert "code" not in body
        assert body["detail"] == "Sampler not found"
        assert json.loads(txt2img(http, sampler_name="k_euler")["info"])["sampler_name"] == "Euler"
        assert json.loads(txt2img(http)["info"])["sampler_name"] == "Euler"


def test_request_validation_is_lax_like_pydantic(serve):
    _, http = serve()
    answer = txt2img(http, steps="3", scheduler="Karras", force_task_id="x", cfg_scale=None)
    assert answer["parameters"]["steps"] == 3
    assert answer["parameters"]["cfg_scale"] == 6.0
    assert "scheduler" not in answer["parameters"]
    bad = http.post("/sdapi/v1/txt2img", json={"steps": "abc", "width": 512.5, "prompt": 3})
    assert bad.status_code == 422
    details = {tuple(d["loc"]): d["type"] for d in bad.json()["detail"]}
    assert details == {
        ("body", "steps"): "int_parsing",
        ("body", "width"): "int_from_float",
        ("body", "prompt"): "string_type",
    }
    assert http.post("/sdapi/v1/txt2img", content=b"{oops").status_code == 422
    img2img = http.post("/sdapi/v1/img2img", json=SMALL)
    assert (img2img.status_code, img2img.json()) == (400, {"error": "Init image is none"})
    broken = http.post("/sdapi/v1/img2img", json={**SMALL, "init_images": ["!!"]})
    assert broken.status_code == 500
    assert broken.json()["detail"] == "Invalid encoded image"
    oom = http.post("/sdapi/v1/txt2img", json={**SMALL, "width": 9000})
    assert oom.status_code == 500
    assert oom.json()["error"] == "OutOfMemoryError"


def test_info_is_a_json_string_with_the_documented_keys(serve, flavor):
    _, http = serve(flavor=flavor)
    answer = txt2img(http, prompt="p", batch_size=2, n_iter=2)
    assert isinstance(answer["info"], str)
    info = json.loads(answer["info"])
    expected = (
        SDNEXT_INFO_KEYS
        if flavor == "sdnext"
        else (SDNEXT_INFO_KEYS - {"cfg_end", "detailer", "detailer_model"}) | A1111_EXTRA_INFO_KEYS
    )
    assert set(info) == expected
    assert info["all_seeds"] == [11, 12, 13, 14]
    assert len(answer["images"]) == 4 == len(info["infotexts"])
    assert answer["parameters"]["n_iter"] == 2
    assert answer["parameters"]["sampler_name"]


def test_infotext_order_and_image_metadata(serve):
    srv, http = serve()
    answer = txt2img(
        http,
        prompt="cat <lora:style_a:0.6> <lora:sub/style.b.v2:1>",
        negative_prompt="bad",
        sampler_name="Euler a",
        cfg_end=0.8,
        clip_skip=2,
    )
    info = json.loads(answer["info"])
    text = info["infotexts"][0]
    prompt, negative, params = text.split("\n")
    assert prompt == "cat <lora:style_a:0.6> <lora:sub/style.b.v2:1>"
    assert negative == "Negative prompt: bad"
    keys = [item.split(": ", 1)[0] for item in params.split(", ") if ": " in item]
    assert keys == [k for k in SDNEXT_KEY_ORDER if k in keys]
    assert 'LoRA networks: "style_a, style_b_v2"' in params
    assert "App: SD.Next" in params
    jpeg = base64.b64decode(answer["images"][0])
    comment = user_comment(jpeg)
    assert comment.startswith(b"UNICODE\x00")
    assert comment[8:].decode("utf-16-be") == text
    http.post("/sdapi/v1/options", json={"lora_add_hashes_to_infotext": True, "samples_format": "png"})
    answer = txt2img(http, prompt="cat <lora:style_a:0.6>")
    with Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))) as png:
        assert png.format == "PNG"
        assert png.info["parameters"] == json.loads(answer["info"])["infotexts"][0]
        assert "LoRA hashes: " in png.info["parameters"]
    assert srv.engine.options["samples_format"] == "png"


# --------------------------------------------------------------------------- LoRAs


def _loaded(http: httpx.Client, prompt: str) -> list[str]:
    txt2img(http, prompt=prompt)
    return http.get("/sdapi/v1/loaded-loras").json()


def test_lora_names_tags_and_listing(serve, lora_dir):
    _, http = serve()
    items = {item["name"]: item for item in http.get("/sdapi/v1/loras").json()}
    assert set(items) == {"style_a", "style_b_v2"}
    assert items["style_a"]["alias"] == "StyleA"
    assert items["style_a"]["metadata"]["ss_note"] == "data"
    assert items["style_b_v2"]["metadata"]["ss_tag_frequency"] == {"set": {"cat": 2}}
    for token in ("style_b_v2", "sub/style.b.v2", "style.b.v2"):
        assert _loaded(http, f"<lora:{token}:0.5>") == ["style_b_v2"]
    assert _loaded(http, "<lora:StyleA:1>") == []  # the alias is not a key in SD.Next
    assert _loaded(http, "<lyco:style_a:1>") == []
    assert _loaded(http, "<lora:style_a:0>") == []
    assert _loaded(http, "<lora:style_a:0:unet=0.5>") == ["style_a"]
    assert _loaded(http, "no tags") == []
    detail = http.get("/sdapi/v1/lora", params={"lora": "style_a"}).json()
    assert detail["alias"] == "StyleA"
    assert len(detail["shorthash"]) == 8
    assert detail["is_safetensors"]
    missing = http.get("/sdapi/v1/lora", params={"lora": "zzz"})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "Lora 'zzz' not found"
    networks = http.get("/sdapi/v1/extra-networks", params={"page": "lora"}).json()
    assert {n["name"] for n in networks} == {"style_a", "style_b_v2"}
    assert networks[1]["tags"] == "set"
    write_lora(lora_dir / "new.one.safetensors")
    assert "new_one" in http.post("/sdapi/v1/refresh-loras").json()
    assert _loaded(http, "<lora:new.one:1>") == ["new_one"]


def test_a1111_lora_rules(serve, lora_dir):
    _, http = serve(flavor="a1111")
    names = {item["name"] for item in http.get("/sdapi/v1/loras").json()}
    assert names == {"style_a", "style.b.v2"}
    info = json.loads(txt2img(http, prompt="<lyco:StyleA:0.5> <lora:style.b.v2:1:0.2>")["info"])
    assert info["extra_generation_params"]["Lora hashes"].startswith("StyleA: ")
    write_lora(lora_dir / "late.safetensors")
    assert http.post("/sdapi/v1/refresh-loras").json() is None
    assert http.get("/sdapi/v1/loaded-loras").status_code == 404  # SD.Next-only endpoint


def test_unknown_lora_found_after_one_rescan(serve, lora_dir):
    _, http = serve()
    write_lora(lora_dir / "dropped_in.safetensors")
    assert _loaded(http, "<lora:dropped_in:1>") == ["dropped_in"]


# --------------------------------------------------------------------------- auth, options, states


def test_basic_auth_answers(serve, flavor):
    _, http = serve(flavor=flavor, auth="user:pw")
    none = http.get("/sdapi/v1/sd-models")
    wrong = http.get("/sdapi/v1/sd-models", auth=("user", "nope"))
    assert none.status_code == wrong.status_code == 401
    assert none.headers["WWW-Authenticate"] == "Basic"
    assert wrong.headers["WWW-Authenticate"] == "Basic"
    assert none.json()["detail"] == "Not authenticated"
    assert wrong.json()["detail"] == ("Unauthorized" if flavor == "sdnext" else "Incorrect username or password")
    assert http.get("/sdapi/v1/sd-models", auth=("user", "pw")).status_code == 200


def test_options_and_sdnext_only_endpoints(serve, flavor):
    srv, http = serve(flavor=flavor, step_time=0.01)
    answer = http.post("/sdapi/v1/options", json={"bogus": 1, "jpeg_quality": 70, "samples_format": "tiff"})
    assert answer.status_code == 200
    if flavor == "a1111":
        assert answer.json() is None
        assert http.get("/sdapi/v1/status").status_code == 404
        return
    assert answer.json() == {"updated": [{"bogus": False}, {"jpeg_quality": True}, {"samples_format": False}]}
    assert http.post("/sdapi/v1/options", json={"sd_model_checkpoint": "sd15-pruned"}).json()["updated"] == [
        {"sd_model_checkpoint": True}
    ]
    assert http.get("/sdapi/v1/checkpoint").json()["name"] == "sd15-pruned"
    assert http.get("/sdapi/v1/status").json()["status"] == "idle"
    txt2img(http)
    history = http.get("/sdapi/v1/history").json()
    assert {"api-txt", "inference", "vae decode"} <= {h["job"] for h in history}
    assert {h["op"] for h in history} == {"begin", "end"}
    srv.set_model_loading(True)
    assert http.get("/sdapi/v1/checkpoint").json() == {"type": None, "class": None}
    empty = txt2img(http)
    assert (empty["images"], empty["info"]) == ([], "")


def test_gzip_and_keepalive(serve):
    _, http = serve()
    response = http.post("/sdapi/v1/txt2img", json=SMALL, headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.json()["images"]
    assert http.get("/sdapi/v1/sd-models").status_code == 200  # same pooled connection


@pytest.mark.anyio
async def test_send_images_false_and_lost_idle_interrupt(serve):
    srv, http = serve()
    assert http.post("/sdapi/v1/interrupt").status_code == 204  # idle: lost at the next begin()
    async with SDNextClient(srv.url) as sd:
        result = await sd.txt2img(Txt2ImgRequest(**SMALL, send_images=False))
        assert result.images == []
        assert result.info["seed"] == 11
        assert not result.interrupted
        assert len((await sd.txt2img(Txt2ImgRequest(**SMALL, n_iter=2))).images) == 2


def test_img2img_uses_the_init_image(serve):
    _, http = serve()

    def run(colour: tuple[int, int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(out, "PNG")
        body = {**SMALL, "init_images": [base64.b64encode(out.getvalue()).decode()], "denoising_strength": 0.2}
        answer = http.post("/sdapi/v1/img2img", json=body).json()
        assert "Operations: img2img" in json.loads(answer["info"])["infotexts"][0]
        assert answer["parameters"]["init_images"] is None
        with Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))) as img:
            return img.convert("RGB").tobytes()

    assert run((255, 0, 0)) != run((0, 0, 255))


# --------------------------------------------------------------------------- faults and lifecycle


def test_fault_injection_rules(serve):
    srv, http = serve()
    with pytest.raises(ValueError, match="unknown fault"):
        srv.inject("explode")
    with pytest.raises(ValueError, match="times"):
        srv.inject("error500", times=0)
    assert {"refuse", "hang", "trickle", "huge_body"} <= FAULTS
    srv.inject("error500", times=2, path="/sdapi/v1/samplers")
    assert http.get("/sdapi/v1/sd-models").status_code == 200
    codes = [http.get("/sdapi/v1/samplers").status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    srv.inject("status503")
    srv.clear_faults()
    assert http.get("/sdapi/v1/samplers").status_code == 200


def test_stop_releases_hung_connections(lora_dir):
    srv = StandinServer(lora_dir=lora_dir)
    with pytest.raises(RuntimeError):
        _ = srv.url
    srv.start()
    srv.inject("hang")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.get(srv.url + "/sdapi/v1/sd-models", timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.2)
    started = time.monotonic()
    srv.stop()
    worker.join(5)
    assert not worker.is_alive()
    assert errors
    assert time.monotonic() - started < 2
    srv.stop()  # idempotent
    assert "stopped" in repr(srv)


def test_cli_serves_until_stopped(lora_dir, capsys):
    parser = argparse.ArgumentParser()
    standin_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sdnext-standin",
            "--port",
            "0",
            "--loras",
            str(lora_dir),
            "--step-time",
            "0",
            "--flavor",
            "a1111",
            "--auth",
            "u:p",
        ]
    )
    ready, stop = threading.Event(), threading.Event()
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(standin_cli.run(args, ready=ready, stop=stop)))
    worker.start()
    assert ready.wait(5)
    out = capsys.readouterr().out
    url = out.split("serving ", 1)[1].split()[0]
    assert "2 LoRA(s)" in out
    assert "u:p" not in out
    assert httpx.get(url + "/sdapi/v1/version", auth=("u", "p")).status_code == 404  # a1111
    stop.set()
    worker.join(5)
    assert codes == [0]
    bad = parser.parse_args(["sdnext-standin", "--loras", str(lora_dir / "missing")])
    with pytest.raises(ConfigError):
        standin_cli.run(bad)
