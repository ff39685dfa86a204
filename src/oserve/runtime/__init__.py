"""The live runtime: gateway, engines (emulated and vLLM), orchestrators (local processes, Ray) and the controller.

docs/runtime.md and docs/serve.md. Ray and the HTTP stack stay inside this package.
"""
