"""lorabench — a Jupyter-native workbench for large collections of LoRA adapters.

>>> import lorabench
>>> info = lorabench.inspect("my_lora.safetensors", hashes=True)
>>> info.base_model, info.algorithm, info.rank
"""

from lorabench._version import __version__
from lorabench.errors import LorabenchError
from lorabench.files import LoraInfo, inspect, read_header

__all__ = ["LoraInfo", "LorabenchError", "__version__", "inspect", "read_header"]
