"""Engines behind the gateway: the emulated engine (``emulated``) speaks ``vllm serve``'s HTTP API and paces tokens
by the cost model. Import ``oserve.runtime.engine.emulated`` for the server; it needs the ``serve`` extra."""
