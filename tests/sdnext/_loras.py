"""Tiny valid LoRA files for the SD.Next tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def write_lora(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A tiny but valid safetensors LoRA."""
    header = {
        "__metadata__": metadata or {},
        "lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")
    return path
