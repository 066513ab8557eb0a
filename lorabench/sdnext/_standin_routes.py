"""The stand-in's routes: auth, rate limit, then one small function per endpoint (sdnext-api.md §2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from lorabench.sdnext._standin_engine import Engine
from lorabench.sdnext._standin_spec import COMMIT, MODELS, NO_CONTENT, error_body

if TYPE_CHECKING:
    from email.message import Message

    from lorabench.sdnext._standin import StandinServer

__all__ = ["route"]

_Handler = Callable[[Engine, dict[str, str], Any], tuple[int, Any]]
_P = "/sdapi/v1/"


def _version(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, {
        "app": "sd.next",
        "updated": "2026-07-23",
        "commit": COMMIT,
        "branch": "master",
        "url": "https://github.com/vladmandic/sdnext",
        "kanvas": "unknown",
        "ui": "main",
    }


def _progress(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    skip = q.get("skip_current_image", "false").lower() in ("1", "true", "yes", "on")
    return 200, e.state.progress(skip)


def _history(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    wanted = q.get("id")
    return 200, [h for h in e.state.history if not wanted or h["id"] == wanted]


def _memory(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    gib = 2**30
    return 200, {"ram": {"free": 12.0 * gib, "used": 4.0 * gib, "total": 16.0 * gib}, "cuda": {"error": "unavailable"}}


def _models(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, [{k: v for k, v in m.items() if not k.startswith("_")} for m in MODELS]


def _lora(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    name = q.get("lora", "")
    found = e.loras.find(name)
    if found is None:
        return 404, error_body(e.flavor, 404, f"Lora '{name}' not found")
    sha = found.hashes()[0]
    return 200, {
        "name": found.name,
        "filename": found.path,
        "fullname": found.fullname,
        "metadata": found.metadata,
        "is_safetensors": True,
        "alias": found.alias,
        "hash": sha or None,
        "shorthash": sha[:8] or None,
        "sd_version": str(found.metadata.get("ss_base_model_version") or ""),
    }


def _extra_networks(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    if q.get("page", "lora").lower() != "lora":
        return 200, []
    return 200, [
        {
            "name": f.name,
            "type": "lora",
            "title": f.name,
            "fullname": f.fullname,
            "filename": f.path,
            "hash": f.hashes()[0][:8] or None,
            "preview": None,
            "version": "",
            "tags": "|".join(sorted(f.metadata.get("ss_tag_frequency", {}) or {}))
            if isinstance(f.metadata.get("ss_tag_frequency"), dict)
            else "",
        }
        for f in e.loras.files()
    ]


def _checkpoint(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    if e.loading:
        return 200, {"type": None, "class": None}
    m = e.model()
    return 200, {
        "type": "sd",
        "class": m["_class"],
        "title": m["title"],
        "name": m["model_name"],
        "filename": m["filename"],
        "hash": m["hash"],
    }


def _refresh(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    files = e.loras.refresh()
    return 200, ({f.name: f.item() for f in files} if e.flavor == "sdnext" else None)


def _interrupt(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    e.state.interrupt()
    return (204, NO_CONTENT) if e.flavor == "sdnext" else (200, {})


def _skip(e: Engine, q: dict[str, str], body: Any) -> tuple[int, Any]:
    e.state.skip()
    return (204, NO_CONTENT) if e.flavor == "sdnext" else (200, None)


_BOTH: dict[tuple[str, str], _Handler] = {
    ("GET", _P + "progress"): _progress,
    ("GET", _P + "memory"): _memory,
    ("GET", _P + "options"): lambda e, q, b: (200, dict(e.options)),
    ("POST", _P + "options"): lambda e, q, b: e.set_options(b),
    ("GET", _P + "sd-models"): _models,
    ("GET", _P + "samplers"): lambda e, q, b: (200, e.samplers()),
    ("GET", _P + "loras"): lambda e, q, b: (200, [f.item() for f in e.loras.files()]),
    ("POST", _P + "refresh-loras"): _refresh,
    ("POST", _P + "interrupt"): _interrupt,
    ("POST", _P + "skip"): _skip,
    ("POST", _P + "txt2img"): lambda e, q, b: e.generate("txt2img", b),
    ("POST", _P + "img2img"): lambda e, q, b: e.generate("img2img", b),
}
_SDNEXT_ONLY: dict[tuple[str, str], _Handler] = {
    ("GET", _P + "version"): _version,
    ("GET", _P + "status"): lambda e, q, b: (200, e.state.status()),
    ("GET", _P + "history"): _history,
    ("GET", _P + "lora"): _lora,
    ("GET", _P + "loaded-loras"): lambda e, q, b: (200, list(e.loaded)),
    ("GET", _P + "extra-networks"): _extra_networks,
    ("GET", _P + "checkpoint"): _checkpoint,
}
_NEEDS_BODY = {_P + "txt2img", _P + "img2img", _P + "options"}


def _not_found(flavor: str) -> dict[str, Any]:
    return error_body(flavor, 404, "Not Found") if flavor == "sdnext" else {"detail": "Not Found"}


def route(
    st: StandinServer, method: str, target: str, headers: Message, body: bytes, ip: str
) -> tuple[int, Any, dict[str, str]]:
    """Answer one request: ``(status, JSON payload or NO_CONTENT, extra headers)``."""
    flavor = st.flavor
    path, _, query = target.partition("?")
    denied = st._check_auth(headers.get("Authorization"))
    if denied:
        return 401, error_body(flavor, 401, denied), {"WWW-Authenticate": "Basic"}
    wait = st._check_rate(ip, path)
    if wait is not None:
        return 429, error_body(flavor, 429, f"{ip}:{path}: rate limit exceeded"), {"Retry-After": str(wait)}
    table = {**_BOTH, **(_SDNEXT_ONLY if flavor == "sdnext" else {})}
    handler = table.get((method, path))
    if handler is None:
        if any(p == path for _, p in table):
            return 405, {"detail": "Method Not Allowed"}, {}
        return 404, _not_found(flavor), {}
    data: Any = None
    if method == "POST" and path in _NEEDS_BODY:
        if not body.strip():
            return 422, {"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]}, {}
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            detail = [
                {
                    "type": "json_invalid",
                    "loc": ["body", 0],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": str(exc)[:200]},
                }
            ]
            return 422, {"detail": detail}, {}
    status, payload = handler(st.engine, dict(parse_qsl(query)), data)
    return status, payload, {}
