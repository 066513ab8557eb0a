"""Content-addressed WebP thumbnails of preview images, under ``<LORABENCH_HOME>/thumbnails/``.

A thumbnail's key is the SHA-256 of the preview file's bytes plus the box it was fitted into
(``<sha256>-<width>``), so two LoRAs sharing a preview share one thumbnail, an edited preview gets a
new one, and nothing is ever written beside the user's files. Previews are untrusted input:

- only regular files inside the LoRA's library root are read (``O_NOFOLLOW``, ``fstat``), up to
  :data:`MAX_FILE_BYTES`;
- Pillow opens them with ``formats=[…]`` (PNG, JPEG, WebP, GIF; no FITS, PSD, …) and the pixel count
  is checked from the header **before** decoding (:data:`MAX_PIXELS`); a ``DecompressionBombWarning``
  is an error;
- a preview that cannot be read gives ``None`` (the card shows its placeholder) and is remembered,
  so a broken file is not decoded again and again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import tempfile
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from lorabench.config import home_dir

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "SIZES", "Thumbnail", "ThumbnailCache"]

logger = logging.getLogger("lorabench.widgets")

#: Named thumbnail boxes (width, height): cards and the detail panel.
SIZES: dict[str, tuple[int, int]] = {"card": (256, 320), "large": (640, 800)}
#: Previews larger than this are not read (bytes).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Previews with more pixels than this are refused before decoding (decompression bombs).
MAX_PIXELS = 40_000_000
_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
_MEMO_LIMIT = 50_000


@dataclass(frozen=True)
class Thumbnail:
    """A generated (or cached) thumbnail: its content key, bytes and MIME type."""

    key: str
    data: bytes
    mime: str = "image/webp"


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` (after resolving links) lies inside ``root``."""
    try:
        real, base = os.path.realpath(path), os.path.realpath(root)
    except (OSError, ValueError):
        return False
    return real != base and real.startswith(base.rstrip(os.sep) + os.sep)


def _read_regular(path: str, limit: int) -> tuple[bytes, tuple[int, int, int, int]] | None:
    """The bytes of a regular file (no symlink, FIFO or device) up to ``limit``, and its fingerprint."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks, left = [], info.st_size + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) != info.st_size:  # changed while we read it
            return None
        return data, (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        return None
    finally:
        os.close(fd)


def _fingerprint(path: str) -> tuple[int, int, int, int] | None:
    try:
        info = os.lstat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def render_webp(data: bytes, box: tuple[int, int], *, max_pixels: int = MAX_PIXELS) -> bytes:
    """Decode an untrusted image and return a WebP fitted inside ``box``; raises ``ValueError``."""
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=list(_FORMATS)) as image:
                width, height = image.size
                if width <= 0 or height <= 0 or width * height > max_pixels:
                    raise ValueError(f"image is {width}x{height} pixels, over the {max_pixels:,} pixel cap")
                image.draft("RGB", (box[0] * 2, box[1] * 2))  # JPEG: decode at a reduced scale
                image.seek(0)
                frame = ImageOps.exif_transpose(image)
                mode = "RGBA" if frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info else "RGB"
                frame = frame.convert(mode)
                frame.thumbnail(box, Image.Resampling.LANCZOS)
                out = io.BytesIO()
                frame.save(out, format="WEBP", quality=80, method=4)
                return out.getvalue()
        except (OSError, SyntaxError, EOFError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ValueError(f"unreadable image: {exc}") from exc


class ThumbnailCache:
    """Lazily generated, content-addressed WebP thumbnails.

    Parameters
    ----------
    root:
        Where thumbnails are stored; default ``<LORABENCH_HOME>/thumbnails``. Files are
        ``<root>/<aa>/<sha256>-<width>.webp``.
    max_pixels:
        Previews with more pixels are refused before decoding.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, max_pixels: int = MAX_PIXELS) -> None:
        self.root = Path(root) if root is not None else home_dir() / "thumbnails"
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        # (path, size name) -> (fingerprint, key or None for "unreadable")
        self._memo: OrderedDict[tuple[str, str], tuple[tuple[int, int, int, int], str | None]] = OrderedDict()

    def __repr__(self) -> str:
        return f"ThumbnailCache({str(self.root)!r})"

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.webp"

    def _remember(self, memo_key: tuple[str, str], fingerprint: tuple[int, int, int, int], key: str | None) -> None:
        with self._lock:
            self._memo[memo_key] = (fingerprint, key)
            self._memo.move_to_end(memo_key)
            while len(self._memo) > _MEMO_LIMIT:
                self._memo.popitem(last=False)

    def known_key(self, preview: str | None, size: str = "card") -> str | None:
        """The thumbnail key of ``preview`` if it was computed before and the file is unchanged (no reading)."""
        if not preview:
            return None
        with self._lock:
            hit = self._memo.get((preview, size))
        if hit is None or hit[1] is None or _fingerprint(preview) != hit[0]:
            return None
        return hit[1] if self._file(hit[1]).is_file() else None

    def get(self, preview: str | None, root: str | None, size: str = "card") -> Thumbnail | None:
        """The thumbnail of ``preview`` (a file inside the library ``root``), generating it if needed.

        Returns ``None`` when there is no preview, it lies outside ``root``, is not a regular
        file, is too large or is not a readable image.
        """
        if size not in SIZES:
            raise ValueError(f"unknown thumbnail size {size!r}; choose from {', '.join(SIZES)}")
        if not preview or not root or not _inside(preview, root):
            return None
        memo_key = (preview, size)
        fingerprint = _fingerprint(preview)
        if fingerprint is None:
            return None
        with self._lock:
            hit = self._memo.get(memo_key)
        if hit is not None and hit[0] == fingerprint:
            if hit[1] is None:
                return None  # known to be unreadable
            cached = self._load(hit[1])
            if cached is not None:
                return cached
        read = _read_regular(preview, MAX_FILE_BYTES)
        if read is None:
            self._remember(memo_key, fingerprint, None)
            return None
        data, fingerprint = read
        box = SIZES[size]
        key = f"{hashlib.sha256(data).hexdigest()}-{box[0]}"
        thumb = self._load(key)
        if thumb is None:
            try:
                webp = render_webp(data, box, max_pixels=self.max_pixels)
            except ValueError as exc:
                logger.info("No thumbnail for %s: %s", preview, exc)
                self._remember(memo_key, fingerprint, None)
                return None
            self._store(key, webp)
            thumb = Thumbnail(key, webp)
        self._remember(memo_key, fingerprint, key)
        return thumb

    def _load(self, key: str) -> Thumbnail | None:
        try:
            return Thumbnail(key, self._file(key).read_bytes())
        except OSError:
            return None

    def _store(self, key: str, data: bytes) -> None:
        """Write atomically (temp file + rename); a failure only costs a regeneration later."""
        target = self._file(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".webp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.warning("Could not store thumbnail %s: %s", target, exc)
