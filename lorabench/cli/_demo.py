"""``lorabench demo``: sample library → catalog → SD.Next stand-in → JupyterLab on the dashboard."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from lorabench.cli._inspect import clean

__all__ = ["prepare", "register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="sample library + local SD.Next stand-in + JupyterLab on the dashboard",
        description="Build the sample library (one LoRA per producer, with sidecars and previews) under "
        "DIR, import it into DIR/catalog.duckdb, start the SD.Next stand-in on loopback and open "
        "JupyterLab on the dashboard notebook. Ctrl-C stops everything.",
    )
    p.add_argument("--dir", default=".demo", help="where the demo lives (default: ./.demo)")
    p.add_argument("--seed", type=int, default=0, help="sample library seed")
    p.add_argument("--no-lab", action="store_true", help="prepare and print the summary, start nothing")
    p.add_argument("--port", type=int, default=8888, help="JupyterLab port (default 8888)")
    p.add_argument("--standin-port", type=int, default=0, help="stand-in port (default: any free port)")
    p.set_defaults(func=run)


def prepare(directory: Path, seed: int = 0) -> dict[str, Any]:
    """Build the sample library and import it; returns paths and the import report."""
    from lorabench.catalog import Catalog
    from lorabench.samples import build_library

    library = directory / "library"
    if not library.is_dir():
        build_library(library, seed=seed)
    catalog_file = directory / "catalog.duckdb"
    with Catalog(catalog_file) as catalog:
        report = catalog.import_library([library], progress=False)
        rows = catalog.search("sort:name").to_list()
    return {"library": library, "catalog": catalog_file, "report": report, "rows": rows}


def _summary(state: dict[str, Any]) -> str:
    rows = state["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"Sample library: {state['library']}", f"Catalog:        {state['catalog']}", ""]
    lines.append(f"{'name':34} {'base':16} {'algorithm':10} {'rank':>4} {'alpha':>6} triggers")
    for r in ok:
        base = r["base_model"] + (f"/{r['base_model_hint']}" if r["base_model_hint"] else "")
        alpha = "-" if r["alpha"] is None else f"{r['alpha']:g}"
        algo = r["algorithm"] + ("+dora" if r["dora"] else "")
        words = ", ".join(r["trigger_words"][:2])
        lines.append(f"{r['name'][:34]:34} {base[:16]:16} {algo:10} {r['rank'] or '-':>4} {alpha:>6} {words}")
    lines.append("")
    lines.append("Base models: " + ", ".join(f"{k} {v}" for k, v in Counter(r["base_model"] for r in ok).most_common()))
    lines.append("Algorithms:  " + ", ".join(f"{k} {v}" for k, v in Counter(r["algorithm"] for r in ok).most_common()))
    refused = [r for r in rows if r["status"] != "ok"]
    if refused:
        lines += ["", "Refused (never loaded):"]
        lines += [f"  {r['name']}: [{r['error_code']}]" for r in refused]
    return clean("\n".join(lines))


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    state = prepare(directory, args.seed)
    print(_summary(state))
    if args.no_lab:
        return 0
    from lorabench._notebooks import notebook_path
    from lorabench.sdnext import StandinServer

    dashboard = directory / "dashboard.ipynb"
    if not dashboard.exists():
        shutil.copyfile(notebook_path("dashboard.ipynb"), dashboard)
    env = dict(os.environ)
    env.update(LORABENCH_HOME=str(directory / "home"), LORABENCH_CATALOG=str(state["catalog"]))
    with StandinServer(port=args.standin_port, lora_dir=str(state["library"]), step_time=0.02) as server:
        env["SDNEXT_URL"] = server.url
        print(f"\nSD.Next stand-in: {server.url}  (SDNEXT_URL is set for the notebook)")
        print("Starting JupyterLab on the dashboard — Ctrl-C stops the demo.\n", flush=True)
        command = [sys.executable, "-m", "jupyter", "lab", str(dashboard), f"--port={args.port}",
                   f"--ServerApp.root_dir={directory}"]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        try:
            return subprocess.call(command, env=env)
        except KeyboardInterrupt:
            return 0
