"""Reading LoRA files: the strict header reader, detection, hashes, sidecars and image metadata.

Nothing here loads tensors or pickles, imports torch, or trusts text from a file.
"""

from lorabench.files._detect import ALGORITHMS, BASE_FAMILIES
from lorabench.files._hashes import FileHashes, hash_file, hash_files
from lorabench.files._header import (
    DEFAULT_HEADER_CAP,
    PICKLE_SUFFIXES,
    HeaderLimits,
    SafetensorsHeader,
    TensorInfo,
    read_header,
)
from lorabench.files._html import SANITIZE_POLICY_VERSION, html_to_text, sanitize_html
from lorabench.files._infotext import ImageMetadata, Infotext, parse_infotext, read_image_metadata
from lorabench.files._inspect import LoraInfo, inspect, inspect_header, inspect_many
from lorabench.files._metadata import parse_ss_value
from lorabench.files._sidecars import PREVIEW_EXTENSIONS, SidecarReport, find_preview, read_sidecars

__all__ = [
    "ALGORITHMS",
    "BASE_FAMILIES",
    "DEFAULT_HEADER_CAP",
    "PICKLE_SUFFIXES",
    "PREVIEW_EXTENSIONS",
    "SANITIZE_POLICY_VERSION",
    "FileHashes",
    "HeaderLimits",
    "ImageMetadata",
    "Infotext",
    "LoraInfo",
    "SafetensorsHeader",
    "SidecarReport",
    "TensorInfo",
    "find_preview",
    "hash_file",
    "hash_files",
    "html_to_text",
    "inspect",
    "inspect_header",
    "inspect_many",
    "parse_infotext",
    "parse_ss_value",
    "read_header",
    "read_image_metadata",
    "read_sidecars",
    "sanitize_html",
]
