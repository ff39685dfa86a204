"""Fleet workloads: the CSV loader (grain, lengths, errors with file:line) and the built-in scenario."""

from __future__ import annotations

import numpy as np
import pytest
from fleet_factories import write_fleet, write_workload

from oserve.errors import TraceError
from oserve.fleet import builtin_fleet, builtin_workload, load_fleet, load_workload_csv
from oserve.trace import load_trace


def test_hour_grain_csv_spreads_each_hour_over_its_minutes(tmp_path) -> None:
    fleet = load_fleet(write_fleet(tmp_path / "f.yaml"))
    w = load_workload_csv(write_workload(tmp_path / "w.csv", hours=48), fleet)
    assert w.requests.shape == (2, 1, 2, 48 * 60)
    assert w.eval_start_min == 24 * 60  # half the span is history
    hour0 = w.requests[0, 0, 0, :60]
    assert np.allclose(hour0, hour0[0]) and hour0.sum() == pytest.approx(40 * 0.5 * 3600, rel=1e-3)
    assert w.lengths[(0, "iw")][0].tolist() == [1100] and w.lengths[(0, "niw")][1].tolist() == [200]
    assert np.allclose(w.hourly_rps()[0, 0, 0, 0], 20.0, rtol=1e-3)


def test_minute_grain_and_iso_times(tmp_path) -> None:
    fleet = load_fleet(write_fleet(tmp_path / "f.yaml"))
    path = tmp_path / "w.csv"
    lines = ["time,region,model,tier,requests,mean_prompt_tokens,mean_output_tokens"]
    for k in range(180):
        t = f"2024-05-06T{k // 60:02d}:{k % 60:02d}:00Z"
        lines.append(f"{t},east,meta-llama/Meta-Llama-3-8B,IW,{k},500,100")
    path.write_text("\n".join(lines) + "\n")
    w = load_workload_csv(path, fleet, history_hours=1)
    assert w.requests.shape[-1] == 180 and w.requests[0, 0, 0, 7] == 7
    assert w.start_weekday == 0  # a Monday
    assert w.requests[1].sum() == 0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("0,mars,llama-3-8b,iw,10,100,10", ":2: unknown region 'mars'"),
        ("0,east,gpt-17,iw,10,100,10", ":2: unknown model 'gpt-17'"),
        ("0,east,llama-3-8b,batch,10,100,10", ":2: unknown tier 'batch'"),
        ("0,east,llama-3-8b,iw,-1,100,10", ":2: requests must be a number >= 0"),
        ("yesterday,east,llama-3-8b,iw,1,100,10", ":2: time 'yesterday'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message) -> None:
    fleet = load_fleet(write_fleet(tmp_path / "f.yaml"))
    path = tmp_path / "w.csv"
    path.write_text("time,region,model,tier,requests,mean_prompt_tokens,mean_output_tokens\n" + row + "\n")
    with pytest.raises(TraceError, match=message):
        load_workload_csv(path, fleet)


def test_missing_column(tmp_path) -> None:
    fleet = load_fleet(write_fleet(tmp_path / "f.yaml"))
    path = tmp_path / "w.csv"
    path.write_text("time,region,model,requests\n0,east,llama-3-8b,3\n")
    with pytest.raises(TraceError, match=r"w.csv:1: missing column\(s\) \['tier'"):
        load_workload_csv(path, fleet)


def test_builtin_scenario_real_lengths_and_shaped_days(shared_traces) -> None:
    fleet = builtin_fleet()
    w = builtin_workload(fleet, days=2, history_days=1)
    assert w.requests.shape == (3, 4, 2, 3 * 1440)
    conv = load_trace(shared_traces / "azure_conv_2023.csv")
    code = load_trace(shared_traces / "azure_code_2023.csv")
    assert np.array_equal(w.lengths[(0, "iw")][0], conv.prompt_tokens)  # llama-3-8b serves the conv service
    assert np.array_equal(w.lengths[(1, "niw")][1], code.output_tokens)  # codellama-34b the code service
    hourly = w.hourly_rps()[0, 0, 0, 29:53]  # us-east (UTC-5), llama-3-8b, IW: Tuesday 00:00-24:00 local
    assert int(np.argmax(hourly)) in range(12, 17) and int(np.argmin(hourly)) in range(0, 5)
    assert hourly.min() / hourly.max() == pytest.approx(0.3, abs=0.08)
    niw = w.hourly_rps()[:, :, 1].sum() / w.hourly_rps()[:, :, 0].sum()
    assert niw == pytest.approx(0.35, rel=0.02)
    f = w.peak_factor()
    assert f.shape == (3, 4) and np.all(f >= 1.0) and np.all(f[:, 1] > f[:, 0])  # code bursts more than conv
