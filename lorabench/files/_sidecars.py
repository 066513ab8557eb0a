"""Sidecar files next to a LoRA: Civitai Helper, A1111, Lora-Manager, StabilityMatrix, text.

:func:`read_sidecars` reads every known sidecar of a model file (lora-files.md §9), pulls
out normalised fields, and merges them with provenance: each merged :class:`Field` names
the sidecar kind it came from, and lists every source's value when the sources disagree.
Merge precedence (highest first): ``a1111_json`` (user-edited), ``lora_manager``,
``civitai_info``, ``stability_matrix``, ``description_text``, ``markdown``.

Sidecars are untrusted data. They are read with ``lstat`` + ``S_ISREG`` before opening and
``O_NONBLOCK | O_NOFOLLOW`` (FIFOs and symlinks are never opened), under a byte cap, and
parsed under depth limits. Broken sidecars never raise: each problem becomes a warning
``{"path", "code", "message"}`` (codes ``bad_json``, ``bad_type``, ``too_large``,
``not_regular_file``, ``unreadable``) and the sidecar's status becomes ``"error"``; the
fields that could still be trusted are kept. Paths *inside* sidecars (``file``,
``file_path``, ``preview_url``…) are data: they are never opened or resolved.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabench.files._html import html_to_text
from lorabench.files._listing import names_in as _names_in

__all__ = ["PREVIEW_EXTENSIONS", "SIDECAR_PRECEDENCE", "Field", "Sidecar", "SidecarReport",
           "find_preview", "read_sidecars"]  # fmt: skip

PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
SIDECAR_PRECEDENCE = (
    "a1111_json", "lora_manager", "civitai_info", "stability_matrix", "description_text", "markdown",
)  # fmt: skip
"""Sidecar kinds from highest to lowest merge precedence."""

# (kind, file-name suffix after the model's stem), in reading order.
_SIDECAR_FILES = (
    ("civitai_info", ".civitai.info"), ("a1111_json", ".json"), ("lora_manager", ".metadata.json"),
    ("stability_matrix", ".cm-info.json"), ("description_text", ".txt"),
    ("description_text", ".description.txt"), ("markdown", ".md"),
)  # fmt: skip
_TEXT_KINDS = frozenset({"description_text", "markdown"})
MAX_TEXT_CHARS = 100_000
_MAX_LIST_ITEMS = 1_000
_MAX_IMAGE_URLS = 100
_MAX_JSON_DEPTH = 64
_LOOKS_LIKE_HTML = re.compile(r"<\s*/?\s*[a-zA-Z!]")
_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "dict": ("an object", lambda v: isinstance(v, dict)),
    "list": ("an array", lambda v: isinstance(v, list)),
}
_JSON_TYPE_NAMES = {
    dict: "object", list: "array", str: "string", int: "number", float: "number",
    bool: "boolean", type(None): "null",
}  # fmt: skip


@dataclass
class Field:
    """A merged field: the winning ``value``, the sidecar ``source`` kind, and — when the
    sources disagree — every source's ``{"value", "source"}`` in precedence order."""

    value: Any
    source: str
    alternatives: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready ``{"value", "source", "alternatives"}`` mapping."""
        return {"value": self.value, "source": self.source, "alternatives": list(self.alternatives)}


@dataclass
class Sidecar:
    """One sidecar file that exists next to the model.

    ``status`` is ``"ok"``, ``"not_found"`` (a Civitai ``{}``: looked up, not on Civitai) or
    ``"error"`` (see the report's warnings; ``fields`` keeps what could still be trusted).
    ``raw`` is the parsed JSON for JSON kinds and the (bounded) text for text kinds.
    """

    kind: str
    path: str
    fields: dict[str, Any] = field(default_factory=dict)
    raw: Any = None
    status: str = "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready ``{"kind", "path", "fields", "raw", "status"}`` mapping (values shared, not copied)."""
        return {"kind": self.kind, "path": self.path, "fields": dict(self.fields), "raw": self.raw,
                "status": self.status}  # fmt: skip


@dataclass
class SidecarReport:
    """Everything the sidecars of one model say, merged, with per-file problems."""

    model_path: str
    sidecars: list[Sidecar] = field(default_factory=list)
    fields: dict[str, Field] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)
    preview: str | None = None
    """The preview image :func:`find_preview` chose, if any."""

    def value(self, name: str, default: Any = None) -> Any:
        """The merged value of field ``name``, or ``default``."""
        found = self.fields.get(name)
        return found.value if found is not None else default

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of everything (containers rebuilt; leaf values shared, not copied)."""
        return {
            "model_path": self.model_path,
            "sidecars": [s.to_dict() for s in self.sidecars],
            "fields": {name: f.to_dict() for name, f in self.fields.items()},
            "warnings": [dict(w) for w in self.warnings],
            "preview": self.preview,
        }


# --------------------------------------------------------------------------- file access


class _Problem(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _stem_and_folder(model_path: str | os.PathLike[str]) -> tuple[Path, str]:
    path = Path(model_path)
    return path.parent, path.stem


def find_preview(model_path: str | os.PathLike[str]) -> Path | None:
    """The model's preview image in A1111 order, or ``None``.

    For each extension in :data:`PREVIEW_EXTENSIONS`, ``<stem>.<ext>`` is tried before
    ``<stem>.preview.<ext>``. Only regular files count: symlinks, FIFOs and directories are
    skipped (checked with ``lstat``, nothing is opened).
    """
    folder, stem = _stem_and_folder(model_path)
    names = _names_in(folder)
    for ext in PREVIEW_EXTENSIONS:
        for name in (f"{stem}.{ext}", f"{stem}.preview.{ext}"):
            if names is not None and name not in names:
                continue
            candidate = folder / name
            try:
                info = os.lstat(candidate)
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(info.st_mode):
                return candidate
    return None


def _read_file(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes; ``None`` if it does not exist; :class:`_Problem` otherwise."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise _Problem("unreadable", f"cannot stat: {exc}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise _Problem("not_regular_file", "is a symbolic link; sidecar links are not followed")
    if not stat.S_ISREG(info.st_mode):
        raise _Problem("not_regular_file", "is not a regular file (FIFO, socket, device or dir)")
    if info.st_size > max_bytes:
        raise _Problem("too_large", f"is {info.st_size} bytes, over the {max_bytes}-byte cap")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _Problem("unreadable", f"cannot open: {exc.strerror or exc}") from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise _Problem("not_regular_file", "was replaced while being opened")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _Problem("too_large", f"grew over the {max_bytes}-byte cap while read")
        return b"".join(chunks)
    except OSError as exc:
        raise _Problem("unreadable", f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number out of range: {text[:40]}")
    return number


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_depth_ok(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return True


def _parse_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Problem("unreadable", f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        parsed = json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise _Problem("bad_json", "is nested too deeply to parse") from exc
    except ValueError as exc:
        raise _Problem("bad_json", f"is not valid JSON: {str(exc)[:200]}") from exc
    if not _json_depth_ok(parsed):
        raise _Problem("bad_json", f"is nested more than {_MAX_JSON_DEPTH} levels deep")
    return parsed


# --------------------------------------------------------------------------- extraction


def _type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


class _Ctx:
    """Typed getters that turn wrong types into ``bad_type`` warnings."""

    def __init__(self, sidecar: Sidecar, warnings: list[dict[str, str]]) -> None:
        self.sidecar = sidecar
        self.warnings = warnings

    def warn(self, code: str, message: str) -> None:
        self.warnings.append({"path": self.sidecar.path, "code": code, "message": message})
        self.sidecar.status = "error"

    def put(self, name: str, value: Any) -> None:
        if value is not None and value != "" and value != [] and value != {}:
            self.sidecar.fields[name] = value

    def get(self, obj: dict[str, Any], key: str, kind: str) -> Any:
        """``obj[key]`` if it has JSON type ``kind``; ``None`` if absent or (warned) wrong."""
        value = obj.get(key)
        if value is None:
            return None
        expected, accepts = _CHECKS[kind]
        if accepts(value):
            return value
        self.warn("bad_type", f"{key!r} should be {expected}, not {_type_name(value)}")
        return None

    def text(self, obj: dict[str, Any], key: str) -> str | None:
        value = self.get(obj, key, "str")
        return (value.strip()[:MAX_TEXT_CHARS] or None) if value is not None else None

    def number(self, obj: dict[str, Any], key: str) -> float | None:
        value = obj.get(key)
        if isinstance(value, str) and value.strip():
            try:
                return _finite_float(value.strip())
            except ValueError:
                pass
        value = self.get(obj, key, "number")
        return float(value) if value is not None else None

    def words(self, obj: dict[str, Any], key: str) -> list[str]:
        items = self.get(obj, key, "list") or []
        words: list[str] = []
        wrong = [item for item in items if not isinstance(item, str)]
        if wrong:  # keep the strings, warn once
            self.warn("bad_type", f"{key!r} items should be strings, not {_type_name(wrong[0])}")
        for item in items:
            word = item.strip() if isinstance(item, str) else ""
            if word and word not in words and len(words) < _MAX_LIST_ITEMS:
                words.append(word[:MAX_TEXT_CHARS])
        return words

    def hashes(self, obj: dict[str, Any] | None, key: str) -> dict[str, str]:
        found = self.get(obj, key, "dict") if obj is not None else None
        return {
            str(name).lower()[:32]: value.strip().lower()[:128]
            for name, value in list((found or {}).items())[:32]
            if isinstance(value, str) and value.strip()
        }

    def description(self, value: str | None, *, html: bool | None = None) -> None:
        """``description`` as text; HTML (or HTML-looking when ``html`` is None) is kept raw
        in ``description_html`` and reduced to text with :func:`html_to_text`."""
        if not value:
            return
        if html or (html is None and _LOOKS_LIKE_HTML.search(value)):
            self.put("description_html", value)
            self.put("description", html_to_text(value)[:MAX_TEXT_CHARS])
        else:
            self.put("description", value)


def _extract_civitai(ctx: _Ctx, data: dict[str, Any]) -> None:
    if not data:
        ctx.sidecar.status = "not_found"
        return
    ctx.put("civitai_model_id", ctx.get(data, "modelId", "int"))
    ctx.put("civitai_version_id", ctx.get(data, "id", "int"))
    ctx.put("version_name", ctx.text(data, "name"))
    ctx.put("base_model", ctx.text(data, "baseModel"))
    ctx.put("trained_words", ctx.words(data, "trainedWords"))
    ctx.description(ctx.text(data, "description"), html=True)
    ctx.put("published_at", ctx.text(data, "publishedAt"))
    ctx.put("air", ctx.text(data, "air"))
    votes: list[bool] = []
    model = ctx.get(data, "model", "dict")
    if model is not None:
        ctx.put("model_name", ctx.text(model, "name"))
        ctx.put("model_type", ctx.text(model, "type"))
        model_nsfw = ctx.get(model, "nsfw", "bool")
        if model_nsfw is not None:
            votes.append(model_nsfw)
    level = ctx.get(data, "nsfwLevel", "int")
    if level is not None:
        votes.append(level >= 4)  # bit flags: 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX
    urls: list[str] = []
    for image in ctx.get(data, "images", "list") or []:
        if not isinstance(image, dict):
            continue
        url = image.get("url")
        if isinstance(url, str) and url.strip() and len(urls) < _MAX_IMAGE_URLS:
            urls.append(url.strip()[:2048])
        rating = image.get("nsfw")  # 2023 shape: "None" | "Soft" | "Mature" | "X"
        if isinstance(rating, str):
            votes.append(rating.strip().lower() in {"mature", "x"})
    ctx.put("image_urls", urls)
    if votes:
        ctx.put("nsfw", any(votes))
    files = [item for item in ctx.get(data, "files", "list") or [] if isinstance(item, dict)]
    primary = next((item for item in files if item.get("primary") is True), None)
    hashes = ctx.hashes(primary or (files[0] if files else None), "hashes")
    ctx.put("hashes", hashes)
    ctx.put("sha256", hashes.get("sha256"))
    ctx.put("autov3", hashes.get("autov3"))


def _extract_a1111(ctx: _Ctx, data: dict[str, Any]) -> None:
    ctx.description(ctx.text(data, "description"))
    sd_version = ctx.text(data, "sd version")
    ctx.put("sd_version", None if sd_version == "Unknown" else sd_version)
    activation = ctx.text(data, "activation text")
    ctx.put("activation_text", activation)
    if activation:
        words = [word.strip() for word in activation.split(",") if word.strip()]
        ctx.put("trained_words", list(dict.fromkeys(words))[:_MAX_LIST_ITEMS])
    weight = ctx.number(data, "preferred weight")
    ctx.put("preferred_weight", None if weight == 0 else weight)  # 0 means "unset"
    ctx.put("negative_text", ctx.text(data, "negative text"))
    ctx.put("notes", ctx.text(data, "notes"))


def _usage_strength(ctx: _Ctx, tips: Any) -> float | None:
    if tips is None or tips == "":
        return None
    if isinstance(tips, str):
        try:
            tips = json.loads(tips[:MAX_TEXT_CHARS], parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            ctx.warn("bad_json", "'usage_tips' is not a valid JSON string")
            return None
    if not isinstance(tips, dict):
        ctx.warn("bad_type", f"'usage_tips' should hold a JSON object, not {_type_name(tips)}")
        return None
    return ctx.number(tips, "strength")


def _extract_lora_manager(ctx: _Ctx, data: dict[str, Any]) -> None:
    ctx.put("model_name", ctx.text(data, "model_name"))
    ctx.put("base_model", ctx.text(data, "base_model"))
    sha256 = ctx.text(data, "sha256")
    ctx.put("sha256", sha256.lower() if sha256 else None)
    ctx.put("notes", ctx.text(data, "notes"))
    ctx.put("tags", ctx.words(data, "tags"))
    words = ctx.words(data, "trainedWords")
    civitai = ctx.get(data, "civitai", "dict")
    if not words and civitai is not None:
        words = ctx.words(civitai, "trainedWords")
    ctx.put("trained_words", words)
    ctx.put("favorite", ctx.get(data, "favorite", "bool"))
    ctx.put("preferred_weight", _usage_strength(ctx, data.get("usage_tips")))
    ctx.description(ctx.text(data, "modelDescription"), html=True)
    autov3 = ctx.text(data, "autov3")
    ctx.put("autov3", autov3.lower() if autov3 else None)


def _extract_stability_matrix(ctx: _Ctx, data: dict[str, Any]) -> None:
    # System.Text.Json writes PascalCase by default; accept camelCase (any case) too.
    lowered = {str(key).lower(): value for key, value in data.items()}
    ctx.put("civitai_model_id", ctx.get(lowered, "modelid", "int"))
    ctx.put("civitai_version_id", ctx.get(lowered, "versionid", "int"))
    ctx.put("model_name", ctx.text(lowered, "modelname"))
    ctx.put("version_name", ctx.text(lowered, "versionname"))
    ctx.put("base_model", ctx.text(lowered, "basemodel"))
    model_type = lowered.get("modeltype")
    if isinstance(model_type, str) and model_type.strip():  # an enum: may also be a number
        ctx.put("model_type", model_type.strip())
    ctx.put("trained_words", ctx.words(lowered, "trainedwords"))
    ctx.put("tags", ctx.words(lowered, "tags"))
    ctx.put("nsfw", ctx.get(lowered, "nsfw", "bool"))
    ctx.description(ctx.text(lowered, "modeldescription"), html=True)
    hashes = ctx.hashes(lowered, "hashes")
    ctx.put("hashes", hashes)
    ctx.put("sha256", hashes.get("sha256"))


_EXTRACTORS = {
    "civitai_info": _extract_civitai,
    "a1111_json": _extract_a1111,
    "lora_manager": _extract_lora_manager,
    "stability_matrix": _extract_stability_matrix,
}


def _load(kind: str, path: Path, max_bytes: int, warnings: list[dict[str, str]]) -> Sidecar | None:
    sidecar = Sidecar(kind=kind, path=str(path))
    ctx = _Ctx(sidecar, warnings)
    try:
        data = _read_file(path, max_bytes)
        if data is None:
            return None
        if kind in _TEXT_KINDS:
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise _Problem("unreadable", f"is not UTF-8 text ({exc.reason})") from exc
            text = text.replace("\r\n", "\n").strip()[:MAX_TEXT_CHARS]
            sidecar.raw = text
            ctx.put("description", text)
            return sidecar
        parsed = _parse_json(data)
        sidecar.raw = parsed
        if not isinstance(parsed, dict):
            raise _Problem("bad_type", f"holds a JSON {_type_name(parsed)}, not an object")
        _EXTRACTORS[kind](ctx, parsed)
    except _Problem as problem:
        ctx.warn(problem.code, f"{path.name} {problem.message}")
    except Exception as exc:  # defensive: a sidecar must never break a scan
        sidecar.fields = {}
        ctx.warn("unreadable", f"{path.name} could not be read: {type(exc).__name__}")
    return sidecar


def _merge(sidecars: list[Sidecar]) -> dict[str, Field]:
    rank = {kind: index for index, kind in enumerate(SIDECAR_PRECEDENCE)}
    candidates: dict[str, list[dict[str, Any]]] = {}
    for sidecar in sorted(sidecars, key=lambda item: rank[item.kind]):
        for name, value in sidecar.fields.items():
            candidates.setdefault(name, []).append({"value": value, "source": sidecar.kind})
    merged: dict[str, Field] = {}
    for name in sorted(candidates):
        entries = candidates[name]
        distinct = {json.dumps(entry["value"], sort_keys=True, default=str) for entry in entries}
        alternatives = [dict(entry) for entry in entries] if len(distinct) > 1 else []
        merged[name] = Field(entries[0]["value"], entries[0]["source"], alternatives)
    return merged


def read_sidecars(model_path: str | os.PathLike[str], *, max_bytes: int = 8 * 1024 * 1024) -> SidecarReport:
    """Read and merge every sidecar of ``model_path``; never raises for broken sidecars.

    Sidecar names are ``<stem><suffix>`` next to the model, ``<stem>`` being the model's
    file name without its extension: ``.civitai.info``, ``.json``, ``.metadata.json``,
    ``.cm-info.json``, ``.txt``, ``.description.txt``, ``.md``. Missing files are simply
    absent from ``sidecars``; files over ``max_bytes`` are not read.
    """
    folder, stem = _stem_and_folder(model_path)
    names = _names_in(folder)
    warnings: list[dict[str, str]] = []
    sidecars: list[Sidecar] = []
    for kind, suffix in _SIDECAR_FILES:
        if names is not None and f"{stem}{suffix}" not in names:
            continue
        sidecar = _load(kind, folder / f"{stem}{suffix}", max_bytes, warnings)
        if sidecar is not None:
            sidecars.append(sidecar)
    preview = find_preview(model_path)
    return SidecarReport(
        model_path=os.fspath(model_path),
        sidecars=sidecars,
        fields=_merge(sidecars),
        warnings=warnings,
        preview=str(preview) if preview is not None else None,
    )
