"""Engines behind the gateway: the emulated engine and the launch adapters (``launch``, ``vllm``)."""
