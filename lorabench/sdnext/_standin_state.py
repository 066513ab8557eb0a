"""The stand-in's shared job state (``/progress``, ``/status``, ``/history``) and request coercion.

State mirrors SD.Next's flat ``shared.state`` singleton (sdnext-api.md §4.1): every ``begin()``
clears it and assigns a new random 15-hex ``id``; every ``end()`` sets ``job=""``,
``job_count=0``, ``id=""`` but keeps ``sampling_step`` (so progress can be stale between
phases). The A1111 flavor keeps one job per request with ``job_no``/``job_count`` counting
``n_iter`` and no ``id``.
"""

from __future__ import annotations

import base64
import collections
import io
import secrets
import threading
import time
from typing import Any

from PIL import Image

from lorabench.sdnext._standin_images import preview

__all__ = ["JobState", "coerce"]

_PREVIEW_SIZE = 256


class JobState:
    """Thread-safe progress state of one stand-in server."""

    def __init__(self, flavor: str) -> None:
        self.flavor = flavor
        self._lock = threading.Lock()
        self.id: int | str = 0
        self.job = ""
        self.job_count = 0
        self.job_no = 0
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.skipped = False
        self.interrupted = False
        self.time_start = 0.0
        self.final: Image.Image | None = None
        self.preview_made = False
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        self._started = time.time()

    # ----------------------------------------------------------------- transitions

    def begin(self, job: str, *, job_count: int = 1, reset_flags: bool = False) -> None:
        """Start a job or phase: clear the state, new ``id``."""
        with self._lock:
            if reset_flags:
                self.interrupted = self.skipped = False
            self.job, self.job_count, self.job_no = job, job_count, 0
            self.sampling_step = self.sampling_steps = 0
            self.id = secrets.token_hex(8)[:15] if self.flavor == "sdnext" else self.id
            self.time_start = time.time()
            self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
            self.final, self.preview_made = None, False
            self._record("begin")

    def end(self) -> None:
        """End a job or phase (``sampling_step`` is kept, as SD.Next does)."""
        with self._lock:
            self._record("end")
            self.job, self.job_count = "", 0
            if self.flavor == "sdnext":
                self.id = ""

    def finish(self) -> None:
        """End the request: nothing stale is left, so ``/progress`` reads idle."""
        self.end()
        with self._lock:
            self.sampling_step = self.sampling_steps = 0
            self.final = None

    def start_steps(self, steps: int, final: Image.Image | None, job_no: int = 0) -> None:
        """Enter sampling: ``steps`` steps towards ``final`` (for previews)."""
        with self._lock:
            self.sampling_steps, self.sampling_step, self.job_no = steps, 0, job_no
            self.final, self.preview_made = final, False

    def step(self, n: int) -> None:
        """One sampling step done."""
        with self._lock:
            self.sampling_step = n

    def _record(self, op: str) -> None:
        if self.flavor != "sdnext" or not self.job:
            return
        now = time.time()
        self.history.append(
            {
                "id": self.id,
                "job": self.job.lower(),
                "op": op,
                "timestamp": now,
                "duration": round(now - self.time_start, 3) if op == "end" else None,
                "outputs": [],
            }
        )

    # ----------------------------------------------------------------- answers

    def _state(self) -> dict[str, Any]:
        state = {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }
        if self.flavor == "a1111":
            state["stopping_generation"] = False
        return state

    def idle(self) -> bool:
        """SD.Next: ``job_count == 0 and sampling_step == 0``; A1111: ``job_count == 0``."""
        return self.job_count == 0 and (self.flavor == "a1111" or self.sampling_step == 0)

    def progress(self, skip_current_image: bool) -> dict[str, Any]:
        """The ``/sdapi/v1/progress`` answer; a preview is made even when it is not sent."""
        with self._lock:
            answer: dict[str, Any] = {
                "progress": 0,
                "eta_relative": 0,
                "state": self._state(),
                "current_image": None,
                "textinfo": None,
            }
            if self.flavor == "sdnext":
                answer["id"] = self.id
            else:
                answer["current_task"] = None
            if self.idle():
                return answer
            step_x, step_y = self.sampling_step, max(self.sampling_steps, self.sampling_step)
            if self.flavor == "sdnext":
                batch_x, batch_y = max(self.job_no, 0), max(self.job_count, 1)
                done = (step_y * batch_x + step_x) / (step_y * batch_y) if step_y else 0.0
            else:
                count = max(self.job_count, 1)
                done = 0.01 + self.job_no / count + (step_x / step_y / count if step_y else 0.0)
            done = min(done, 1.0)
            elapsed = time.time() - self.time_start
            answer["progress"] = round(done, 2)
            answer["eta_relative"] = round(elapsed / done - elapsed, 2) if done > 0 else 0
            final = self.final
            fraction = step_x / step_y if step_y else 0.0
            if final is not None and step_x > 0:
                self.preview_made = True
        if final is not None and step_x > 0 and not skip_current_image:
            out = io.BytesIO()
            preview(final, fraction, _PREVIEW_SIZE).save(out, "JPEG", quality=60)
            answer["current_image"] = base64.b64encode(out.getvalue()).decode("ascii")
        return answer

    def status(self) -> dict[str, Any]:
        """SD.Next's ``/sdapi/v1/status`` (flickers to ``idle`` between phases)."""
        with self._lock:
            now = time.time()
            steps = max(self.sampling_steps, self.sampling_step)
            done = self.sampling_step / steps if steps else 0.0
            status = (
                "interrupted" if self.interrupted else "skipped" if self.skipped else "running" if self.job else "idle"
            )
            return {
                "status": status,
                "task": self.job,
                "timestamp": self.job_timestamp,
                "current": self.job,
                "id": self.id,
                "job": self.job_no,
                "jobs": self.job_count,
                "total": self.job_count,
                "step": self.sampling_step,
                "steps": self.sampling_steps,
                "queued": 0,
                "uptime": round(now - self._started),
                "elapsed": round(now - self.time_start, 2) if self.job else 0,
                "eta": None,
                "progress": round(done, 2),
            }

    def interrupt(self) -> None:
        """Flag the running job (lost if nothing runs: the next job resets it)."""
        with self._lock:
            self.interrupted = True

    def skip(self) -> None:
        """Flag the current iteration as skipped."""
        with self._lock:
            self.skipped = True

    def clear_skip(self) -> None:
        """Forget a consumed skip."""
        with self._lock:
            self.skipped = False


# --------------------------------------------------------------------------- request coercion

_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _as_int(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, bool):
        return int(v), None
    if isinstance(v, int):
        return v, None
    if isinstance(v, float):
        return (int(v), None) if v.is_integer() else (None, "int_from_float")
    if isinstance(v, str):
        try:
            return int(v.strip()), None
        except ValueError:
            return None, "int_parsing"
    return None, "int_type"


def _as_float(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, int | float):
        return float(v), None
    if isinstance(v, str):
        try:
            return float(v.strip()), None
        except ValueError:
            return None, "float_parsing"
    return None, "float_type"


def _as_bool(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, bool):
        return v, None
    if isinstance(v, int) and v in (0, 1):
        return bool(v), None
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE, None
    return None, "bool_parsing" if isinstance(v, str | int) else "bool_type"


_KINDS = {
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "str": lambda v: (v, None) if isinstance(v, str) else (None, "string_type"),
    "dict": lambda v: (v, None) if isinstance(v, dict) else (None, "dict_type"),
    "list": lambda v: (list(v), None) if isinstance(v, list | tuple) else (None, "list_type"),
    "any": lambda v: (v, None),
}
_MESSAGES = {
    "int_from_float": "Input should be a valid integer, got a number with a fractional part",
    "int_parsing": "Input should be a valid integer, unable to parse string as an integer",
    "int_type": "Input should be a valid integer",
    "float_parsing": "Input should be a valid number, unable to parse string as a number",
    "float_type": "Input should be a valid number",
    "bool_parsing": "Input should be a valid boolean, unable to interpret input",
    "bool_type": "Input should be a valid boolean",
    "string_type": "Input should be a valid string",
    "dict_type": "Input should be a valid dictionary",
    "list_type": "Input should be a valid list",
}


def coerce(body: Any, spec: dict[str, tuple[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pydantic-v2-like lax validation: ``null`` → default, unknown keys dropped, 422 details."""
    if not isinstance(body, dict):
        return {}, [
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary",
                "input": body,
            }
        ]
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for key, (kind, default) in spec.items():
        raw = body.get(key)
        if raw is None:
            values[key] = default() if callable(default) else default
            continue
        value, problem = _KINDS[kind](raw)
        if problem:
            errors.append({"type": problem, "loc": ["body", key], "msg": _MESSAGES[problem], "input": raw})
        values[key] = value
    return values, errors
