"""Running an ``oserve serve`` ``Server`` in-process on its own event-loop thread, so tests talk to it over loopback
HTTP (as clients do) and can still look at its orchestrator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from oserve.runtime.config import ServeConfig
from oserve.runtime.loadgen import LoadRequest, requests_from_trace
from oserve.runtime.serve import Server
from oserve.trace import load_trace


class ServerThread:
    """``Server(config)`` started on a background loop; ``call`` runs a coroutine there."""

    def __init__(self, config: ServeConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(config)
        self.report = self.call(self.server.start(), timeout_s=120)

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


ADMIN_TOKEN = "admin-secret-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def serve_config(tmp_path: Path, **overrides: Any) -> ServeConfig:
    """Emulated engines 20x real time on loopback, any free port, the adaptive loop off unless asked; the admin
    API takes ``ADMIN`` headers."""
    base = ServeConfig().merged(
        {
            "gateway.port": 0,
            "gateway.admin_token": ADMIN_TOKEN,
            "backend.speed": 20.0,
            "orchestrator.log_dir": str(tmp_path / "logs"),
            "orchestrator.drain_timeout_s": 30.0,
            "controller.enabled": False,
            "controller.health_interval_s": 0.25,
        }
    )
    return base.merged(overrides)


def trace_slice(traces: Path, count: int, *, start: int = 0, time_scale: float = 10.0) -> list[LoadRequest]:
    """``count`` consecutive requests of the Azure conversation trace, ten times faster, every other streamed."""
    trace = load_trace(traces / "azure_conv_2023.csv")
    return requests_from_trace(trace.take(np.arange(start, start + count)), time_scale=time_scale)
