"""A helper process for the concurrency and durability tests (``_workers.py`` or ``python -m``)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORKERS = Path(__file__).with_name("_workers.py")
REPO = Path(__file__).resolve().parents[2]


class Worker:
    """A helper process whose stdout lines are collected by a thread (so reads can time out)."""

    def __init__(self, *args: object, cwd: Path | None = None, module: bool = False) -> None:
        self.stderr_file = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives as long as the process)
        argv = [sys.executable, "-m", *map(str, args)] if module else [sys.executable, str(WORKERS), *map(str, args)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self.stderr_file, text=True, cwd=cwd or REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "LORABENCH_DEBUG": "1"},
        )  # fmt: skip
        self.lines: list[str] = []
        self._stderr_text: str | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """Wait for a stdout line starting with ``prefix``; fail if the process ends or time runs out."""
        stop = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, stop - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line within {timeout} s; stderr: {self.stderr()}") from None
            if line is None:
                raise AssertionError(f"exited ({self.proc.wait()}) before {prefix!r}; stderr: {self.stderr()}")
            if line.startswith(prefix):
                return line

    def wait(self, timeout: float = 120.0) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.proc.args} did not finish in {timeout} s") from None
        self._finish()
        return rc

    def kill(self) -> bool:
        """SIGKILL; True if the process was still running."""
        alive = self.proc.poll() is None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._finish()
        return alive

    def _finish(self) -> None:
        """After the process ended: drain stdout, keep stderr's text, close both files."""
        self._reader.join(timeout=10)
        if self._stderr_text is None:
            self._stderr_text = self.stderr()
            self.stderr_file.close()
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def stderr(self) -> str:
        if self._stderr_text is not None:
            return self._stderr_text
        self.stderr_file.seek(0)
        return self.stderr_file.read()

    def result(self) -> dict:
        found = [line for line in self.lines if line.startswith("result ")]
        assert found, f"no result line; stdout {self.lines[-5:]}; stderr: {self.stderr()}"
        return json.loads(found[-1][len("result ") :])
