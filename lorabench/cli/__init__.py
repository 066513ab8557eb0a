"""The ``lorabench`` command line: a thin layer over the library."""

from lorabench.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
