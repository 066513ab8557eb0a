"""Argument parsing and dispatch; every subcommand lives in its own module."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from lorabench._version import __version__
from lorabench.cli import _catalog_cmds, _demo, _inspect, _queue_cmds, _standin
from lorabench.errors import LorabenchError

__all__ = ["build_parser", "main"]

_COMMANDS = (_inspect, _catalog_cmds, _standin, _queue_cmds, _demo)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="lorabench",
        description="A workbench for large collections of LoRA adapters.",
    )
    parser.add_argument("--version", action="version", version=f"lorabench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (never shows a traceback unless LORABENCH_DEBUG=1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LorabenchError as exc:
        print(f"lorabench: error [{exc.code}]: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lorabench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("LORABENCH_DEBUG"):
            traceback.print_exc()
        message = " ".join(str(exc).split())[:300]
        print(
            f"lorabench: internal error: {type(exc).__name__}: {message} — please report it; "
            "set LORABENCH_DEBUG=1 to see the traceback",
            file=sys.stderr,
        )
        return 3
