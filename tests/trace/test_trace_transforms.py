"""Transforms: windows, truncation, rate scaling, concatenation, blending, alternating phases, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from factories import make_trace
from oserve.errors import ConfigError
from oserve.trace import Trace, alternate, blend, clip_lengths, concat, scale_rate, truncate, window


def _two_services() -> tuple[Trace, Trace]:
    code = make_trace(3000, rate_rps=3.0, seed=1, prompt_mean_tokens=2000, output_mean_tokens=30, name="code")
    conv = make_trace(
        6000, rate_rps=6.0, seed=2, prompt_mean_tokens=1100, output_mean_tokens=210, name="conv"
    )
    return code, conv


def test_window_rebases_and_bounds() -> None:
    t = make_trace(2000, rate_rps=5.0)
    w = window(t, 100.0, 200.0)
    inside = (t.arrival_s >= 100.0) & (t.arrival_s < 200.0)
    assert len(w) == inside.sum() and w.duration_s == 100.0
    assert w.arrival_s.min() >= 0.0 and w.arrival_s.max() < 100.0
    np.testing.assert_array_equal(w.prompt_tokens, t.prompt_tokens[inside])


def test_window_to_end_keeps_last_request() -> None:
    t = make_trace(100)
    assert len(window(t, 0.0)) == len(t) == len(window(t, 0.0, t.duration_s + 5))
    with pytest.raises(ConfigError):
        window(t, 10.0, 5.0)


def test_truncate() -> None:
    t = make_trace(500, rate_rps=10.0)
    head = truncate(t, max_requests=100)
    assert len(head) == 100 and head.duration_s == t.arrival_s[100]
    assert len(truncate(t, max_duration_s=10.0)) == (t.arrival_s < 10.0).sum()
    assert len(truncate(t, max_requests=10_000)) == len(t)


def test_scale_rate_is_deterministic_and_keeps_lengths() -> None:
    t = make_trace(5000, rate_rps=10.0)
    a, b = scale_rate(t, 2.5, seed=7), scale_rate(t, 2.5, seed=7)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, scale_rate(t, 2.5, seed=8).arrival_s)
    assert a.duration_s == t.duration_s and a.rate_rps == pytest.approx(2.5 * t.rate_rps, rel=0.03)
    assert a.arrival_s.min() >= 0 and a.arrival_s.max() <= t.duration_s
    # the (prompt, output) joint distribution is resampled, not changed
    assert np.median(a.prompt_tokens) == pytest.approx(np.median(t.prompt_tokens), rel=0.05)
    assert np.corrcoef(a.prompt_tokens, a.output_tokens)[0, 1] == pytest.approx(
        np.corrcoef(t.prompt_tokens, t.output_tokens)[0, 1], abs=0.05
    )


def test_scale_rate_compress_and_identity() -> None:
    t = make_trace(100)
    c = scale_rate(t, 4.0, method="compress")
    np.testing.assert_allclose(c.arrival_s, t.arrival_s / 4.0)
    assert c.rate_rps == pytest.approx(4 * t.rate_rps)
    np.testing.assert_array_equal(scale_rate(t, 1.0).arrival_s, t.arrival_s)
    with pytest.raises(ConfigError):
        scale_rate(t, 0.0)
    with pytest.raises(ConfigError):
        scale_rate(t, 2.0, method="warp")  # type: ignore[arg-type]


def test_concat_back_to_back() -> None:
    code, conv = _two_services()
    both = concat([code, conv], gap_s=10.0)
    assert len(both) == len(code) + len(conv)
    assert both.duration_s == pytest.approx(code.duration_s + conv.duration_s + 10.0)
    second = both.arrival_s >= code.duration_s + 10.0
    assert second.sum() == len(conv)
    assert both.name == "code+conv"


def test_blend_with_rates() -> None:
    code, conv = _two_services()
    mixed = blend([code, conv], rates_rps=[1.0, 4.0], seed=3)
    span = min(code.duration_s, conv.duration_s)
    assert mixed.duration_s == span and mixed.rate_rps == pytest.approx(5.0, rel=0.05)
    np.testing.assert_array_equal(
        mixed.arrival_s, blend([code, conv], rates_rps=[1.0, 4.0], seed=3).arrival_s
    )
    with pytest.raises(ConfigError):
        blend([code, conv], weights=[1, 1], rates_rps=[1, 1])


def test_alternate_phases_take_from_each_source_in_turn() -> None:
    code, conv = _two_services()
    alt = alternate([code, conv], phase_s=100.0, duration_s=800.0)
    assert alt.duration_s == 800.0
    phase = (alt.arrival_s // 100.0).astype(int)
    for i in range(8):
        src = code if i % 2 == 0 else conv
        sl = window(src, i * 100.0, (i + 1) * 100.0)
        np.testing.assert_array_equal(alt.prompt_tokens[phase == i], sl.prompt_tokens)


def test_alternate_wraps_short_sources() -> None:
    short = make_trace(50, rate_rps=1.0, seed=4)
    alt = alternate([short], phase_s=short.duration_s / 2, duration_s=3 * short.duration_s)
    assert len(alt) >= 3 * (len(short) - 2)


def test_clip_lengths() -> None:
    t = Trace.from_arrays([0, 1, 2], [100, 5000, 3000], [10, 10, 2000])
    c = clip_lengths(t, max_model_len=4096)
    assert c.prompt_tokens.tolist() == [100, 4095, 3000] and c.output_tokens.tolist() == [10, 1, 1096]
    d = clip_lengths(t, max_model_len=4096, drop=True)
    assert d.prompt_tokens.tolist() == [100]
    assert clip_lengths(t, max_output_tokens=50).output_tokens.tolist() == [10, 10, 50]


def test_extras_follow_rows() -> None:
    t = make_trace(200, tag=np.arange(200))
    w = window(t, 5.0, 15.0)
    np.testing.assert_array_equal(w.extras["tag"], np.flatnonzero((t.arrival_s >= 5) & (t.arrival_s < 15)))
    s = scale_rate(t, 1.5, seed=1)
    np.testing.assert_array_equal(t.prompt_tokens[s.extras["tag"]], s.prompt_tokens)


def test_replicated_copies_of_a_request_do_not_arrive_as_one_burst() -> None:
    """Copies are jittered by up to 30 s: ten copies of one request spread over many seconds."""
    arrivals = np.array([100.0, 200.0, 300.0])
    t = Trace.from_arrays(arrivals, np.array([5000, 10, 10]), np.array([5, 5, 5]), duration_s=400.0)
    scaled = scale_rate(t, 10.0, seed=0)
    copies = scaled.arrival_s[scaled.prompt_tokens == 5000]
    assert len(copies) == 10
    assert copies.max() - copies.min() > 20.0


def test_scaled_copies_get_fresh_prefix_blocks(shared_traces) -> None:
    """Scaling Mooncake's trace up: every copy keeps the original's prefix sharing among its own requests but
    shares no block id with the original (no prefix cache hit a second population of users would not get)."""
    path = shared_traces / "mooncake_synthetic.jsonl"
    if not path.is_file():
        pytest.skip("mooncake trace not found")
    from oserve.trace import load_trace

    src = window(load_trace(path), 0.0, 120.0)
    out = scale_rate(src, 2.5, seed=0)
    ids = [tuple(int(b) for b in x) for x in out.extras["hash_ids"]]
    original = {tuple(int(b) for b in x) for x in src.extras["hash_ids"]}
    stride = 1 + max(max(r) for r in original if r)
    copy = np.array([min(r) // stride if r else 0 for r in ids])
    assert set(copy.tolist()) == {0, 1, 2}
    # every row's ids within one copy's band, and copy k is the original shifted by k bands
    for k in (0, 1, 2):
        rows = [r for r, c in zip(ids, copy, strict=True) if c == k]
        assert all(max(r) // stride == k for r in rows if r)
        assert {tuple(b - k * stride for b in r) for r in rows} <= original
    blocks = [b for r in ids for b in r]
    shared = 1 - len(set(blocks)) / len(blocks)
    source = [int(b) for x in src.extras["hash_ids"] for b in x]
    # prefix reuse no higher than the source's own (copies no longer hit the original's blocks)
    assert shared <= 1 - len(set(source)) / len(source) + 0.02
    assert len(out) > 2 * len(src) and out.prompt_tokens.sum() > 2 * src.prompt_tokens.sum()
