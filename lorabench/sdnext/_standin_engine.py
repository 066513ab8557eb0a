"""The stand-in's generation engine: options, models, samplers and txt2img/img2img (sdnext-api.md §3, §7)."""

from __future__ import annotations

import base64
import binascii
import io
import json
import random
import threading
import time
from typing import Any

from PIL import Image

from lorabench.sdnext._standin_images import encode, grid, infotext, preview, render
from lorabench.sdnext._standin_loras import LoraFile, LoraLibrary, parse_tags
from lorabench.sdnext._standin_spec import (
    A1111_SAMPLERS,
    COMMIT,
    MODELS,
    SDNEXT_SAMPLERS,
    error_body,
    request_spec,
)
from lorabench.sdnext._standin_state import JobState, coerce

__all__ = ["Engine"]

_MAX_PIXELS = 64 * 1024 * 1024
_FORMATS = ("jpg", "jpeg", "png", "webp")


class Engine:
    """Everything behind the endpoints; one generation at a time behind a plain lock (no FIFO)."""

    def __init__(self, flavor: str, lora_dir: Any, step_time: float) -> None:
        self.flavor = flavor
        self.step_time = float(step_time)
        self.state = JobState(flavor)
        self.loras = LoraLibrary(lora_dir, flavor)
        self.queue_lock = threading.Lock()
        self.stopping = threading.Event()
        self.loading = False
        self.loaded: list[str] = []
        self.generation_log: list[tuple[float, float]] = []
        self.options: dict[str, Any] = {
            "samples_format": "jpg" if flavor == "sdnext" else "png",
            "jpeg_quality": 90,
            "sd_model_checkpoint": MODELS[0]["title"],
            "keep_incomplete": True,
            "return_grid": True,
            "sequential_seed": True,
            "extra_networks_default_multiplier": 1.0,
            "lora_add_hashes_to_infotext": False,
            "server_rate_limit": 300,
        }

    # ------------------------------------------------------------------ small endpoints

    def model(self) -> dict[str, Any]:
        """The loaded checkpoint's entry."""
        return self.find_model(self.options["sd_model_checkpoint"]) or MODELS[0]

    @staticmethod
    def find_model(name: str) -> dict[str, Any] | None:
        """A checkpoint by title, name or hash."""
        for m in MODELS:
            if name in (m["title"], m["model_name"], m["hash"], m["filename"]):
                return m
        return None

    def samplers(self) -> list[dict[str, Any]]:
        """The ``/sdapi/v1/samplers`` list (aliases only on A1111)."""
        if self.flavor == "sdnext":
            return [{"name": n, "options": {}} for n in SDNEXT_SAMPLERS]
        return [{"name": n, "aliases": a, "options": {}} for n, a in A1111_SAMPLERS.items()]

    def find_sampler(self, name: Any) -> str | None:
        """SD.Next: exact then case-insensitive; A1111: name or alias."""
        if not isinstance(name, str) or not name:
            return None
        names = list(SDNEXT_SAMPLERS if self.flavor == "sdnext" else A1111_SAMPLERS)
        if name in names:
            return name
        if self.flavor == "a1111":
            return next((n for n, aliases in A1111_SAMPLERS.items() if name in aliases), None)
        return next((n for n in names if n.lower() == name.lower()), None)

    def set_options(self, body: Any) -> tuple[int, Any]:
        """``POST /sdapi/v1/options``: always 200; unknown keys or bad values report ``False``."""
        if not isinstance(body, dict):
            return 422, {
                "detail": [
                    {"type": "dict_type", "loc": ["body"], "msg": "Input should be a valid dictionary", "input": body}
                ]
            }
        updated: list[dict[str, bool]] = []
        for key, value in body.items():
            ok = key in self.options
            if ok and key == "sd_model_checkpoint":
                found = self.find_model(str(value))
                ok = found is not None
                if found is not None:
                    with self.queue_lock:  # a model change reloads synchronously under the lock
                        self.state.begin("Load model")
                        self._sleep(2 * self.step_time)
                        self.options[key] = found["title"]
                        self.state.finish()
            elif ok and key == "samples_format":
                ok = isinstance(value, str) and value.lower() in _FORMATS
                if ok:
                    self.options[key] = value.lower()
            elif ok:
                self.options[key] = value
            updated.append({key: ok})
        return 200, ({"updated": updated} if self.flavor == "sdnext" else None)

    # ------------------------------------------------------------------ generation

    def _sleep(self, seconds: float) -> str | None:
        """Wait, waking for interrupt/skip/shutdown; returns what cut it short."""
        end = time.monotonic() + seconds
        while True:
            if self.stopping.is_set() or self.state.interrupted:
                return "interrupted"
            if self.state.skipped:
                return "skipped"
            left = end - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(left, 0.01))

    def generate(self, kind: str, body: Any) -> tuple[int, Any]:
        """txt2img / img2img: validate, then run under the lock."""
        params, errors = coerce(body, request_spec(self.flavor, kind))
        if errors:
            return 422, {"detail": errors}
        default = "Default" if self.flavor == "sdnext" else None
        raw = body.get("sampler_name", default) or params["sampler_index"]  # null/"" → sampler_index
        sampler = self.find_sampler(raw)
        if sampler is None:  # checked before the lock, as SD.Next does
            status = 404 if self.flavor == "sdnext" else 400
            return status, error_body(self.flavor, status, "Sampler not found")
        params["sampler_name"] = sampler
        inits: list[Image.Image] = []
        if kind == "img2img":
            if not params["init_images"]:
                return 400, {"error": "Init image is none"}
            try:
                for text in params["init_images"]:
                    data = base64.b64decode(str(text).split(",", 1)[-1], validate=True)
                    with Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"]) as img:
                        inits.append(img.convert("RGB"))
            except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
                return 500, error_body(self.flavor, 500, "Invalid encoded image", "HTTPException")
        while not self.queue_lock.acquire(timeout=0.05):
            if self.stopping.is_set():
                return 503, error_body(self.flavor, 503, "server shutting down")
        try:
            started = time.monotonic()
            try:
                return self._run(kind, params, inits)
            finally:
                self.generation_log.append((started, time.monotonic()))
        finally:
            self.queue_lock.release()

    def _echo(self, params: dict[str, Any]) -> dict[str, Any]:
        echo = dict(params)
        if "init_images" in echo and not echo.get("include_init_images"):
            echo["init_images"], echo["mask"] = None, None
        return echo

    def _run(self, kind: str, p: dict[str, Any], inits: list[Image.Image]) -> tuple[int, Any]:
        sd = self.flavor == "sdnext"
        empty = {"images": [], "parameters": self._echo(p), "info": ""}
        if self.loading:
            return 200, empty
        if sd and p.get("sd_model_checkpoint"):
            found = self.find_model(p["sd_model_checkpoint"])
            if found is None:
                return 200, empty
            self.options["sd_model_checkpoint"] = found["title"]
        w, h, batch, n_iter, steps = p["width"], p["height"], p["batch_size"], p["n_iter"], p["steps"]
        total = batch * n_iter
        if min(w, h, batch, n_iter, steps) < 1 or w * h * total > _MAX_PIXELS or max(w, h) > 8192:
            return 500, error_body(self.flavor, 500, "", "OutOfMemoryError", "CUDA out of memory (stand-in limit)")
        rng = random.Random()
        seed = p["seed"] if p["seed"] not in (-1, None) else rng.randrange(4294967294)
        subseed = p["subseed"] if p["subseed"] not in (-1, None) else rng.randrange(4294967294)
        p["seed"], p["subseed"] = seed, subseed
        all_seeds = [seed + i for i in range(total)]
        p["_scheduler_class"] = SDNEXT_SAMPLERS.get(p["sampler_name"], "")
        applied: list[tuple[LoraFile, float]] = []
        for use in parse_tags(p["prompt"], self.flavor, float(self.options["extra_networks_default_multiplier"])):
            found = self.loras.resolve(use.name)
            if found is not None and all(f is not found for f, _ in applied):
                applied.append((found, use.unet))
        title = ("API-TXT" if kind == "txt2img" else "API-IMG") if sd else f"scripts_{kind}"
        self.state.begin(title, job_count=1 if sd else n_iter, reset_flags=True)
        names = [f.name for f, _ in applied]
        if sd and names != self.loaded:
            self.state.begin("LoRA")
            self._sleep(self.step_time)
            self.state.end()
        self.loaded = names
        draw = [(f.name, weight) for f, weight in applied]
        kept: list[tuple[Image.Image, int]] = []
        for it in range(n_iter):
            if self.state.interrupted or self.stopping.is_set():
                break
            seeds = all_seeds[it * batch : (it + 1) * batch]
            finals = [self._picture(s, p, draw, inits, i) for i, s in enumerate(seeds)]
            if sd:
                self.state.begin("Inference")
            self.state.start_steps(steps, finals[0], job_no=0 if sd else it)
            stopped = None
            for n in range(1, steps + 1):
                stopped = self._sleep(self.step_time)
                if stopped:
                    break
                self.state.step(n)
            fraction = self.state.sampling_step / steps
            if sd:
                self.state.end()
            if stopped == "skipped":
                self.state.clear_skip()
                continue
            if stopped == "interrupted":
                if self.state.preview_made and self._opt(p, "keep_incomplete"):
                    kept.append((preview(finals[0], fraction), seeds[0]))
                break
            if sd:
                self.state.begin("VAE Decode")
                self._sleep(self.step_time)
                self.state.end()
            kept.extend(zip(finals, seeds, strict=True))
        self.state.finish()
        return 200, self._response(kind, p, kept, all_seeds, applied)

    def _opt(self, p: dict[str, Any], key: str) -> Any:
        return self.options[key] if p.get(key) is None else p[key]

    def _picture(
        self, seed: int, p: dict[str, Any], draw: list[tuple[str, float]], inits: list[Image.Image], i: int
    ) -> Image.Image:
        img = render(seed, p["prompt"], draw, p["width"], p["height"])
        if inits:
            init = inits[i % len(inits)].resize(img.size)
            img = Image.blend(init, img, max(0.0, min(1.0, float(p["denoising_strength"]))))
        return img

    def _response(
        self,
        kind: str,
        p: dict[str, Any],
        kept: list[tuple[Image.Image, int]],
        all_seeds: list[int],
        applied: list[tuple[LoraFile, float]],
    ) -> dict[str, Any]:
        sd = self.flavor == "sdnext"
        model = self.model()
        total = p["batch_size"] * p["n_iter"]
        pairs = [(f.alias if not sd else f.name, f.hashes()[0 if sd else 1]) for f, _ in applied]
        texts = [
            infotext(
                self.flavor,
                p,
                seed=s,
                index=all_seeds.index(s),
                total=total,
                model={"name": model["model_name"], "hash": model["hash"]},
                loras=pairs,
                commit=COMMIT,
                add_hashes=bool(self.options["lora_add_hashes_to_infotext"]),
                img2img=kind == "img2img",
            )
            for _, s in kept
        ]
        fmt, quality = str(self._opt(p, "samples_format")), int(self._opt(p, "jpeg_quality"))
        encoded = [encode(img, fmt, text, quality) for (img, _), text in zip(kept, texts, strict=True)]
        first = 0
        if len(kept) > 1 and p["save_images"] and self._opt(p, "return_grid"):
            encoded.insert(0, encode(grid([img for img, _ in kept]), fmt, texts[0], quality))
            texts.insert(0, texts[0])
            first = 1
        extra: dict[str, Any] = {}
        if pairs:
            if sd:
                extra["LoRA networks"] = ", ".join(name for name, _ in pairs)
            else:
                extra["Lora hashes"] = ", ".join(f"{name}: {digest[:12]}" for name, digest in pairs)
        info: dict[str, Any] = {
            "prompt": p["prompt"],
            "all_prompts": [p["prompt"]] * total,
            "negative_prompt": p["negative_prompt"],
            "all_negative_prompts": [p["negative_prompt"]] * total,
            "seed": all_seeds[0],
            "all_seeds": all_seeds,
            "subseed": p["subseed"],
            "all_subseeds": [p["subseed"] + i for i in range(total)],
            "subseed_strength": p["subseed_strength"],
            "width": p["width"],
            "height": p["height"],
            "sampler_name": p["sampler_name"],
            "cfg_scale": p["cfg_scale"],
            "steps": p["steps"],
            "batch_size": p["batch_size"],
            "sd_model_hash": model["hash"],
            "seed_resize_from_w": p["seed_resize_from_w"],
            "seed_resize_from_h": p["seed_resize_from_h"],
            "denoising_strength": p["denoising_strength"],
            "extra_generation_params": extra,
            "index_of_first_image": first,
            "infotexts": texts,
            "styles": p["styles"] or [],
            "job_timestamp": self.state.job_timestamp,
            "clip_skip": p["clip_skip"],
        }
        if sd:
            info.update({"cfg_end": p["cfg_end"], "detailer": False, "detailer_model": None})
        else:
            info.update(
                {
                    "restore_faces": False,
                    "face_restoration_model": None,
                    "sd_model_name": model["model_name"],
                    "sd_vae_name": None,
                    "sd_vae_hash": None,
                    "is_using_inpainting_conditioning": False,
                    "version": "v1.10.1",
                }
            )
        images = [base64.b64encode(e).decode("ascii") for e in encoded] if p["send_images"] else []
        params = {k: v for k, v in self._echo(p).items() if not k.startswith("_")}
        return {"images": images, "parameters": params, "info": json.dumps(info)}
