"""The base of lorabench's anywidgets: strict keyword arguments and validated browser messages.

Everything the browser sends is untrusted (security-reliability.md §1, rule 5):

- trait updates are accepted only for the names in ``_browser_writable``; each value is passed
  through :meth:`LorabenchWidget._from_browser` (type coercion) before the trait's own validator;
- custom messages must be ``{"type": <allow-listed>, "uuid": <str>, …}``; each gets exactly one
  reply, ``{"type": …, "uuid": …, …result}`` or ``{"type": …, "uuid": …, "error": "…"}``. A
  :class:`MessageError` (bad input) is logged as a warning; anything else with
  ``logger.exception``. Neither changes any state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, ClassVar

import anywidget
from ipywidgets.widgets.widget import JUPYTER_WIDGETS_ECHO
from traitlets import TraitError

__all__ = ["LorabenchWidget", "MessageError", "check_id_list", "check_int"]

logger = logging.getLogger("lorabench.widgets")

MAX_UUID_CHARS = 64
SLOW_MESSAGE_S = 2.0

Handler = Callable[[dict[str, Any], list[bytes]], tuple[dict[str, Any], list[bytes]]]


class MessageError(ValueError):
    """A browser message was malformed or asked for something that does not exist."""


def check_int(msg: dict[str, Any], name: str, low: int, high: int) -> int:
    """``msg[name]`` as an int in ``[low, high]`` (bools, floats and strings are refused)."""
    value = msg.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise MessageError(f"{name} must be between {low} and {high}, not {value}")
    return value


def check_id_list(value: Any, name: str, limit: int) -> list[int]:
    """A list of at most ``limit`` positive integer ids (duplicates dropped, order kept)."""
    if not isinstance(value, list):
        raise MessageError(f"{name} must be a list of ids")
    if len(value) > limit:
        raise MessageError(f"{name} has {len(value)} ids; at most {limit} per request")
    ids: list[int] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item < 2**63:
            raise MessageError(f"{name} must hold positive integer ids")
        ids.append(item)
    return list(dict.fromkeys(ids))


def as_number(value: Any) -> float | None:
    """A finite float from a browser value, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class LorabenchWidget(anywidget.AnyWidget):
    """An anywidget that rejects unknown keyword arguments and validates what the browser sends.

    Subclasses list their message handlers in ``_handlers`` (type → method name) and the traits
    the browser may change in ``_browser_writable``.
    """

    _handlers: ClassVar[dict[str, str]] = {}
    _browser_writable: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(k for k in kwargs if not self.class_traits().get(k) or k.startswith("_"))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s): {', '.join(unknown)}")
        super().__init__(**kwargs)
        self.on_msg(self._dispatch)

    # -- trait updates from the browser ------------------------------------------------------------

    def _from_browser(self, name: str, value: Any) -> Any:
        """Coerce a browser-sent value for trait ``name``; raise ``MessageError`` to refuse it."""
        return value

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """Apply a browser state update: only writable traits, each coerced and validated."""
        accepted: dict[str, Any] = {}
        refused: list[str] = []
        for name, value in sync_data.items():
            if name not in self._browser_writable:
                refused.append(name)
                continue
            try:
                accepted[name] = self._from_browser(name, value)
            except MessageError as exc:
                logger.warning("Refused %s.%s from the browser: %s", type(self).__name__, name, exc)
                refused.append(name)
        if JUPYTER_WIDGETS_ECHO and accepted:  # as ipywidgets does: acknowledge what the browser sent
            self._send({"method": "echo_update", "state": {k: sync_data[k] for k in accepted}, "buffer_paths": []})
        for name, value in accepted.items():
            try:
                with self._lock_property(**{name: sync_data[name]}):
                    self.set_trait(name, value)
            except TraitError as exc:
                logger.warning("Refused %s.%s from the browser: %s", type(self).__name__, name, exc)
                refused.append(name)
                continue
            if getattr(self, name) != sync_data[name]:  # coerced or kept: tell the browser the real value
                refused.append(name)
        for name in refused:
            if name in self.keys:
                self.send_state(name)  # put the browser back in step with Python

    # -- custom messages ---------------------------------------------------------------------------

    def _dispatch(self, _widget: Any, content: Any, buffers: list[bytes]) -> None:
        msg_type = content.get("type") if isinstance(content, dict) else None
        uuid = content.get("uuid") if isinstance(content, dict) else None
        if not isinstance(uuid, str) or len(uuid) > MAX_UUID_CHARS:
            uuid = None
        reply_type = msg_type if isinstance(msg_type, str) and msg_type in self._handlers else "error"
        started = time.perf_counter()
        out_buffers: list[bytes] = []
        try:
            if not isinstance(content, dict):
                raise MessageError("a message must be an object")
            if reply_type == "error":
                raise MessageError(f"unknown message type {str(msg_type)[:40]!r}")
            if uuid is None:
                raise MessageError("a message needs a uuid (a string of at most 64 characters)")
            handler: Handler = getattr(self, self._handlers[reply_type])
            result, out_buffers = handler(content, list(buffers or []))
            reply = {**result, "type": reply_type, "uuid": uuid}
        except MessageError as exc:
            logger.warning("Rejected %s message from the browser: %s", type(self).__name__, exc)
            reply = {"type": reply_type, "uuid": uuid, "error": str(exc)}
            out_buffers = []
        except Exception as exc:
            logger.exception("%s message %r failed", type(self).__name__, reply_type)
            reply = {"type": reply_type, "uuid": uuid, "error": str(exc) or type(exc).__name__}
            out_buffers = []
        elapsed = time.perf_counter() - started
        if elapsed > SLOW_MESSAGE_S:
            logger.warning("%s message %r took %.1f s", type(self).__name__, reply_type, elapsed)
        self.send(reply, out_buffers or None)
