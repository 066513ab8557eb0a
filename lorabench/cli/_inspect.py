"""``lorabench inspect PATH... [--hash] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lorabench.errors import FileReadError
from lorabench.files import HeaderLimits, LoraInfo, inspect_many

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="read LoRA files (header only, strictly validated) and print their facts",
        description="Read LoRA files and their sidecars and print what they are. Pickle files are "
        "never loaded. Exit status is 1 if any file could not be read.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="LoRA files (.safetensors)")
    p.add_argument("--hash", action="store_true", help="compute sha256, AutoV2, AutoV3, tensor and legacy hashes")
    p.add_argument("--json", action="store_true", help="print JSON (an object for one file, an array for several)")
    p.add_argument("--no-sidecars", action="store_true", help="skip sidecar files and previews")
    p.add_argument(
        "--header-cap", type=int, default=None, metavar="BYTES",
        help="largest JSON header to accept (default 16 MiB, at most 100 MB)",
    )  # fmt: skip
    p.add_argument("--jobs", type=int, default=None, metavar="N", help="hashing threads (default: cores)")
    p.set_defaults(func=run)


def _error_dict(path: str, exc: FileReadError) -> dict[str, Any]:
    return {"path": path, "error": exc.to_dict()}


def run(args: argparse.Namespace) -> int:
    limits = HeaderLimits(max_header_bytes=args.header_cap) if args.header_cap else None
    results = inspect_many(
        args.paths, hashes=args.hash, sidecars=not args.no_sidecars, limits=limits, jobs=args.jobs
    )
    failed = 0
    docs: list[dict[str, Any]] = []
    for path, result in results:
        if isinstance(result, FileReadError):
            failed += 1
            if args.json:
                docs.append(_error_dict(path, result))
            else:
                print(clean(f"{path}: error [{result.code}]: {result}"), file=sys.stderr)
        elif args.json:
            docs.append(result.to_dict())
        else:
            print(format_summary(result))
    if args.json:
        out = docs[0] if len(args.paths) == 1 else docs
        json.dump(out, sys.stdout, indent=2, ensure_ascii=False, allow_nan=False, default=str)
        sys.stdout.write("\n")
    return 1 if failed else 0


def _fmt_alpha(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:g}"


_CONTROL = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)], "?")


def clean(text: object) -> str:
    """Text from a file, safe for a terminal: control characters (escape sequences) replaced."""
    return str(text).translate(_CONTROL)


def format_summary(info: LoraInfo) -> str:
    """A readable multi-line summary of one LoRA (terminal-safe)."""
    return clean(_summary(info))


def _summary(info: LoraInfo) -> str:
    parts = [info.format, info.algorithm + (" + DoRA" if info.dora else ""), info.base_model]
    if info.base_model_hint:
        parts[-1] += f" ({info.base_model_hint})"
    parts += [f"rank {info.rank}", f"alpha {_fmt_alpha(info.alpha)}", info.dtype or "?"]
    comps = ", ".join(f"{k} {v}" for k, v in sorted(info.components.items()))
    lines = [info.path, "  " + " · ".join(str(p) for p in parts)]
    lines.append(f"  {info.n_tensors} tensors, {info.n_modules} modules ({comps}), {info.size:,} bytes")
    if info.title != info.name:
        lines.append(f"  title: {info.title}")
    t = info.training
    facts = [f"{k} {t[k]}" for k in ("epochs", "steps", "images") if t.get(k) is not None]
    if t.get("resolution"):
        facts.append("x".join(str(x) for x in t["resolution"]))
    if facts:
        lines.append("  trained: " + ", ".join(facts))
    if info.trigger_words:
        words = ", ".join(f"{w['word']} ({w['source']})" for w in info.trigger_words[:6])
        lines.append(f"  triggers: {words}")
    if info.tags:
        lines.append("  tags: " + ", ".join(f"{k} ({v})" for k, v in list(info.tags.items())[:8]))
    if info.hashes:
        h = info.hashes
        lines.append(f"  sha256 {h['sha256']}  autov2 {h['autov2']}  autov3 {h['autov3']}  legacy {h['legacy']}")
    kinds = [s.get("kind") for s in info.sidecars.get("sidecars", [])]
    if kinds:
        lines.append("  sidecars: " + ", ".join(str(k) for k in kinds))
    if info.preview:
        lines.append(f"  preview: {info.preview['path']}")
    for w in info.warnings:
        lines.append(f"  warning [{w.get('code')}]: {w.get('message')}")
    return "\n".join(lines)
