"""The OpenAI-compatible gateway: types each request, routes it with the simulator's routing code over the
deployment's weights and live load, retries, applies backpressure, and exports Prometheus metrics.

``Gateway`` holds the state the controller drives (``set_routes``, ``inflight``, ``observed_counts``);
``make_gateway_app`` serves it with aiohttp; ``serve_gateway`` runs it until SIGTERM with a drain.
"""

from oserve.runtime.gateway.app import GATEWAY_KEY, make_gateway_app, serve_gateway
from oserve.runtime.gateway.gateway import Gateway, GatewayLimits

__all__ = ["GATEWAY_KEY", "Gateway", "GatewayLimits", "make_gateway_app", "serve_gateway"]
