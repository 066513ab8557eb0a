"""``lorabench sdnext-standin``: serve the SD.Next stand-in until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

from lorabench.errors import ConfigError

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sdnext-standin",
        help="serve a local stand-in for SD.Next (or A1111) that draws deterministic pictures",
        description="Serve SD.Next's HTTP API on a local port without a GPU: LoRAs come from --loras, "
        "pictures are drawn from the seed, prompt and LoRA weights. Stops on Ctrl-C.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0 picks a free one)")
    p.add_argument("--loras", metavar="DIR", default=None, help="LoRA folder to list (scanned recursively)")
    p.add_argument("--step-time", type=float, default=0.05, help="seconds per sampling step (default: 0.05)")
    p.add_argument(
        "--auth",
        metavar="USER:PASS",
        default=None,
        help="require HTTP Basic auth (or set SDNEXT_STANDIN_AUTH, which stays out of the process list)",
    )
    p.add_argument("--flavor", choices=("sdnext", "a1111"), default="sdnext", help="which server to imitate")
    p.add_argument("--rate-limit", type=float, default=None, help="requests per second per client and path")
    p.add_argument("--model-loading", action="store_true", help="start with the model 'loading' (empty answers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, *, ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """Serve until Ctrl-C (or until ``stop`` is set, for tests); ``ready`` is set once listening."""
    from lorabench.sdnext import StandinServer

    auth = args.auth or os.environ.get("SDNEXT_STANDIN_AUTH") or None
    if auth is not None and ":" not in auth:
        raise ConfigError("--auth must be USER:PASS")
    if args.loras is not None and not os.path.isdir(args.loras):
        raise ConfigError(f"--loras {args.loras!r} is not a directory")
    if args.step_time < 0:
        raise ConfigError("--step-time must be >= 0")
    try:
        server = StandinServer(
            args.host,
            args.port,
            lora_dir=args.loras,
            step_time=args.step_time,
            auth=auth,
            flavor=args.flavor,
            rate_limit=args.rate_limit,
        )
        server.start()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot start the stand-in on {args.host}:{args.port}: {exc}") from exc
    try:
        if args.model_loading:
            server.set_model_loading(True)
        loras = len(server.engine.loras.files())
        print(
            f"SD.Next stand-in ({args.flavor}) serving {server.url} with {loras} LoRA(s)"
            f"{' and Basic auth' if auth else ''}; press Ctrl-C to stop",
            flush=True,
        )
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            print("warning: listening beyond loopback; anyone who can reach this port can use it", file=sys.stderr)
        if ready is not None:
            ready.set()
        waiter = stop or threading.Event()
        while not waiter.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        server.stop()
    return 0
