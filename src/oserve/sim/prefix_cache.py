"""vLLM v1's automatic prefix caching over one engine's KV block pool (``vllm/v1/core/kv_cache_manager.py``).

A request's prompt is named block by block by chained hashes (a trace's Mooncake ``hash_ids``, one per 512
tokens; the emulated engine's hashes of the token ids of each ``block_size`` tokens, see ``block_hashes``). The
cache unit is one hash block, ``tokens_per_hash`` tokens = ``unit`` engine blocks (so ``block_size`` must divide
``tokens_per_hash``: a 512-token Mooncake block is 32 blocks of 16 tokens). At admission the longest prefix of
whole hash blocks that is cached — and leaves at least the prompt's last token to compute — is a hit: its KV is
shared, not computed. A block a prefill schedules is cached from then on (vLLM's ``cache_blocks`` at allocation).
Cached blocks are shared while referenced (a refcount); when the last holder frees them they stay cached in the
free pool, and are evicted least recently freed first (a request's tail before its head, as vLLM queues them)
only when the allocator needs the room: the engine keeps ``cached free blocks <= free blocks`` (``trim``).

One difference from vLLM, on purpose: vLLM's free queue also holds blank blocks in LRU order and evicts
whatever it pops, so a cached block can go while blank ones remain deeper in the queue; here blank blocks go
first, a cached one only when no blank one is left. The engine's free-block count (what admission and KV-usage
see) counts cached free blocks as free, as vLLM does.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

from oserve.errors import ConfigError

__all__ = [
    "MOONCAKE_BLOCK_TOKENS",
    "CachedPrefixes",
    "PrefixCache",
    "block_hashes",
    "chained_hashes",
    "infinite_hit_rate",
]

MOONCAKE_BLOCK_TOKENS = 512  # tokens each Mooncake ``hash_ids`` entry names


class PrefixCache:
    """Hash blocks cached in one engine: ``ref`` maps a block hash to its holders (> 0), ``lru`` the cached
    blocks nobody holds, least recently freed first. Counters in tokens, as vLLM's ``prefix_cache_*``."""

    __slots__ = ("hits", "lru", "queries", "ref", "tokens_per_hash", "unit")

    def __init__(self, tokens_per_hash: int, block_size: int) -> None:
        if tokens_per_hash < block_size or tokens_per_hash % block_size:
            raise ConfigError(
                f"prefix caching needs block_size ({block_size}) to divide the {tokens_per_hash}-token hash "
                "blocks of the trace; pick a block_size that does, or set enable_prefix_caching: false"
            )
        self.tokens_per_hash = tokens_per_hash
        self.unit = tokens_per_hash // block_size
        self.ref: dict[int, int] = {}
        self.lru: OrderedDict[int, None] = OrderedDict()
        self.queries = 0  # tokens looked up (prompt + generated of each admitted request)
        self.hits = 0  # of them found cached

    @property
    def free_blocks(self) -> int:
        """Engine blocks cached but held by nobody (evictable; part of the engine's free blocks)."""
        return len(self.lru) * self.unit

    @property
    def cached_blocks(self) -> int:
        return (len(self.ref) + len(self.lru)) * self.unit

    def lookup(self, hashes: Sequence[int], most: int) -> tuple[int, int]:
        """(hit units, of them not held by anyone) of the longest cached prefix of ``hashes[:most]``."""
        ref, lru = self.ref, self.lru
        j = idle = 0
        while j < most:
            h = hashes[j]
            if h not in ref:
                if h not in lru:
                    break
                idle += 1
            j += 1
        return j, idle

    def acquire(self, hashes: Sequence[int]) -> None:
        """Hold the hit blocks ``hashes`` (all cached: :meth:`lookup` found them)."""
        ref, lru = self.ref, self.lru
        for h in hashes:
            n = ref.get(h)
            if n is None:
                del lru[h]
                ref[h] = 1
            else:
                ref[h] = n + 1

    def register(self, h: int) -> bool:
        """Cache a block its holder just scheduled; False when that hash is cached already (the holder's copy
        stays private, as a duplicate block in vLLM is never hit)."""
        if h in self.ref or h in self.lru:
            return False
        self.ref[h] = 1
        return True

    def release(self, held: list[int]) -> int:
        """Drop one holder of each block in ``held``; return how many became free (still cached, tail first in
        the LRU order, so a prefix outlives its tail)."""
        ref, lru = self.ref, self.lru
        freed = 0
        for h in reversed(held):
            n = ref[h] - 1
            if n:
                ref[h] = n
            else:
                del ref[h]
                lru[h] = None
                freed += 1
        return freed

    def trim(self, free_blocks: int) -> None:
        """Evict least recently freed blocks until the cached free ones fit in ``free_blocks``."""
        lru, unit = self.lru, self.unit
        while lru and len(lru) * unit > free_blocks:
            lru.popitem(last=False)


class CachedPrefixes:
    """The engine's side of prefix caching (``sim.Engine`` mixes it in; used only when its ``cache`` is set):
    per slot, ``held`` lists the block hashes it holds and ``units`` counts its prompt's hash blocks looked up
    or scheduled so far."""

    __slots__ = ()

    def _hit(self, rid: int, need: int) -> tuple[int, int]:
        """(hit hash blocks, of them held by nobody) for request ``rid`` with ``need`` tokens to compute: the
        longest cached prefix of its prompt's full hash blocks, leaving its last token to compute."""
        hashes = self.req.hashes[rid]
        t = self.cache.tokens_per_hash
        most = min(len(hashes), self.req.prompt[rid] // t, (need - 1) // t)
        return self.cache.lookup(hashes, most) if most > 0 else (0, 0)

    def _head_hit(self, need: int) -> tuple[int, int, int]:
        """(hit tokens, hit blocks held by others, hit hash blocks) of the head of the queue, which has ``need``
        tokens to compute; zeros without a cache."""
        cache = self.cache
        if cache is None:
            return 0, 0, 0
        units, idle = self._hit(self.waiting[0], need)
        return units * cache.tokens_per_hash, (units - idle) * cache.unit, units

    def _take_hit(self, s: int, rid: int, units: int, need: int, shared: int) -> None:
        """Slot ``s`` just admitted request ``rid`` with ``units`` hit hash blocks (``shared`` engine blocks of
        them held by others, so not taken from the pool): hold them, count them computed."""
        cache = self.cache
        hit = units * cache.tokens_per_hash
        if units:
            hashes = self.req.hashes[rid][:units]
            cache.acquire(hashes)
            self.held[s] = list(hashes)
            self.free_blocks += shared
            self.comp[s] = hit
            self.outstanding -= hit
        self.units[s] = units
        cache.queries += need
        cache.hits += hit
        if self.req.cached[rid] < 0:
            self.req.cached[rid] = hit
        self._trim()

    def _register(self, s: int, upto: int) -> None:
        """Cache the full hash blocks of slot ``s``'s prompt that its first ``upto`` tokens cover."""
        rid = int(self.rid[s])
        hashes = self.req.hashes[rid]
        t = self.cache.tokens_per_hash
        full = min(len(hashes), self.req.prompt[rid] // t, upto // t)
        done = self.units[s]
        if full > done:
            held, register = self.held[s], self.cache.register
            for h in hashes[done:full]:
                if register(h):
                    held.append(h)
            self.units[s] = full

    def _free_cached(self, s: int) -> None:
        """Give back slot ``s``'s blocks: private ones to the pool, cached ones to their other holders or, held
        by nobody, to the pool still cached."""
        cache, held = self.cache, self.held[s]
        self.free_blocks += int(self.blk[s]) + (cache.release(held) - len(held)) * cache.unit
        self.held[s] = []

    def _trim(self) -> None:
        """Evict cached free blocks the pool needs (after an allocation)."""
        cache = self.cache
        if len(cache.lru) * cache.unit > self.free_blocks:
            cache.trim(self.free_blocks)


def chained_hashes(blocks: Iterable[bytes], seed: int = 0) -> list[int]:
    """One 64-bit hash per block, each of the previous block's hash and the block's bytes (vLLM's
    ``hash_block_tokens`` chaining), so equal hashes mean equal prefixes."""
    out: list[int] = []
    parent = seed
    for block in blocks:
        digest = hashlib.blake2b(parent.to_bytes(8, "little", signed=True), digest_size=8)
        digest.update(block)
        parent = int.from_bytes(digest.digest(), "little", signed=True)
        out.append(parent)
    return out


def block_hashes(token_ids: Sequence[int], block_size: int, seed: int = 0) -> list[int]:
    """vLLM's chained block hashes of a prompt's full ``block_size``-token blocks (a partial last block is not
    cached, so not hashed)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    full = len(ids) // block_size * block_size
    return chained_hashes((ids[i : i + block_size].tobytes() for i in range(0, full, block_size)), seed)


def infinite_hit_rate(hash_ids: Sequence[Sequence[int]], prompt_tokens: Sequence[int] | None = None) -> float:
    """Fraction of hash blocks seen before, in arrival order, with an unbounded cache (the trace's own bound).

    Without ``prompt_tokens`` it counts blocks (any id seen before is a hit, the README's 64%); with them it is
    the token hit rate an unbounded vLLM cache would get: the longest seen prefix of whole blocks, leaving the
    last prompt token to compute, over the prompt tokens."""
    seen: set[int] = set()
    hit = total = 0
    for i, ids in enumerate(hash_ids):
        ids = [int(h) for h in ids]
        if prompt_tokens is None:
            hit += sum(1 for h in ids if h in seen)
            total += len(ids)
        else:
            prompt = int(prompt_tokens[i])
            most = min(len(ids), max(prompt - 1, 0) // MOONCAKE_BLOCK_TOKENS)
            j = 0
            while j < most and ids[j] in seen:
                j += 1
            hit += j * MOONCAKE_BLOCK_TOKENS
            total += prompt
            ids = ids[: prompt // MOONCAKE_BLOCK_TOKENS]  # vLLM caches full blocks only
        seen.update(ids)
    return hit / total if total else 0.0
