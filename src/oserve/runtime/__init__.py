"""The live runtime: the emulated engine, the OpenAI-compatible gateway, the engine launch adapters (emulated,
vLLM), the orchestrators (local processes, Ray) and the controller. Needs the ``serve`` extra (aiohttp,
prometheus-client; Ray for the ``ray`` orchestrator); nothing outside ``runtime/`` and ``cli/`` imports aiohttp, and
this package's ``__init__`` imports none of it, so ``import oserve.runtime`` always works.
"""

from oserve.runtime.loop import run_async

__all__ = ["run_async"]
