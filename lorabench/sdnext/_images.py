"""Decoding the base64 images an SD.Next / A1111 server returns, defensively."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass, field
from typing import Any

from lorabench.errors import FileReadError, ProtocolError
from lorabench.files._infotext import Infotext, read_image_metadata

__all__ = ["GeneratedImage", "decode_b64", "sniff_format"]

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"))


def sniff_format(data: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"`` or ``"WEBP"`` from the magic bytes, else ``None``."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_b64(text: object, what: str) -> bytes:
    """Strict base64 (an optional ``data:…;base64,`` prefix is tolerated)."""
    if not isinstance(text, str):
        raise ProtocolError(f"Unexpected SD.Next response: {what} is {type(text).__name__}, not base64 text")
    if text.startswith("data:") and "," in text[:100]:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"Unexpected SD.Next response: {what} is not valid base64 ({exc})") from exc


@dataclass(frozen=True)
class GeneratedImage:
    """One returned image: its encoded bytes, format (by magic bytes), size and infotext."""

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    parameters: str | None = field(default=None, repr=False)
    """The raw infotext (PNG ``parameters`` chunk or JPEG/WebP EXIF UserComment)."""
    infotext: Infotext | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        """Size of the encoded image."""
        return len(self.data)

    def to_pil(self) -> Any:
        """The decoded image as a ``PIL.Image.Image`` (RGB)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.data), formats=[self.format]) as img:
            return img.convert("RGB")

    @classmethod
    def from_base64(cls, text: object, *, index: int = 0) -> GeneratedImage:
        """Decode and verify one base64 image; :class:`ProtocolError` if it is not a sound image."""
        return cls.from_bytes(decode_b64(text, f"image {index}"), index=index)

    @classmethod
    def from_bytes(cls, data: bytes, *, index: int = 0) -> GeneratedImage:
        """Verify PNG/JPEG/WebP bytes by decoding them fully (decompression bombs refused)."""
        from PIL import Image

        fmt = sniff_format(data)
        if fmt is None:
            raise ProtocolError(f"Unexpected SD.Next response: image {index} is not PNG, JPEG or WebP")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data), formats=[fmt]) as img:
                    width, height = img.size
                    img.load()
            meta = read_image_metadata(data, max_bytes=max(len(data), 1))
        except (FileReadError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ProtocolError(f"Unexpected SD.Next response: image {index} was refused: {exc}") from exc
        except Exception as exc:  # Pillow raises many types for damaged data
            raise ProtocolError(
                f"Unexpected SD.Next response: image {index} cannot be decoded ({type(exc).__name__})"
            ) from exc
        return cls(
            data=data, format=fmt, width=width, height=height, parameters=meta.parameters, infotext=meta.infotext
        )
