"""The benchmarks keep running (smoke test: valid JSON with the reported fields; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fx_layer_benchmark_prints_json():
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fx_layer.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    for key in ("fx_step_s", "plugin_cpu_s", "overhead", "per_slot_step_s", "speedup_vs_per_slot_processes"):
        assert result[key] > 0, key
    assert not any(result["details"]["fx_fault_stats"].values())  # a benchmark with faults measures nothing


@pytest.mark.slow
def test_run_all_quick_prints_combined_json(tmp_path):
    """``run_all.py --quick``: every benchmark runs in its own subprocess; one JSON object with all their fields."""
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--markdown", "--json-out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| Benchmark | Setting | Result |" in run.stdout
    combined = json.loads(out.read_text())
    for key in ("machine", "cpu_count", "results"):
        assert key in combined, key
    results = combined["results"]
    assert not [name for name, r in results.items() if "error" in r], results
    fx = results["fx_layer:pb_mb_compressor"]
    assert fx["fx_step_s"] > 0 and fx["per_slot_step_s"] > 0
    assert [w["workers"] for w in fx["worker_scaling"]] == [1, 2]
    assert all(w["fx_step_s"] > 0 for w in fx["worker_scaling"])
    assert fx["fd_vs_spsa_step_ratio"] > 0
    assert fx["fd_vs_spsa_theory"] == pytest.approx((2 * 50 + 1) / 3)
    for chain in ("calf_mb_compressor", "lv2_mastering"):  # measured when the LV2 plugins are installed
        r = results[f"fx_layer:{chain}"]
        assert "skipped" in r or (r["fx_step_s"] > 0 and r["per_slot_step_s"] is None), chain
    assert results["train_step"]["step_s"] > 0
    inference = results["inference"]
    assert inference["encoder"] == "small"
    assert inference["realtime_factor"] > 0
    speed = inference["speed"]
    assert speed["predict_s"] > 0 and speed["render_s"] > 0 and speed["dropped_frames"] == 0
    memory = inference["memory"]
    assert memory["short"]["peak_rss_mb"] > 0 and memory["long"]["peak_rss_mb"] > 0
    assert memory["long"]["seconds"] == pytest.approx(3 * memory["short"]["seconds"])
    assert isinstance(memory["grows_with_length"], bool)


def test_fx_layer_default_json_unchanged_without_new_flags():
    """The sweep/FD extras only appear when asked for (argument parsing only; nothing is run)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fx_layer
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    args = fx_layer.parse_args([])
    assert args.workers_sweep is None and not args.fd_ratio
    args = fx_layer.parse_args(["--workers-sweep", "1,2", "--fd-ratio"])
    assert args.workers_sweep == [1, 2] and args.fd_ratio and args.fd_chain == "pb_mastering" and args.fd_batch == 4
