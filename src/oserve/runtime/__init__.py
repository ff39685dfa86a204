"""The live runtime: the emulated engine, the OpenAI-compatible gateway (and, beside them, the controller and
orchestrators). Needs the ``serve`` extra (aiohttp, prometheus-client); nothing outside ``runtime/`` and ``cli/``
imports aiohttp, and this package's ``__init__`` imports none of it, so ``import oserve.runtime`` always works.
"""

from oserve.runtime.loop import run_async

__all__ = ["run_async"]
