"""Generation parameters ("infotext") in preview and generated images.

:func:`parse_infotext` reads the A1111 / SD.Next text form (sdnext-api.md §8)::

    <prompt, may span lines>
    Negative prompt: <negative, may span lines>
    Key: value, Key: "JSON-quoted, value: with commas", …

:func:`read_image_metadata` finds that text in a PNG ``tEXt``/``iTXt``/``zTXt`` chunk named
``parameters``, in the EXIF ``UserComment`` of a JPEG or WebP (what SD.Next and A1111 write),
or in a JPEG/GIF comment, without decoding any pixels.

Both are defensive: :func:`parse_infotext` never raises and returns whatever it could
parse; :func:`read_image_metadata` raises only :class:`~lorabench.errors.FileReadError`
subclasses (``bad_image`` for undecodable images and decompression bombs).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import threading
import unicodedata
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from lorabench.errors import FileReadError, FileTooLargeError, NotARegularFileError

__all__ = [
    "ImageMetadata",
    "Infotext",
    "parse_infotext",
    "read_image_metadata",
]

MAX_INFOTEXT_CHARS = 1_000_000
"""Only this many characters of an infotext are parsed (``raw`` keeps everything)."""
_MAX_TEXT_CHUNKS = 32
_MAX_TEXT_CHUNK_CHARS = 65_536
_IMAGE_FORMATS = ["PNG", "JPEG", "WEBP", "GIF"]
_WARNINGS_LOCK = threading.Lock()

# A1111 `modules/infotext_utils.py` idea, with the key length and leading whitespace bounded
# so a hostile line cannot make `findall` quadratic.
_PARAM = re.compile(r'\s{0,8}(\w[\w \-/]{0,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^\s*(\d{1,6})\s*x\s*(\d{1,6})\s*$")
_INT = re.compile(r"^\s*[-+]?\d{1,30}\s*$")
_LORA_TAG = re.compile(r"<(lora|lyco):([^<>]{1,1000})>", re.IGNORECASE)
_NAME_WEIGHT = re.compile(r"^(.+?):\s*([-+]?\d+(?:\.\d+)?)$")
_A1111_VERSION = re.compile(r"^(?:f[\w.\-]*?)?v1\.")
_IMPOSSIBLE = frozenset({"Cc", "Cn", "Co", "Cs"})
_TEMPLATE_LINES = ("Template:", "Negative template:")


@dataclass(frozen=True)
class Infotext:
    """Parsed generation parameters. Every field is ``None``/empty when absent or garbled."""

    prompt: str = ""
    negative_prompt: str = ""
    steps: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    seed: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    model_hash: str | None = None
    clip_skip: int | None = None
    loras: list[dict[str, Any]] = field(default_factory=list)
    """``{"name": str | None, "weight": float | None, "hash": str | None}`` per LoRA."""
    lora_hashes: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    """Every ``Key: value`` pair of the parameters line, JSON-quoted values unquoted."""
    app: str | None = None
    """``"sdnext"``, ``"a1111"`` (A1111 family, Forge included) or ``None`` if unknown."""
    raw: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field (a deep copy)."""
        return asdict(self)


@dataclass(frozen=True)
class ImageMetadata:
    """What an image says about itself, read without decoding its pixels."""

    format: str
    width: int
    height: int
    parameters: str | None = None
    """The raw infotext, or ``None`` when the image carries none."""
    infotext: Infotext | None = None
    text_chunks: dict[str, str] = field(default_factory=dict)
    """PNG text chunks other than ``parameters`` (at most 32, each cut to 64 KiB)."""
    parameters_source: str | None = None
    """``"png_text"``, ``"exif_user_comment"``, ``"comment"`` or ``None``."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field (``infotext`` as a nested mapping)."""
        return asdict(self)


# --------------------------------------------------------------------------- parsing


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except (ValueError, RecursionError):
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _to_int(value: str | None) -> int | None:
    if value is None or not _INT.match(value):
        return None
    return int(value)


def _to_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _scan_params(line: str) -> list[tuple[str, str]]:
    """``Key: value`` pairs of a parameters line, in order.

    Text between two pairs that is not itself a pair (``LoRA hashes: 1234abcd, 5678ef01``
    written without quotes) is appended to the previous unquoted value.
    """
    pairs: list[tuple[str, str]] = []
    position = 0

    def absorb(gap: str) -> None:
        gap = gap.strip().strip(",").strip()
        if gap and pairs and not pairs[-1][1].lstrip().startswith('"'):
            key, value = pairs[-1]
            pairs[-1] = (key, f"{value.strip()}, {gap}" if value.strip() else gap)

    for match in _PARAM.finditer(line):
        absorb(line[position : match.start()])
        pairs.append((match.group(1), match.group(2)))
        position = match.end()
    if pairs:
        absorb(line[position:])
    return pairs


def _parse_lora_tag(args: str) -> tuple[str, float | None] | None:
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in args.split(":"):
        key, sep, val = part.partition("=")
        if sep:
            named[key.strip().lower()] = val.strip()
        else:
            positional.append(part.strip())
    if not positional or not positional[0]:
        return None
    weight = _to_float(positional[1]) if len(positional) > 1 else None
    if weight is None:
        weight = _to_float(named.get("te"))
    return positional[0], weight


def _collect_loras(prompt: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    by_name: dict[str, dict[str, Any]] = {}
    anonymous: list[dict[str, Any]] = []

    def entry(name: str) -> dict[str, Any]:
        if name not in by_name:
            by_name[name] = {"name": name, "weight": None, "hash": None}
        return by_name[name]

    for match in _LORA_TAG.finditer(prompt):
        parsed = _parse_lora_tag(match.group(2))
        if parsed is None:
            continue
        name, weight = parsed
        item = entry(name)
        if item["weight"] is None:
            item["weight"] = weight

    normalized = {_norm_key(key): value for key, value in params.items()}
    networks: list[str] = []
    for raw_name in _split_list(normalized.get("loranetworks", "")):
        found = _NAME_WEIGHT.match(raw_name)
        name, weight = (found.group(1).strip(), _to_float(found.group(2))) if found else (raw_name, None)
        networks.append(name)
        item = entry(name)
        if item["weight"] is None:
            item["weight"] = weight

    bare_hashes: list[str] = []
    for part in _split_list(normalized.get("lorahashes", "")):
        name, sep, digest = part.rpartition(":")
        if sep and name.strip() and digest.strip():
            entry(name.strip())["hash"] = digest.strip()
        elif part:
            bare_hashes.append(part)
    # SD.Next writes hashes without names, in load order, skipping LoRAs without a hash:
    # they can be paired with `LoRA networks` only when the counts agree.
    if bare_hashes and len(bare_hashes) == len(networks):
        for name, digest in zip(networks, bare_hashes, strict=True):
            entry(name)["hash"] = digest
    else:
        anonymous = [{"name": None, "weight": None, "hash": digest} for digest in bare_hashes]

    loras = [*by_name.values(), *anonymous]
    hashes = {item["name"]: item["hash"] for item in by_name.values() if item["hash"]}
    return loras, hashes


def _detect_app(params: dict[str, str]) -> str | None:
    normalized = {_norm_key(key): value for key, value in params.items()}
    if "sd.next" in normalized.get("app", "").lower() or "sdnext" in _norm_key(normalized.get("app", "")):
        return "sdnext"
    if "Lora hashes" in params or _A1111_VERSION.match(normalized.get("version", "").strip()):
        return "a1111"
    return None


def parse_infotext(text: str) -> Infotext:
    """Parse A1111 / SD.Next infotext; never raises, returns what it could parse."""
    if not isinstance(text, str):
        return Infotext(raw="")
    try:
        return _parse(text)
    except Exception:  # defensive: garbage must never escape as an exception
        return Infotext(raw=text)


def _parse(text: str) -> Infotext:
    body = text[:MAX_INFOTEXT_CHARS].replace("\r\n", "\n").replace("\r", "\n").strip()
    if not body:
        return Infotext(raw=text)
    *lines, last = body.split("\n")
    pairs = _scan_params(last)
    if len(pairs) < 3 and not (pairs and last.lstrip().startswith("Steps:")):
        lines.append(last)
        pairs = []

    params: dict[str, str] = {}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(_TEMPLATE_LINES):
            key, _, value = stripped.partition(":")
            params[key] = _unquote(value)
            continue
        if stripped.startswith("Negative prompt:"):
            in_negative = True
            stripped = stripped[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(stripped)
    for key, value in pairs:
        params[key.strip()] = _unquote(value)

    normalized = {_norm_key(key): value for key, value in params.items()}
    width = height = None
    size = _SIZE.match(normalized.get("size", ""))
    if size:
        width, height = int(size.group(1)), int(size.group(2))
    scheduler = normalized.get("scheduletype") or normalized.get("scheduler")
    prompt = "\n".join(prompt_lines).strip()
    loras, lora_hashes = _collect_loras(prompt, params)
    return Infotext(
        prompt=prompt,
        negative_prompt="\n".join(negative_lines).strip(),
        steps=_to_int(normalized.get("steps")),
        sampler=normalized.get("sampler") or None,
        scheduler=scheduler or None,
        seed=_to_int(normalized.get("seed")),
        cfg_scale=_to_float(normalized.get("cfgscale")),
        width=width,
        height=height,
        model=normalized.get("model") or None,
        model_hash=normalized.get("modelhash") or None,
        clip_skip=_to_int(normalized.get("clipskip")),
        loras=loras,
        lora_hashes=lora_hashes,
        params=params,
        app=_detect_app(params),
        raw=text,
    )


# --------------------------------------------------------------------------- images


def _decode_utf16(payload: bytes) -> str:
    if payload[:2] == b"\xfe\xff":
        return payload[2:].decode("utf-16-be", "replace")
    if payload[:2] == b"\xff\xfe":
        return payload[2:].decode("utf-16-le", "replace")
    # No BOM: SD.Next (piexif) writes big-endian, some tools little-endian. Keep the decoding
    # with fewer impossible characters (NULs, controls, unassigned, private use), then the one
    # with more ASCII (mostly-English prompts), then big-endian.
    candidates = [payload.decode(codec, "replace") for codec in ("utf-16-be", "utf-16-le")]

    def badness(decoded: str) -> tuple[int, int]:
        bad = sum(
            ch == "\ufffd" or (unicodedata.category(ch) in _IMPOSSIBLE and ch not in "\n\r\t")
            for ch in decoded
        )
        return bad, -sum(ch.isascii() for ch in decoded)

    return min(candidates, key=badness)


def _decode_user_comment(value: object) -> str | None:
    """EXIF UserComment (8-byte charset prefix + payload) as text."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes | bytearray):
        data = bytes(value)
        prefix, payload = data[:8], data[8:]
        if prefix == b"UNICODE\x00":
            text = _decode_utf16(payload)
        elif prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
            text = payload.decode("utf-8", "replace")
        elif prefix == b"JIS\x00\x00\x00\x00\x00":
            text = payload.decode("shift_jis", "replace")
        else:
            text = data.decode("utf-8", "replace")
    else:
        return None
    text = text.strip("\x00").strip()
    return text or None


def _open_path(path: str, max_bytes: int) -> IO[bytes]:
    try:
        info = Path(path).stat()
    except FileNotFoundError as exc:
        raise FileReadError(f"Image not found: {path}", path=path, code="not_found") from exc
    except (OSError, ValueError) as exc:
        raise FileReadError(f"Cannot access image {path}: {exc}", path=path) from exc
    if not stat.S_ISREG(info.st_mode):
        raise NotARegularFileError(f"Not a regular file: {path}", path=path)
    if info.st_size > max_bytes:
        raise FileTooLargeError(
            f"Image {path} is {info.st_size} bytes, over the {max_bytes}-byte cap", path=path
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileReadError(f"Cannot open image {path}: {exc}", path=path) from exc
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise NotARegularFileError(f"{path} changed while being opened", path=path)
        if opened.st_size > max_bytes:
            raise FileTooLargeError(f"Image {path} is over the {max_bytes}-byte cap", path=path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_image_metadata(
    source: str | os.PathLike[str] | bytes, *, max_bytes: int = 64 * 1024 * 1024
) -> ImageMetadata:
    """Read an image's size and generation parameters without decoding its pixels.

    ``source`` is a path (followed if a symlink, but it must lead to a regular file of at
    most ``max_bytes``) or the image's bytes. Only PNG, JPEG, WebP and GIF are opened.

    Raises
    ------
    FileReadError
        ``bad_image`` when the image cannot be identified or parsed, or when it declares
        more pixels than Pillow's decompression-bomb limit; ``not_found``/``unreadable``
        for paths that cannot be opened.
    NotARegularFileError, FileTooLargeError
        For special files and for sources over ``max_bytes``.
    """
    label: str | None
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > max_bytes:
            raise FileTooLargeError(f"Image data is over the {max_bytes}-byte cap")
        label, stream = None, io.BytesIO(data)
    else:
        label = os.fspath(source)
        if not isinstance(label, str):
            raise TypeError("read_image_metadata() takes a str path, a PathLike or bytes")
        stream = _open_path(label, max_bytes)
    with stream:
        return _read_stream(stream, label)


def _read_stream(stream: IO[bytes], label: str | None) -> ImageMetadata:
    from PIL import Image  # lazy: keeps `import lorabench` fast

    where = label or "image data"
    try:
        # catch_warnings swaps process-global filters: serialise our own uses (threads scan
        # previews in parallel) so each restores what it found.
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=_IMAGE_FORMATS) as img:
                return _extract(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FileReadError(
            f"{where} declares too many pixels (possible decompression bomb): {exc}",
            path=label,
            code="bad_image",
            hint="The image is refused for safety; re-create it at a normal size.",
        ) from exc
    except Exception as exc:  # Pillow raises many types for broken data
        raise FileReadError(
            f"{where} is not a readable PNG, JPEG, WebP or GIF image: {type(exc).__name__}: {exc}",
            path=label,
            code="bad_image",
            hint="The image is damaged or in an unsupported format; re-save or re-download it.",
        ) from exc


def _extract(img: Any) -> ImageMetadata:
    fmt = "JPEG" if img.format == "MPO" else str(img.format)
    width, height = (int(n) for n in img.size)
    info: dict[str, Any] = dict(img.info)

    parameters: str | None = None
    source: str | None = None
    text_chunks: dict[str, str] = {}
    if fmt == "PNG":
        # `img.info` holds the text chunks before the image data; `img.text` would load pixels.
        for key, value in info.items():
            if not isinstance(key, str) or not isinstance(value, str):
                continue
            if key == "parameters":
                parameters, source = (value or None), "png_text"
            elif len(text_chunks) < _MAX_TEXT_CHUNKS:
                text_chunks[key[:256]] = str(value)[:_MAX_TEXT_CHUNK_CHARS]
    if parameters is None:
        parameters = _exif_user_comment(img)
        source = "exif_user_comment" if parameters is not None else None
    if parameters is None:
        comment = info.get("comment")
        if isinstance(comment, bytes | str):
            text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
            text = text.strip("\x00").strip()
            if text:
                parameters, source = text, "comment"
    return ImageMetadata(
        format=fmt,
        width=width,
        height=height,
        parameters=parameters,
        infotext=parse_infotext(parameters) if parameters is not None else None,
        text_chunks=text_chunks,
        parameters_source=source,
    )


def _exif_user_comment(img: Any) -> str | None:
    try:
        exif = img.getexif()
        value = exif.get_ifd(0x8769).get(0x9286)
    except Exception:  # corrupt EXIF is "no metadata", not a broken image
        return None
    return _decode_user_comment(value)
