"""``lorabench demo``: build the sample library, inspect it and print a summary."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from lorabench.cli._inspect import clean
from lorabench.errors import FileReadError
from lorabench.files import inspect_many

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="build a sample LoRA library and show what lorabench reads from it",
        description="Build the sample library (one LoRA per producer, with sidecars and previews) "
        "under DIR and print a readable summary of every file.",
    )
    p.add_argument("--dir", default=".demo", help="where to build the demo (default: ./.demo)")
    p.add_argument("--seed", type=int, default=0, help="sample library seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorabench.samples import build_library

    root = Path(args.dir).expanduser().resolve() / "library"
    library = build_library(root, seed=args.seed)
    print(f"Sample library: {len(library.files)} files, {library.total_bytes:,} bytes in {root}\n")
    families: Counter[str] = Counter()
    algos: Counter[str] = Counter()
    refused: list[str] = []
    print(f"{'file':44} {'format':9} {'algorithm':10} {'base':12} {'rank':>4} {'alpha':>6} dtype  triggers")
    for path, info in inspect_many(sorted(str(f.path) for f in library.files), hashes=True):
        rel = str(Path(path).relative_to(root))
        if isinstance(info, FileReadError):
            refused.append(f"  {rel}: [{info.code}] {info.message.split(': ', 1)[-1]}")
            continue
        families[info.base_model] += 1
        algos[info.algorithm + ("+dora" if info.dora else "")] += 1
        base = info.base_model + (f"/{info.base_model_hint}" if info.base_model_hint else "")
        alpha = "-" if info.alpha is None else f"{info.alpha:g}"
        words = ", ".join(w["word"] for w in info.trigger_words[:2])
        line = (f"{rel[:44]:44} {info.format:9} {info.algorithm:10} {base[:12]:12} {info.rank or '-':>4} "
                f"{alpha:>6} {info.dtype or '-':6} {words}")  # fmt: skip
        print(clean(line))
    print("\nBase models: " + ", ".join(f"{k} {v}" for k, v in families.most_common()))
    print("Algorithms:  " + ", ".join(f"{k} {v}" for k, v in algos.most_common()))
    if refused:
        print("\nRefused (never loaded):")
        print(clean("\n".join(refused)))
    print(f"\nTry: lorabench inspect --hash {root / Path(sorted(str(f.path) for f in library.files)[0])}")
    sys.stdout.flush()
    return 0
