"""The stand-in's LoRA folder: scanning, name resolution and ``<lora:…>`` prompt tags (sdnext-api.md §5)."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabench.errors import FileReadError
from lorabench.files import hash_file, read_header

__all__ = ["LoraFile", "LoraLibrary", "LoraUse", "parse_tags"]

_TAG = re.compile(r"<(\w+):([^>]+)>")
_BIG_TAG_FREQUENCY = 4096


@dataclass
class LoraFile:
    """One scanned ``.safetensors`` LoRA."""

    name: str
    """The canonical token: SD.Next replaces every ``.`` of the stem with ``_``; A1111 keeps it."""
    fullname: str
    stem: str
    alias: str
    path: str
    metadata: dict[str, Any]
    _hashes: tuple[str, str] | None = field(default=None, repr=False)

    def hashes(self) -> tuple[str, str]:
        """``(sha256, addnet sha256)`` of the file, computed on first use."""
        if self._hashes is None:
            try:
                found = hash_file(self.path)
                self._hashes = (found.sha256, found.tensor_sha256 or found.sha256)
            except (FileReadError, OSError):
                self._hashes = ("", "")
        return self._hashes

    def item(self) -> dict[str, Any]:
        """The ``/sdapi/v1/loras`` entry."""
        return {"name": self.name, "alias": self.alias, "path": self.path, "metadata": self.metadata}


@dataclass(frozen=True)
class LoraUse:
    """One ``<lora:…>`` tag: the name as written, te and unet weights."""

    kind: str
    name: str
    te: float
    unet: float


def _weight(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        return default


def parse_tags(prompt: str, flavor: str, default_weight: float = 1.0) -> list[LoraUse]:
    """The LoRA tags of ``prompt`` the server would act on.

    SD.Next registers only ``lora`` (``lyco`` and others are dropped), reads ``NAME:W`` plus
    named ``te=``/``unet=`` and ignores a third positional value; A1111 also accepts ``lyco``
    and reads ``NAME:TE:UNET``. Tags whose te and unet weights are both 0 are skipped.
    """
    kinds = ("lora", "lyco") if flavor == "a1111" else ("lora",)
    uses: list[LoraUse] = []
    for match in _TAG.finditer(prompt):
        if match.group(1) not in kinds:
            continue
        positional: list[str] = []
        named: dict[str, str] = {}
        for part in match.group(2).split(":"):
            key, sep, value = part.partition("=")
            if sep:
                named[key.strip()] = value.strip()
            else:
                positional.append(part.strip())
        if not positional or not positional[0]:
            continue
        te = _weight(positional[1] if len(positional) > 1 else named.get("te"), default_weight)
        third = positional[2] if flavor == "a1111" and len(positional) > 2 else None
        unet = _weight(named.get("unet", third), te)
        if te == 0 and unet == 0:
            continue
        uses.append(LoraUse(match.group(1), positional[0], te, unet))
    return uses


def _decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """SD.Next's view of ``__metadata__``: JSON objects decoded, ``data:`` values hidden."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value.startswith("data:"):
            out[key] = "data"
            continue
        decoded: Any = value
        if value.lstrip().startswith("{"):
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                decoded = value
        if key == "ss_tag_frequency" and isinstance(decoded, dict) and len(value) > _BIG_TAG_FREQUENCY:
            decoded = {k: len(v) if isinstance(v, dict) else v for k, v in decoded.items()}
        out[key] = decoded
    return out


class LoraLibrary:
    """The LoRA folder as one flavor of server sees it; rescanned on demand."""

    def __init__(self, root: str | Path | None, flavor: str) -> None:
        self.root = Path(root).expanduser().resolve() if root is not None else None
        self.flavor = flavor
        self._lock = threading.Lock()
        self._files: list[LoraFile] = []
        self.refresh()

    def refresh(self) -> list[LoraFile]:
        """Rescan the folder (recursively; unreadable or invalid files are skipped)."""
        found: list[LoraFile] = []
        if self.root is not None and self.root.is_dir():
            for path in sorted(self.root.rglob("*.safetensors")):
                entry = self._read(path)
                if entry is not None:
                    found.append(entry)
        with self._lock:
            self._files = found
        return found

    def _read(self, path: Path) -> LoraFile | None:
        assert self.root is not None
        try:
            if not path.is_file():
                return None
            header = read_header(path)
        except (FileReadError, OSError):
            return None
        stem = path.name[: -len(".safetensors")]
        metadata = _decode_metadata(header.metadata)
        name = stem.replace(".", "_") if self.flavor == "sdnext" else stem
        alias = str(header.metadata.get("ss_output_name") or name)
        relative = path.relative_to(self.root).with_suffix("").as_posix()
        return LoraFile(name=name, fullname=relative, stem=stem, alias=alias, path=str(path), metadata=metadata)

    def files(self) -> list[LoraFile]:
        """The scanned LoRAs, in path order."""
        with self._lock:
            return list(self._files)

    def find(self, token: str) -> LoraFile | None:
        """Resolve a tag's name (case-sensitive): SD.Next by name, fullname or dotted stem;
        A1111 by name or alias."""
        for entry in self.files():
            keys = (entry.name, entry.fullname, entry.stem) if self.flavor == "sdnext" else (entry.name, entry.alias)
            if token in keys:
                return entry
        return None

    def resolve(self, token: str) -> LoraFile | None:
        """:meth:`find`, with one rescan when the name is unknown (as SD.Next does)."""
        found = self.find(token)
        if found is None:
            self.refresh()
            found = self.find(token)
        return found
