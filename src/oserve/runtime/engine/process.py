"""A running engine process: spawned from an ``EngineLaunch`` with its output in a log file, stopped with SIGTERM
and, after a grace period, SIGKILL. Its own process group, so an engine's workers (vLLM's per-GPU processes) go
with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from oserve.errors import BackendError
from oserve.runtime.engine.launch import EngineLaunch

__all__ = ["EngineProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on ``host`` now (another process may take it before the engine binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host != "0.0.0.0" else "", 0))
        return int(sock.getsockname()[1])


class EngineProcess:
    """One engine subprocess and its log file."""

    def __init__(self, launch: EngineLaunch, log_path: Path | str) -> None:
        self.launch = launch
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **launch.env}
        with self.log_path.open("ab") as log:
            log.write(f"$ {launch.describe()}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    list(launch.argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise BackendError(f"cannot launch {launch.argv[0]!r}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f"exit code {self.returncode}; log {self.log_path}: " + " | ".join(text[-lines:])

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def stop(self, grace_s: float = 30.0) -> int:
        """SIGTERM (the engine finishes its in-flight requests and exits), SIGKILL after ``grace_s``; returns the
        exit code."""
        if self.alive():
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.alive():
                self._signal(signal.SIGKILL)
        while self._proc.poll() is None:
            await asyncio.sleep(0.02)
        self._signal(signal.SIGKILL)  # stragglers left in the group
        return int(self._proc.returncode)

    def kill(self) -> None:
        """SIGKILL the process group now (fault injection, last resort)."""
        self._signal(signal.SIGKILL)
