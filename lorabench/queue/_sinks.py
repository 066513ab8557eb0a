"""Result sinks: deliveries that run after each successful job, never blocking the queue.

A sink is any object with a ``name`` and ``async deliver(result) -> Delivery``. The runner
runs them in the background after the result rows exist, records each outcome per result
(``result_deliveries``), and an exception or a failed delivery never affects the job.
"""

from __future__ import annotations

import asyncio
import random
import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol, runtime_checkable

import httpx

from lorabench.catalog._history import ResultRecord
from lorabench.queue._results import EXTENSIONS, _write_atomic
from lorabench.sdnext._http import install_log_filter, redact

__all__ = ["Delivery", "FolderSink", "Sink", "WebhookSink", "result_payload"]

_FIELDS = frozenset({"date", "job", "index", "seed", "ext", "lora", "loras", "prompt", "id", "backend", "time"})
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Delivery:
    """What one sink did with one result."""

    ok: bool
    attempts: int = 1
    detail: str | None = None


@runtime_checkable
class Sink(Protocol):
    """Something that receives each new result."""

    name: str

    async def deliver(self, result: ResultRecord) -> Delivery: ...


def _clean(value: object, limit: int = 80) -> str:
    """One safe path component: no separators, no control characters, no leading dots."""
    text = unicodedata.normalize("NFC", str(value))
    text = _UNSAFE.sub("_", text)
    text = _SPACES.sub("_", text).strip("._ ")
    return text[:limit].rstrip("._ ") or "_"


def _fields(result: ResultRecord) -> dict[str, str]:
    names = result.lora_names
    created = result.created_at
    return {
        "date": result.day.isoformat() if result.day else "undated",
        "job": result.job_id,
        "index": str(result.image_index),
        "seed": str(result.seed if result.seed is not None else "noseed"),
        "ext": EXTENSIONS.get(result.format, result.format.lower()),
        "lora": names[0] if names else "no-lora",
        "loras": "+".join(names) if names else "no-lora",
        "prompt": re.sub(r"<[^>]*>", "", result.prompt or "")[:60] or "no-prompt",
        "id": str(result.id),
        "backend": re.sub(r"^https?://", "", result.backend or "unknown"),
        "time": created.strftime("%H%M%S") if created else "000000",
    }


class FolderSink:
    """Copy each result into ``folder`` at a path made from ``template``.

    Placeholders: ``{date}`` ``{job}`` ``{index}`` ``{seed}`` ``{ext}`` ``{lora}`` (first LoRA or
    ``no-lora``) ``{loras}`` (all, ``+``-joined) ``{prompt}`` (60 chars, tags removed) ``{id}``
    ``{backend}`` ``{time}``. Every substituted value is cleaned into a single path component,
    the template itself may not be absolute or contain ``..``, and the final path must resolve
    inside ``folder`` — nothing a prompt or a LoRA name says can write elsewhere. An existing
    file gets a ``_1``, ``_2``… suffix unless ``overwrite``.
    """

    def __init__(
        self,
        folder: str | Path,
        template: str = "{date}/{lora}/{seed}.{ext}",
        *,
        name: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.template = template
        self.name = name or f"folder:{self.folder}"
        self.overwrite = overwrite
        for literal, field_name, spec, conversion in string.Formatter().parse(template):
            if field_name is not None and field_name not in _FIELDS:
                raise ValueError(f"unknown placeholder {{{field_name}}}; known: {', '.join(sorted(_FIELDS))}")
            if spec or conversion:
                raise ValueError("placeholders take no format spec or conversion")
            del literal
        for pure in (PurePosixPath(template), PureWindowsPath(template)):
            if pure.is_absolute() or pure.drive or ".." in pure.parts:
                raise ValueError(f"the template {template!r} must be a relative path without '..'")

    def __repr__(self) -> str:
        return f"FolderSink({str(self.folder)!r}, template={self.template!r})"

    def target_for(self, result: ResultRecord) -> Path:
        """Where ``result`` goes (inside the folder, guaranteed)."""
        values = {k: _clean(v) for k, v in _fields(result).items()}
        relative = self.template.format(**values).replace("\\", "/")
        parts = [p for p in relative.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts):
            raise ValueError(f"the template made an unusable path {relative!r}")
        root = self.folder.resolve()
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root) or target == root:
            raise ValueError(f"the template made a path outside {root}: {relative!r}")
        return target

    async def deliver(self, result: ResultRecord) -> Delivery:
        target = self.target_for(result)
        written = await asyncio.to_thread(self._copy, Path(result.path), target)
        return Delivery(ok=True, detail=str(written))

    def _copy(self, source: Path, target: Path) -> Path:
        data = source.read_bytes()
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(self.folder.resolve()):
            raise ValueError(f"{target.parent} escapes {self.folder}")
        final = target
        n = 0
        while not self.overwrite and final.exists():
            n += 1
            final = target.with_name(f"{target.stem}_{n}{target.suffix}")
        _write_atomic(final, data)
        return final


def result_payload(result: ResultRecord) -> dict[str, Any]:
    """The JSON a webhook receives for one result (metadata only, no image bytes)."""
    return {
        "event": "lorabench.result",
        "result": {
            "id": result.id,
            "job_id": result.job_id,
            "job_key": result.job_key,
            "image_index": result.image_index,
            "path": result.path,
            "format": result.format,
            "width": result.width,
            "height": result.height,
            "bytes": result.bytes,
            "sha256": result.content_sha256,
            "seed": result.seed,
            "prompt": result.prompt,
            "negative_prompt": result.negative_prompt,
            "loras": [
                {k: item.get(k) for k in ("name", "weight", "hash", "lora_id", "matched_by")} for item in result.loras
            ],
            "backend": result.backend,
            "day": result.day.isoformat() if result.day else None,
            "created_at": result.created_at.isoformat() + "Z" if result.created_at else None,
            "timings": {
                "queue_wait_s": result.queue_wait_s,
                "generation_s": result.generation_s,
                "total_s": result.total_s,
            },
        },
    }


class WebhookSink:
    """POST each result's metadata as JSON to ``url``, retrying with capped, jittered backoff.

    Retried: connection errors, timeouts, 429 and 5xx; any other non-2xx fails at once. After
    ``attempts`` tries the failure is recorded for that result and the queue goes on.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        attempts: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        name: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the webhook URL must be http:// or https:// with a host")
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        install_log_filter()
        self.url = url
        self.name = name or f"webhook:{redact(url)}"
        self._headers = dict(headers or {})
        self.timeout, self.attempts = float(timeout), int(attempts)
        self.base_delay, self.max_delay = float(base_delay), float(max_delay)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"WebhookSink({redact(self.url)!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def deliver(self, result: ResultRecord) -> Delivery:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, follow_redirects=False, trust_env=False, transport=self._transport
            )
        body = result_payload(result)
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                async with asyncio.timeout(self.timeout * 2):
                    response = await self._client.post(self.url, json=body, headers=self._headers)
                if 200 <= response.status_code < 300:
                    return Delivery(ok=True, attempts=attempt, detail=f"HTTP {response.status_code}")
                problem = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    return Delivery(ok=False, attempts=attempt, detail=problem)
            except (httpx.HTTPError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
            if attempt < self.attempts:
                cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                await asyncio.sleep(cap / 2 + random.random() * cap / 2)
        return Delivery(ok=False, attempts=self.attempts, detail=problem)
