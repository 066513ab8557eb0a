"""Helpers for the browser tests and the gallery benchmark: servers, notebooks, catalogs, Chromium.

Follows docs/environment.md §4: Debian's Chromium driven by Playwright (no ``playwright install``),
a real JupyterLab started with a fresh token and temporary Jupyter config/data/runtime folders,
notification toasts switched off, notebooks opened with ``?reset``, and Voila on a free port.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KERNEL_IDLE_JS = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.status === 'idle';
}"""
EXECUTE_JS = """async (code) => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const future = kernel.requestExecute({code, stop_on_error: true});
    let error = null;
    future.onIOPub = (msg) => {
        if (msg.header.msg_type === 'error') error = msg.content.ename + ': ' + msg.content.evalue;
    };
    await future.done;
    return error;
}"""


def chromium() -> str | None:
    """Debian's Chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, deadline_s: float) -> None:
    """Wait until ``url`` answers, or (for a ``tcp://host:port`` url) the port accepts connections."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            if url.startswith("tcp://"):
                host, port = url[6:].rsplit(":", 1)
                socket.create_connection((host, int(port)), timeout=1).close()
            else:
                _get(url, timeout=2)
            return
        time.sleep(0.2)
    raise RuntimeError(f"server did not answer {url} in {deadline_s:.0f} s:\n{log.read_text()[-4000:]}")


def jupyter_env(base: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a server (and its kernels): temporary Jupyter folders, lorabench home in ``base``."""
    config = base / "jupyter-config"
    settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(base / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(base / "jupyter-runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "LORABENCH_HOME": str(base / "home"),
        "LORABENCH_CATALOG": str(base / "default-catalog.duckdb"),
        "PYTHONUNBUFFERED": "1",
    }
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


class Server:
    """A JupyterLab or Voila server process on a free loopback port."""

    def __init__(
        self, proc: subprocess.Popen[bytes], url: str, token: str, log: Path, root_dir: Path, app: str = "lab"
    ) -> None:
        self.proc, self.url, self.token, self.log, self.root_dir, self.app = proc, url, token, log, root_dir, app

    def api(self, path: str, method: str = "GET") -> Any:
        sep = "&" if "?" in path else "?"
        request = urllib.request.Request(f"{self.url}{path}{sep}token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def lab_url(self, notebook: str) -> str:
        if self.app == "notebook":
            return f"{self.url}/notebooks/{notebook}?token={self.token}"
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            for session in self.api("/api/sessions"):
                self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_lab(root_dir: Path, base: Path, env: dict[str, str] | None = None, *, app: str = "lab") -> Server:
    """Start JupyterLab (or ``app="notebook"``: Notebook 7) with ``--allow-root`` and a fresh token, serving
    ``root_dir``; wait for ``/api/status``."""
    port, token = free_port(), secrets.token_hex(16)
    log = base / f"jupyter{app}.log"
    app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        f"--{app_class}.expose_app_in_browser=True",
    ]
    if app == "lab":
        cmd.append("--LabApp.news_url=None")
    handle = open(log, "wb")  # noqa: SIM115 - the server writes to it until stopped
    proc = subprocess.Popen(cmd, cwd=root_dir, env=env or jupyter_env(base), stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    server = Server(proc, url, token, log, root_dir, app)
    try:
        _wait_http(f"{url}/api/status?token={token}", proc, log, 90)
    except BaseException:
        server.stop()
        raise
    return server


def start_voila(notebook: Path, base: Path, env: dict[str, str] | None = None) -> Server:
    """Start Voila on one notebook; wait until its page answers (it runs the notebook per request)."""
    port = free_port()
    log = base / "voila.log"
    cmd = [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
        "--show_tracebacks=True",
    ]
    handle = open(log, "wb")  # noqa: SIM115 - the server writes to it until stopped
    proc = subprocess.Popen(
        cmd, cwd=notebook.parent, env=env or jupyter_env(base), stdout=handle, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    server = Server(proc, url, "", log, notebook.parent)
    try:
        _wait_http(f"tcp://127.0.0.1:{port}", proc, log, 60)
    except BaseException:
        server.stop()
        raise
    return server


def write_notebook(path: Path, cells: Sequence[str]) -> Path:
    """A notebook of code cells with the python3 kernelspec."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def open_notebook(page: Any, server: Server, name: str, *, run: bool = True, timeout_ms: int = 60_000) -> None:
    """Open a notebook in JupyterLab, wait for its kernel, and run all cells."""
    page.goto(server.lab_url(name), wait_until="domcontentloaded")
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout_ms)
    if run:
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def execute(page: Any, code: str) -> None:
    """Run code in the open notebook's kernel (no cell); raise if it fails."""
    error = page.evaluate(EXECUTE_JS, code)
    if error:
        raise AssertionError(f"kernel error: {error}")


def wait_for_file(path: Path, predicate: Any = bool, timeout_s: float = 15.0) -> Any:
    """Wait until ``path`` holds JSON for which ``predicate`` is true; return that JSON."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            last = json.loads(path.read_text())
            if predicate(last):
                return last
        time.sleep(0.05)
    raise AssertionError(f"{path.name} never satisfied the check; last value: {last!r}")


# -- catalogs ------------------------------------------------------------------------------------------------

_ROWS_SQL = """
INSERT INTO loras (path, root, folder, name, title, size, mtime, status, format, algorithm, dora, base_model,
    rank, alpha, dtype, trigger_words, training_tags, sha256, preview_path, first_seen, last_seen)
SELECT $root || '/' || folder || '/' || name || '.safetensors', $root, folder, name, name, 1000000 + i * 17,
    now()::TIMESTAMP, 'ok', 'kohya', $algo[1 + i % len($algo)], FALSE, $base[1 + (i // 3) % len($base)],
    [4, 8, 16, 32][1 + i % 4], 4.0, 'F16', ['trig' || CAST(i % 50 AS VARCHAR)],
    [$tag[1 + i % len($tag)], $tag[1 + (i // 7) % len($tag)]], sha256(CAST(i AS VARCHAR)),
    CASE WHEN len($previews) > 0 AND hash(concat(i, 'p')) % $every = 0
         THEN $previews[1 + CAST(hash(concat(i, 'q')) % len($previews) AS BIGINT)] END,
    now()::TIMESTAMP - to_seconds(CAST(i AS BIGINT)), now()::TIMESTAMP
FROM (SELECT i, $kind[1 + i % len($kind)] || '/' || lpad(CAST(i // 500 AS VARCHAR), 3, '0') AS folder,
             $adj[1 + (i * 7) % len($adj)] || '_' || $noun[1 + (i * 13) % len($noun)] || '_'
             || lpad(CAST(i AS VARCHAR), 6, '0') AS name
      FROM range($rows) r(i))
"""
_WORDS = {
    "adj": ["misty", "golden", "crimson", "silent", "velvet", "frozen", "lunar", "amber", "neon", "rustic"],
    "noun": ["forest", "knight", "fox", "castle", "robot", "garden", "dragon", "harbor", "witch", "owl"],
    "kind": ["characters", "styles", "concepts", "clothing"],
    "base": ["sdxl", "sd1", "flux1", "sdxl", "pony", "sd3"],
    "algo": ["lora", "lora", "locon", "loha", "lokr"],
    "tag": ["1girl", "solo", "outdoors", "portrait", "night", "sky", "flowers", "rain"],
}


def preview_images(folder: Path, count: int = 24) -> list[str]:
    """A few small, distinct PNG previews (gradients) under ``folder`` (the synthetic library root)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        image = Image.linear_gradient("L").resize((96, 120)).convert("RGB")
        r, g, b = image.split()
        image = Image.merge("RGB", (r.point(lambda v, k=k: (v + 37 * k) % 256), g, b.point(lambda v, k=k: 255 - v)))
        path = folder / f"preview_{k:03d}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def synthetic_catalog(path: Path, rows: int, *, root: Path, previews: Sequence[str] = (), every: int = 5) -> Any:
    """A catalog of ``rows`` synthetic LoRAs (one bound-parameter INSERT … SELECT); every ``every``-th row
    gets one of ``previews`` (files under ``root``)."""
    from lorabench.catalog import Catalog

    catalog = Catalog(path)
    catalog.sql(_ROWS_SQL, {"root": str(root), "rows": rows, "previews": list(previews), "every": every, **_WORDS})
    catalog.release()
    return catalog


XSS = {
    "script": "<script>window.__pwned=1</script>",
    "img": "<img src=x onerror=\"window.__pwned=1;fetch('/api/terminals',{method:'POST'})\">",
    "js_url": '<a href="javascript:window.__pwned=1">jav&#x09;ascript:alert(1)</a>',
    "svg": '<svg onload="window.__pwned=1"><circle r=9 /></svg>',
    "iframe": '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    "commandlinker": '<button data-commandlinker-command="terminal:create-new">open terminal</button>',
    "clobber": "<a id=MathJax>x</a><form name=jupyterapp></form>",
    "tracker": "<img src=https://tracker.invalid/x.png>",
    "style": '<div style="position:fixed;inset:0;background:red">cover</div>',
}


def xss_catalog(path: Path, root: Path) -> tuple[Any, list[int]]:
    """A catalog whose names, titles, tags, trigger words, notes, user tags and sidecar descriptions are XSS
    payloads; one row's preview is an SVG with a script (it must never be rendered)."""
    from lorabench.catalog import Catalog

    root.mkdir(parents=True, exist_ok=True)
    svg = root / "evil.preview.svg"
    svg.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=1"><script>window.__pwned=1</script></svg>'
    )
    catalog = Catalog(path)
    ids = []
    for n, (kind, payload) in enumerate(XSS.items()):
        info = {
            "tags": {payload: 9, f"{kind} tag": 3},
            "trigger_words": [{"word": payload, "source": payload}],
            "training": {"training_comment": payload, "optimizer": payload},
            "sidecars": {
                "sidecars": [
                    {
                        "kind": payload,
                        "path": f"{root}/{payload}.civitai.info",
                        "status": "ok",
                        "fields": {payload: 1, "description_html": 1},
                    }
                ]
            },
            "base_model_evidence": [{"source": payload, "value": "sdxl", "confidence": 0.5}],
        }
        row = catalog.sql(
            "INSERT INTO loras (path, root, folder, name, title, description, author, status, algorithm, base_model, "
            "trigger_words, training_tags, preview_path, info, first_seen) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, 'ok', 'lora', 'sdxl', ?, ?, ?, ?, now()) RETURNING id",
            [
                f"{root}/{kind}-{n}.safetensors",
                str(root),
                payload,
                payload,
                f"{payload} title",
                f"<p>Intro</p>{payload}<p>{payload}</p>",
                payload,
                [payload],
                [payload, f"{kind} tag"],
                str(svg) if kind == "svg" else None,
                json.dumps(info),
            ],
        )
        lora_id = int(row.column("id")[0])
        catalog.update(
            lora_id,
            notes=payload,
            tags=[payload[:200]],
            rating=3,
            trigger_groups=[{"name": payload, "words": [payload]}],
        )
        ids.append(lora_id)
    catalog.release()
    return catalog, ids


@contextlib.contextmanager
def browser(playwright_module: Any = None) -> Iterator[Any]:
    """A headless Debian Chromium through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium_browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium_browser
        finally:
            chromium_browser.close()
