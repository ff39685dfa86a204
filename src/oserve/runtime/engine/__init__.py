"""Engines behind the gateway: the emulated engine (``emulated``) speaks ``vllm serve``'s HTTP API and paces tokens
by the cost model; ``launch`` builds each backend's engine command (``emulated``, and ``vllm`` in ``vllm``, which
also probes /health and /metrics). Import the submodules; they need the ``serve`` extra."""
