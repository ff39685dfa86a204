"""Bearer-token checks shared by the gateway (``/v1/*`` API key, ``/admin/*`` token) and the emulated engine (the
per-serve secret only the gateway holds), as vLLM's ``--api-key`` does it: ``Authorization: Bearer <key>``.

Both sides are hashed before the constant-time comparison, so neither the key's bytes nor its length leak through
timing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from aiohttp import web

__all__ = ["ENGINE_KEY_ENV", "bearer_matches", "is_loopback", "new_secret"]

#: the environment variable carrying the engine secret to an emulated engine (never on argv: `ps` shows argv)
ENGINE_KEY_ENV = "OSERVE_ENGINE_API_KEY"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def bearer_matches(request: web.Request, expected: str) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer <expected>`` (constant time)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    ok = hmac.compare_digest(_digest(given.strip()), _digest(expected))
    return ok and scheme.lower() == "bearer"


def new_secret() -> str:
    """A fresh 256-bit secret, URL-safe."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the socket on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
