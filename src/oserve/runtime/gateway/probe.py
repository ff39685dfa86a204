"""The gateway's replica probe: ``GET /health`` on every routed replica each ``probe_interval_s``. A replica that
misses two probes in a row (no answer within ``probe_timeout_s``, or no connection) is hung or dead: it is routed
around until a probe answers again, and its requests in flight are cut loose — those that had not sent a byte to
the client retry on another replica, streams end with an error event. Any HTTP answer (a draining engine's 503
too) counts as alive: only silence is a fault.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from oserve.runtime.gateway.gateway import Gateway

__all__ = ["MISSES_TO_FAIL", "probe_forever", "probe_once"]

log = logging.getLogger(__name__)
MISSES_TO_FAIL = 2  # one slow answer under a CPU spike is not a fault


async def _answers(session: aiohttp.ClientSession, url: str, timeout_s: float) -> bool:
    try:
        async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            await resp.read()
            return True
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def probe_once(gateway: Gateway, session: aiohttp.ClientSession) -> list[str]:
    """Probe every replica of the current table once; returns the names found failed this round."""
    table = gateway.table
    lim = gateway.limits
    answers = await asyncio.gather(*(_answers(session, url, lim.probe_timeout_s) for url in table.urls))
    failed = []
    for i, (load, ok) in enumerate(zip(table.loads, answers, strict=True)):
        if ok:
            if load.missed_probes >= MISSES_TO_FAIL:
                load.down_until_s = 0.0  # back: the table's next pick lets it in again
                log.warning("replica %s answers again", load.name)
            load.missed_probes = 0
            continue
        load.missed_probes += 1
        if load.missed_probes >= MISSES_TO_FAIL:
            if load.missed_probes == MISSES_TO_FAIL:
                failed.append(load.name)
                log.warning("replica %s missed %d health probes: routed around", load.name, MISSES_TO_FAIL)
                gateway.metrics.retries.labels("hung").inc(load.inflight)
                load.fail()
            if gateway.table is table:
                table.mark_down(i, lim.probe_interval_s + 2 * lim.probe_timeout_s)
    return failed


async def probe_forever(gateway: Gateway) -> None:
    """Until cancelled: ``probe_once`` every ``probe_interval_s``."""
    interval = gateway.limits.probe_interval_s
    async with aiohttp.ClientSession() as session:
        while True:
            start = time.monotonic()
            try:
                await probe_once(gateway, session)
            except Exception:  # a probe round never ends the prober
                log.exception("replica probe round failed")
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - start)))
