"""Which bytes each starting GPU needs, from where, and when they move.

The needed ranges of every destination GPU are cut, along layers and units, at every range boundary of the old and
new layouts, so each piece lies wholly inside or outside every old range: its holders are exact. Pieces already on
the destination stay (``local``); the others are grouped by who holds them and split into parts of at most
``chunk_bytes``. Parts are placed largest first, destinations interleaved; each takes the source that finishes it
earliest on the ``FluidSchedule`` (ties: the cheaper link, then the lower GPU id). A destination receives only once
its old replica has drained; sources are readable from the start (copy engines read while an engine drains or
serves).

A GPU whose old shard and the bytes it receives would not fit its memory together offers only the bytes it keeps
for itself: the rest of its old shard is freed when its replica stops.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from oserve.adapt.links import LINK_ORDER, FluidSchedule, LinkKind, Links, Segment, Source
from oserve.adapt.shards import ShardRange, shard_bytes, unit_bytes
from oserve.spec import Cluster, ModelSpec

__all__ = ["Moves", "Need", "Transfer", "schedule_moves"]


@dataclass(frozen=True, slots=True)
class Need:
    """What one destination GPU must end up holding, and from when it can receive."""

    gpu: int
    ranges: tuple[ShardRange, ...]
    release_s: float
    replica: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """One copy into ``dst_gpu`` of target replica ``replica`` (``link == "local"``: bytes already there, reused).

    ``segments`` are ``(start_s, end_s, bytes_per_s)`` of its piecewise-constant rate; ``resources`` the links it
    occupies (``nvlink-out:3``, ``nic-in:1``, ``disk:0``, ...; their bandwidths are in ``SwitchPlan.link_gb_per_s``).
    """

    replica: str
    dst_gpu: int
    src: Source
    link: LinkKind
    nbytes: int
    start_s: float
    end_s: float
    ranges: tuple[ShardRange, ...]
    resources: tuple[str, ...] = ()
    segments: tuple[Segment, ...] = ()

    @property
    def src_gpu(self) -> int | None:
        return self.src.gpu

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "dst_gpu": self.dst_gpu,
            "src": self.src.label(),
            "link": self.link,
            "bytes": self.nbytes,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "ranges": [r.label() for r in self.ranges],
            "resources": list(self.resources),
        }


@dataclass(frozen=True, slots=True)
class Moves:
    """What ``schedule_moves`` returns: the transfers, the links' bandwidths (GB/s), and the GPUs that were short
    of memory to hold their old and new shards together."""

    transfers: tuple[Transfer, ...]
    link_gb_per_s: dict[str, float]
    short_of_memory: tuple[int, ...]


def schedule_moves(
    model: ModelSpec,
    cluster: Cluster,
    held: Mapping[int, Sequence[ShardRange]],
    needs: Sequence[Need],
    *,
    from_gpus: bool,
    host_nodes: frozenset[int],
    from_disk: bool,
    reuse_local: bool,
    chunk_bytes: int,
) -> Moves:
    """Every needed byte exactly once: reused in place, or copied from a GPU holding it (``from_gpus``), the host
    memory of the destination's node (when in ``host_nodes``) or its disk (``from_disk``)."""
    links = Links(cluster)
    fluid = FluidSchedule(links)
    cuts = _cuts(held, needs)
    index = _HolderIndex(held)
    need_of = {n.gpu: n for n in needs}
    offers = _offers(model, cluster, held, need_of) if from_gpus else {}
    moves: list[Transfer] = []
    parts: list[tuple[int, int, Need, tuple[ShardRange, ...], tuple[int, ...]]] = []
    for need in needs:
        local: list[ShardRange] = []
        groups: dict[tuple[int, ...], list[ShardRange]] = {}
        for rng in need.ranges:
            for cell in _cells(rng, cuts):
                holders = index.holders(cell)
                if reuse_local and need.gpu in holders:
                    local.append(cell)
                    continue
                keys = tuple(
                    sorted(g for g in holders if g != need.gpu and offers.get(g, _NONE).covers(cell))
                )
                groups.setdefault(keys, []).append(cell)
        if local:
            cells = _compact(local)
            src = Source("gpu", cluster.gpus[need.gpu].node, need.gpu)
            nbytes = shard_bytes(model, cells)
            moves.append(
                Transfer(need.replica, need.gpu, src, "local", nbytes, need.release_s, need.release_s, cells)
            )
        i = 0
        for keys, cells in sorted(groups.items()):
            for part in _split(model, _compact(cells), chunk_bytes):
                parts.append((shard_bytes(model, part), i, need, part, keys))
                i += 1
    parts.sort(key=lambda p: (-p[0], p[1], p[2].gpu))
    for nbytes, _, need, part, keys in parts:
        node = cluster.gpus[need.gpu].node
        sources = [Source("gpu", cluster.gpus[g].node, g) for g in keys]
        if node in host_nodes:
            sources.append(Source("host", node))
        if from_disk:
            sources.append(Source("disk", node))
        best = None
        for src in sources:
            link, resources = links.route(src, need.gpu)
            end, segments = fluid.fill(resources, need.release_s, nbytes)
            key = (end, LINK_ORDER.index(link), src.gpu if src.gpu is not None else -1)
            if best is None or key < best[0]:
                best = (key, src, link, resources, segments)
        if best is None:
            raise AssertionError(f"no source for {nbytes} bytes of GPU {need.gpu}")  # callers always add one
        _, src, link, resources, segments = best
        fluid.reserve(resources, segments)
        start, end = segments[0][0], segments[-1][1]
        moves.append(
            Transfer(need.replica, need.gpu, src, link, nbytes, start, end, part, resources, segments)
        )
    short = tuple(sorted(g for g, offer in offers.items() if offer.short))
    return Moves(tuple(moves), {r: links.gb_per_s(r) for t in moves for r in t.resources}, short)


# -- cutting ranges into pieces with exact holders --------------------------------------------------------------
def _cuts(
    held: Mapping[int, Sequence[ShardRange]], needs: Sequence[Need]
) -> dict[str, tuple[list[int], list[int]]]:
    """Per tensor, the sorted layer and unit boundaries of every old and new range."""
    layers: dict[str, set[int]] = {}
    units: dict[str, set[int]] = {}
    everything = [r for rs in held.values() for r in rs] + [r for n in needs for r in n.ranges]
    for r in everything:
        layers.setdefault(r.tensor, set()).update((r.layer_start, r.layer_stop))
        units.setdefault(r.tensor, set()).update((r.unit_start, r.unit_stop))
    return {t: (sorted(layers[t]), sorted(units[t])) for t in layers}


def _between(points: list[int], lo: int, hi: int) -> list[int]:
    i, j = bisect.bisect_left(points, lo), bisect.bisect_right(points, hi)
    return [lo, *[p for p in points[i:j] if lo < p < hi], hi]


def _cells(rng: ShardRange, cuts: Mapping[str, tuple[list[int], list[int]]]) -> list[ShardRange]:
    layer_points, unit_points = cuts[rng.tensor]
    ls = _between(layer_points, rng.layer_start, rng.layer_stop)
    us = _between(unit_points, rng.unit_start, rng.unit_stop)
    return [ShardRange(rng.tensor, l0, l1, u0, u1) for l0, l1 in pairwise(ls) for u0, u1 in pairwise(us)]


class _HolderIndex:
    def __init__(self, held: Mapping[int, Sequence[ShardRange]]) -> None:
        self._by_tensor: dict[str, list[tuple[ShardRange, int]]] = {}
        for gpu, ranges in held.items():
            for r in ranges:
                self._by_tensor.setdefault(r.tensor, []).append((r, gpu))

    def holders(self, cell: ShardRange) -> set[int]:
        return {g for r, g in self._by_tensor.get(cell.tensor, ()) if r.intersect(cell) == cell}


class _Offer:
    """What a GPU will send: its whole old shard, or (short of memory) only the part it keeps itself."""

    def __init__(self, ranges: Sequence[ShardRange], short: bool = False) -> None:
        self.ranges = tuple(ranges)
        self.short = short

    def covers(self, cell: ShardRange) -> bool:
        return any(r.intersect(cell) == cell for r in self.ranges)


_NONE = _Offer(())


def _offers(
    model: ModelSpec, cluster: Cluster, held: Mapping[int, Sequence[ShardRange]], need_of: Mapping[int, Need]
) -> dict[int, _Offer]:
    out: dict[int, _Offer] = {}
    for gpu, ranges in held.items():
        need = need_of.get(gpu)
        if need is None:
            out[gpu] = _Offer(ranges)
            continue
        old = shard_bytes(model, ranges)
        kept = [c for r in ranges for n in need.ranges if (c := r.intersect(n)) is not None]
        incoming = shard_bytes(model, need.ranges) - shard_bytes(model, kept)
        fits = old + incoming <= cluster.gpu_of(gpu).memory_bytes
        out[gpu] = _Offer(ranges, False) if fits else _Offer(kept, True)
    return out


# -- grouping and splitting ---------------------------------------------------------------------------------------
def _merge_runs(cells, *, order, joinable, join) -> list[ShardRange]:
    """Sort ``cells`` by ``order`` and join each into its predecessor while ``joinable`` says they abut."""
    out: list[ShardRange] = []
    for r in sorted(cells, key=order):
        if out and joinable(out[-1], r):
            out[-1] = join(out[-1], r)
        else:
            out.append(r)
    return out


def _compact(cells: Sequence[ShardRange]) -> tuple[ShardRange, ...]:
    """Merge neighbours: consecutive layers with the same units, then consecutive units with the same layers."""
    merged = _merge_runs(
        cells,
        order=lambda r: (r.tensor, r.unit_start, r.unit_stop, r.layer_start),
        joinable=lambda p, r: (
            (p.tensor, p.unit_start, p.unit_stop, p.layer_stop)
            == (r.tensor, r.unit_start, r.unit_stop, r.layer_start)
        ),
        join=lambda p, r: ShardRange(r.tensor, p.layer_start, r.layer_stop, r.unit_start, r.unit_stop),
    )
    final = _merge_runs(
        merged,
        order=lambda r: (r.tensor, r.layer_start, r.layer_stop, r.unit_start),
        joinable=lambda p, r: (
            (p.tensor, p.layer_start, p.layer_stop, p.unit_stop)
            == (r.tensor, r.layer_start, r.layer_stop, r.unit_start)
        ),
        join=lambda p, r: ShardRange(r.tensor, r.layer_start, r.layer_stop, p.unit_start, r.unit_stop),
    )
    order = {
        t: i
        for i, t in enumerate(("attn_qo", "attn_kv", "mlp", "layer_rep", "embed", "lm_head", "final_norm"))
    }
    return tuple(sorted(final, key=lambda r: (r.layer_start, order[r.tensor], r.unit_start)))


def _pieces(model: ModelSpec, r: ShardRange, limit: int) -> list[ShardRange]:
    """``r`` cut along layers, then units, into blocks of at most ``limit`` bytes (one unit-layer at least)."""
    per_layer = r.units * unit_bytes(model, r.tensor)
    if r.layers * per_layer <= limit:
        return [r]
    if per_layer <= limit:
        step = limit // per_layer
        return [
            ShardRange(r.tensor, lo, min(lo + step, r.layer_stop), r.unit_start, r.unit_stop)
            for lo in range(r.layer_start, r.layer_stop, step)
        ]
    step = max(1, limit // unit_bytes(model, r.tensor))
    return [
        ShardRange(r.tensor, layer, layer + 1, lo, min(lo + step, r.unit_stop))
        for layer in range(r.layer_start, r.layer_stop)
        for lo in range(r.unit_start, r.unit_stop, step)
    ]


def _split(model: ModelSpec, ranges: Sequence[ShardRange], limit: int) -> list[tuple[ShardRange, ...]]:
    """Consecutive blocks packed into parts of at most ``limit`` bytes."""
    parts: list[tuple[ShardRange, ...]] = []
    current: list[ShardRange] = []
    size = 0
    for r in ranges:
        for piece in _pieces(model, r, limit):
            b = piece.bytes(model)
            if current and size + b > limit:
                parts.append(_compact(current))
                current, size = [], 0
            current.append(piece)
            size += b
    if current:
        parts.append(_compact(current))
    return parts
