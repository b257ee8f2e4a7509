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
