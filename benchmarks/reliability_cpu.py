"""Where the CPU goes during a load level of ``benchmarks/reliability.py``: per-process CPU seconds (the
benchmark's own client, the serve process, each engine) and the whole machine's user / system / idle time, read
from ``/proc`` before and after the level. Not a command of its own."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (NaN once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def machine_cpu_s() -> dict[str, float]:
    """The machine's CPU seconds, all cores together, since boot: user (with nice), system (a system call's time,
    charged to the process that made the call), softirq (with irq: most of loopback TCP's receive path, charged
    to no process), idle (with iowait), steal."""
    v = [int(x) * _TICK_S for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return {
        "user": user + nice,
        "system": system,
        "softirq": irq + softirq,
        "idle": idle + iowait,
        "steal": steal,
    }


@dataclass
class CpuSnapshot:
    at_s: float
    client_s: float
    serve_s: float
    engines_s: dict[int, float]
    machine: dict[str, float]


def snapshot(serve_pid: int, engine_pids: list[int]) -> CpuSnapshot:
    return CpuSnapshot(
        time.monotonic(),
        time.process_time(),  # this process, every thread: the benchmark's load generator
        process_cpu_s(serve_pid),
        {pid: process_cpu_s(pid) for pid in engine_pids},
        machine_cpu_s(),
    )


def breakdown(
    before: CpuSnapshot, after: CpuSnapshot, ok: int, client_extra_s: float = 0.0
) -> dict[str, float]:
    """Cores used on average (CPU seconds / wall seconds) by each part over the level, and ms of CPU per good
    answer; ``client_extra_s``: a load generator in a process of its own (wrk). The machine's user, system,
    softirq and idle time are over all processes."""
    wall = max(after.at_s - before.at_s, 1e-9)
    engines = sum(after.engines_s[p] - before.engines_s[p] for p in before.engines_s if p in after.engines_s)
    used = {
        "client": after.client_s - before.client_s + client_extra_s,
        "serve": after.serve_s - before.serve_s,
        "engines": engines,
    }
    machine = {k: after.machine[k] - before.machine[k] for k in after.machine}
    out = {f"{k}_cores": v / wall for k, v in used.items()}
    out |= {f"{k}_ms_per_ok": 1000 * v / max(ok, 1) for k, v in used.items()}
    out |= {f"{k}_cores": v / wall for k, v in machine.items() if k != "user"}
    out["user_cores"] = machine["user"] / wall
    # busy time no process of ours was charged with: softirq, and anything else the machine runs
    out["other_cores"] = (sum(machine.values()) - machine["idle"] - sum(used.values())) / wall
    return out


def format_row(clients: int, b: dict[str, float]) -> str:
    return (
        f"{clients:>7} {b['client_cores']:>7.2f} {b['serve_cores']:>7.2f} {b['engines_cores']:>8.2f} "
        f"{b['other_cores']:>6.2f} {b['user_cores']:>6.2f} {b['system_cores']:>7.2f} {b['softirq_cores']:>7.2f} "
        f"{b['idle_cores']:>6.2f}   "
        f"{b['client_ms_per_ok']:>6.2f} {b['serve_ms_per_ok']:>6.2f} {b['engines_ms_per_ok']:>7.2f}"
    )


HEADER = (
    f"{'clients':>7} {'client':>7} {'serve':>7} {'engines':>8} {'other':>6} {'user':>6} {'system':>7} {'softirq':>7} "
    f"{'idle':>6}   {'client':>6} {'serve':>6} {'engines':>7}\n"
    f"{'':>7} {'(cores used over the level; other = busy, not charged to these; user..idle: machine)':<70}"
    f"{'(CPU ms per ok answer)':>23}"
)
