"""``Pipeline``: the ``pp`` stages of one pipeline-parallel replica, shared by its virtual engines.

vLLM runs a PP replica as ``pp`` virtual engines (micro-batches), each scheduling its own batch from ``1/pp`` of
the KV blocks; a batch passes through the stages in order, each stage runs one micro-batch at a time, first in
first out, and a virtual engine schedules its next batch once its last one has left the last stage. So a stage
busy with a long prefill holds up the micro-batches behind it, and the stages after it idle (the bubble).

A batch's pass is priced from its uncontended time ``T = overhead + pp * stage + (pp - 1) * send`` (what
``CostModel.iteration_time`` gives: the engine's per-step CPU overhead, the slowest stage's time for the batch,
``CostModel.stage_time``, and one activation send per stage boundary). Every stage is taken to run as long as the
slowest one, so the bubbles are not understated. With no contention the pass ends at ``start + T``, as a lone
engine's step does.

Decode-only micro-batches of similar size hardly contend: each engine's pass is longer than the other engines'
stage times by the overhead and sends, so a stage is free when the next one comes. The simulator therefore lets a
virtual engine run decode steps in a closed-form run (``DecodeRun``, priced uncontended and not booked here) while
no prefill is in the pipeline (``prefill_until_s``); a step with prefill tokens is booked here and ends the other
engines' runs at their step in flight, so their next steps queue behind it, stage by stage.
"""

from __future__ import annotations

from oserve.perf.costmodel import CostModel

__all__ = ["Pipeline"]


class Pipeline:
    """When each stage is next free; ``schedule`` books one micro-batch through all of them."""

    def __init__(self, cost_model: CostModel) -> None:
        self.pp = cost_model.replica.pp
        self.free_s = [0.0] * self.pp  # when each stage finishes the micro-batches booked on it
        self.prefill_until_s = 0.0  # when the last booked micro-batch with prefill tokens leaves the pipeline
        self.overhead_s = cost_model.calib.stack.iteration_overhead_s
        self._act_bytes = cost_model.model.hidden_size * cost_model.model.dtype_bytes
        self._p2p = cost_model.calib.p2p_s

    def send_s(self, tokens: int) -> float:
        """One stage-to-stage activation send of a ``tokens``-token batch (within a node, as the cost model)."""
        return self._p2p(tokens * self._act_bytes, inter_node=False)

    def schedule(self, now: float, step_s: float, tokens: int, prefill: bool = False) -> float:
        """Book a micro-batch scheduled at ``now`` whose uncontended pass takes ``step_s`` through the stages,
        each after the micro-batches booked before it; return when it leaves the last stage."""
        pp, free = self.pp, self.free_s
        send = self.send_s(tokens)
        stage = max(0.0, (step_s - self.overhead_s - (pp - 1) * send) / pp)
        t = now + self.overhead_s
        for s in range(pp):
            if s:
                t += send
            if free[s] > t:
                t = free[s]
            t += stage
            free[s] = t
        if prefill and t > self.prefill_until_s:
            self.prefill_until_s = t
        return t
