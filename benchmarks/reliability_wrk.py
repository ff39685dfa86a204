"""``--client wrk`` of ``benchmarks/reliability.py``: one load level driven by wrk (a C load generator: one
event loop per thread, keep-alive connections, a fraction of the Python client's CPU per request) instead of the
benchmark's own aiohttp client, with a Lua script that POSTs the same bodies (16 prompt words, ``max_tokens`` 16,
every other request streamed) and checks every answer as the Python client does: a plain answer must report 16
completion tokens, a stream 16 events then ``data: [DONE]`` and no error event. Not a command of its own.

wrk is closed-loop like our client (each connection sends its next request when the answer is in) but does not
wait a 429's ``Retry-After`` and stops at ``--load-s`` sharp: answers still in flight then are not counted (our
client waits for them). Used when ``wrk`` is on PATH (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["WRK_BODIES", "lua_script", "run_wrk", "wrk_path"]

TOKENS = 16


def _body(stream: bool) -> str:
    return json.dumps({"model": "llama-3-8b", "prompt": "the " * 15, "max_tokens": TOKENS, "stream": stream})


WRK_BODIES = (_body(True), _body(False))  # request n (per connection thread) sends WRK_BODIES[n % 2]

_LUA = r"""
local bodies = { %(bodies)s }
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(key)s" }
local tokens = %(tokens)d
local threads = {}
n, ok, bad, statuses, oks = 0, 0, 0, {}, {}

function setup(thread) table.insert(threads, thread) end

function request()
  n = n + 1
  return wrk.format("POST", "/v1/completions", headers, bodies[n %% 2 + 1])
end

function response(status, hdrs, body)
  local good = false
  if status == 200 then
    if body:sub(1, 5) == "data:" then
      local _, events = body:gsub("data: ", "")
      good = events == tokens + 1 and body:find("data: %%[DONE%%]%%s*$") ~= nil
        and body:find('"error"', 1, true) == nil
    else
      good = body:find('"completion_tokens":%%s*' .. tokens .. '[,}]') ~= nil
    end
  end
  statuses[status] = (statuses[status] or 0) + 1
  if good then
    ok = ok + 1
    local t = os.time()
    oks[t] = (oks[t] or 0) + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad, st, per_s = 0, 0, {}, {}
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_bad = total_bad + t:get("bad")
    for k, v in pairs(t:get("statuses")) do st[tostring(k)] = (st[tostring(k)] or 0) + v end
    for k, v in pairs(t:get("oks")) do per_s[tostring(k)] = (per_s[tostring(k)] or 0) + v end
  end
  local function obj(tbl)
    local parts = {}
    for k, v in pairs(tbl) do table.insert(parts, string.format('"%%s": %%d', k, v)) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"ok": %%d, "bad": %%d, "statuses": %%s, "ok_per_second": %%s, "duration_s": %%f, '
      .. '"p50_s": %%f, "p99_s": %%f, "connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}\n',
    total_ok, total_bad, obj(st), obj(per_s), summary.duration / 1e6,
    latency:percentile(50) / 1e6, latency:percentile(99) / 1e6, e.connect, e.read, e.write, e.timeout))
end
"""


def lua_script(key: str) -> str:
    """The wrk script: the bodies, the API key, the answer checks, a JSON line of results at the end."""
    bodies = ", ".join(f"[[{b}]]" for b in WRK_BODIES)
    return _LUA % {"bodies": bodies, "key": key, "tokens": TOKENS}


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, key: str, clients: int, seconds: float, warmup_s: float = 0.0) -> dict[str, Any]:
    """One closed-loop level of ``clients`` connections for ``seconds``: good answers, their rate over the level
    and (with ``warmup_s``) over the steady window, latency percentiles of every answer, wrk's CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="oserve-wrk-") as tmp:
        script, out = Path(tmp) / "load.lua", Path(tmp) / "out.txt"
        script.write_text(lua_script(key))
        threads = max(1, min(2, os.cpu_count() or 1, clients))
        cmd = [wrk_path() or "wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds:g}s",
               "--timeout", "120s", "-s", str(script), url]  # fmt: skip
        started_s = time.time()
        with out.open("w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        text = out.read_text()
    line = next((x for x in text.splitlines() if x.startswith("WRK-RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-500:]}")
    res = json.loads(line.removeprefix("WRK-RESULT "))
    per_s = {int(k): v for k, v in res["ok_per_second"].items()}
    steady = None
    if 0 < warmup_s < seconds:
        first, last = math.ceil(started_s + warmup_s), math.floor(started_s + seconds)  # whole seconds only
        if last > first:
            steady = sum(v for t, v in per_s.items() if first <= t < last) / (last - first)
    errors = {f"status {k}": v for k, v in res["statuses"].items() if k != "200"}
    errors |= {k: res[k] for k in ("connect", "read", "write", "timeout") if res[k]}
    bad_200 = res["bad"] - sum(v for k, v in res["statuses"].items() if k != "200")
    if bad_200:
        errors["200 but wrong answer"] = bad_200
    return {
        "ok": res["ok"],
        "requests": res["ok"] + res["bad"],
        "ok_per_s": res["ok"] / res["duration_s"],
        "p50_s": res["p50_s"],
        "p99_s": res["p99_s"],
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "steady_ok_per_s": steady,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
        "threads": threads,
    }
