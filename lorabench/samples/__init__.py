"""Realistic sample LoRA libraries for the demo, the tests and the benchmarks.

Producers build one LoRA with real key names, real widths and trainer metadata
(kohya sd-scripts, LyCORIS, diffusers/PEFT, ai-toolkit) and return the facts a
correct reader must derive from it::

    from lorabench.samples import build_library, produce

    lib = build_library(tmp_path)                 # showcase: one file per producer
    big = build_library(tmp_path / "big", count=50_000, tiny=True, seed=1)
    tensors, metadata, expected = produce("kohya-sdxl-pony", tiny=True)

Nothing here imports torch or safetensors.
"""

from ._builder import SampleFile, SampleLibrary, build_library
from ._metadata import LoraParams
from ._producers import PRODUCERS, Produced, Producer, produce, producer_ids
from ._sidecars import PREVIEW_KINDS, SIDECAR_KINDS
from ._writer import TensorSpec, serialize, write_safetensors

__all__ = [
    "PREVIEW_KINDS",
    "PRODUCERS",
    "SIDECAR_KINDS",
    "LoraParams",
    "Produced",
    "Producer",
    "SampleFile",
    "SampleLibrary",
    "TensorSpec",
    "build_library",
    "produce",
    "producer_ids",
    "serialize",
    "write_safetensors",
]
