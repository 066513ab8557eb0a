"""lorabench — a Jupyter-native workbench for large collections of LoRA adapters.

>>> import lorabench
>>> info = lorabench.inspect("my_lora.safetensors", hashes=True)     # doctest: +SKIP
>>> with lorabench.Catalog() as cat:                                  # doctest: +SKIP
...     cat.import_library(["~/loras"])
...     cat.search("base:sdxl rating:>=4 sort:-rating", limit=20).df()
"""

from lorabench._notebooks import import_targets, library_chart, notebook_path, run_notebook
from lorabench._version import __version__
from lorabench.catalog import Catalog
from lorabench.errors import LorabenchError
from lorabench.files import LoraInfo, inspect, read_header
from lorabench.importer import ImportReport

__all__ = [
    "Catalog",
    "ImportReport",
    "LoraInfo",
    "LorabenchError",
    "Queue",
    "__version__",
    "import_targets",
    "inspect",
    "library_chart",
    "notebook_path",
    "read_header",
    "run_notebook",
]


def __getattr__(name: str) -> object:
    # The queue pulls in httpx and Pillow; import it only when someone asks for it.
    if name == "Queue":
        from lorabench.queue import Queue

        return Queue
    raise AttributeError(f"module 'lorabench' has no attribute {name!r}")
