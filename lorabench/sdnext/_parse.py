"""Shape checks shared by the response dataclasses: anything unexpected is a ProtocolError."""

from __future__ import annotations

from typing import Any

from lorabench.errors import ProtocolError

__all__ = ["as_list", "as_obj", "fail", "get_int", "get_num", "get_str"]


def fail(what: str) -> ProtocolError:
    return ProtocolError(f"Unexpected SD.Next response: {what}")


def as_obj(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise fail(f"{what} is {type(data).__name__}, not an object")
    return data


def as_list(data: object, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise fail(f"{what} is {type(data).__name__}, not a list")
    return data


def get_str(data: dict[str, Any], key: str, *, default: str | None = None, nullable: bool = False) -> Any:
    value = data.get(key, default)
    if value is None and (nullable or default is not None):
        return default
    if not isinstance(value, str):
        raise fail(f"{key!r} is {type(value).__name__}, not a string")
    return value


def get_num(data: dict[str, Any], key: str, default: float | None = None) -> Any:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"{key!r} is {type(value).__name__}, not a number")
    return value


def get_int(data: dict[str, Any], key: str, default: int | None = None) -> Any:
    value = get_num(data, key, default)
    if value is not None and value != int(value):
        raise fail(f"{key!r} is not an integer")
    return None if value is None else int(value)
