"""Run every benchmark (each in its own subprocess) and print one combined JSON object.

Usage::

    python benchmarks/run_all.py              # full run (several minutes on 2 cores); JSON on stdout
    python benchmarks/run_all.py --quick      # CI smoke run: passes --quick to every benchmark
    python benchmarks/run_all.py --markdown   # markdown table on stdout, the JSON into --json-out

What runs:

* ``fx_layer.py --chain pb_mb_compressor`` with the per-slot baseline (measured at ``--per-slot-batch`` M' and
  scaled to M), plus ``--workers-sweep 1,2`` and ``--fd-ratio`` (FD vs SPSA on pb_mastering, P=50, M=4);
* ``fx_layer.py --no-per-slot`` for ``calf_mb_compressor`` and ``lv2_mastering`` when ``afx effects list``
  reports them ``ok`` (skipped, with the reason, otherwise);
* ``train_step.py`` (Inception, M=100);
* ``inference.py`` (real-time factor of ``afx process`` with Inception; peak memory, 1 vs ``--long-minutes``).

Output: ``{machine, cpu_count, loadavg, results: {name: benchmark JSON | {"error": ...} | {"skipped": ...}},
wall_s: {name: seconds}}``. A failing benchmark does not stop the others; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _log(msg: str) -> None:
    print(f"[run_all] {msg}", file=sys.stderr, flush=True)


def _loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def effects_status() -> dict[str, str]:
    """{chain: status} from ``afx effects list`` (empty if the command cannot run)."""
    exe = Path(sys.executable).parent / "afx"
    cmd = [str(exe)] if exe.exists() else ([shutil.which("afx")] if shutil.which("afx") else None)
    if cmd is None:
        return {}
    try:
        run = subprocess.run(cmd + ["effects", "list"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    status = {}
    for line in run.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4:
            status[parts[0]] = " ".join(parts[3:])
    return status


def run_bench(name: str, argv: list[str], timeout: float) -> dict:
    cmd = [sys.executable] + argv
    _log(f"{name}: {' '.join(argv)} (load {_loadavg()})")
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or b""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        return {
            "error": f"timed out after {timeout:g} s",
            "stderr_tail": err[-1500:],
            "cmd": argv,
            "wall_s": time.perf_counter() - t0,
        }
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        _log(f"{name}: FAILED ({run.returncode}) in {wall:.0f} s")
        return {
            "error": f"exit status {run.returncode}",
            "stderr_tail": run.stderr[-1500:],
            "cmd": argv,
            "wall_s": wall,
        }
    try:
        result = json.loads(run.stdout)
    except json.JSONDecodeError as exc:
        return {"error": f"invalid JSON: {exc}", "stdout_tail": run.stdout[-1500:], "cmd": argv, "wall_s": wall}
    _log(f"{name}: done in {wall:.0f} s")
    result["_cmd"] = argv
    result["_wall_s"] = wall
    return result


def plan(args: argparse.Namespace, status: dict[str, str]) -> list[tuple]:
    q = ["--quick"] if args.quick else []
    fx = str(HERE / "fx_layer.py")
    steps = [] if args.quick else ["--steps", str(args.fx_steps)]
    jobs = [
        (
            "fx_layer:pb_mb_compressor",
            [fx, "--chain", "pb_mb_compressor", *steps, *q, "--workers-sweep", args.workers_sweep, "--fd-ratio"]
            + ([] if args.quick else ["--per-slot-batch", str(args.per_slot_batch)]),
        )
    ]
    for chain in ("calf_mb_compressor", "lv2_mastering"):
        if status.get(chain) == "ok":
            jobs.append((f"fx_layer:{chain}", [fx, "--chain", chain, "--no-per-slot", *steps, *q]))
        else:
            jobs.append((f"fx_layer:{chain}", None, f"afx effects list: {status.get(chain, 'not listed')}"))
    train = [str(HERE / "train_step.py"), *q]
    if not args.quick:
        train += ["--steps", str(args.train_steps)]
    jobs.append(("train_step", train))
    inf = [str(HERE / "inference.py"), *q]
    if not args.quick:
        inf += ["--long-minutes", str(args.long_minutes)]
    jobs.append(("inference", inf))
    return jobs


def _f(x, fmt=".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def markdown(combined: dict) -> str:
    res = combined["results"]
    rows = []

    def bad(r):
        return r is None or "error" in r or "skipped" in r

    for name, r in res.items():
        if bad(r):
            rows.append((name, "", r.get("skipped") or r.get("error", "missing") if r else "missing"))
            continue
        if name.startswith("fx_layer:"):
            setting = f"M={r['M']}, P={r['P']}, {r['workers']} workers"
            text = (
                f"fx step {_f(r['fx_step_s'])} s; plugins alone {_f(r['plugin_cpu_s'])} s CPU "
                f"(overhead {_f(r['overhead'], '.2f')}x)"
            )
            if r.get("per_slot_step_s"):
                text += (
                    f"; per-slot processes {_f(r['per_slot_step_s'])} s "
                    f"(M'={r['per_slot_M']}, scaled) -> speedup {_f(r['speedup_vs_per_slot_processes'], '.1f')}x"
                )
            rows.append((name, setting, text))
            if r.get("worker_scaling"):
                rows.append(
                    (
                        f"{name} worker scaling",
                        f"M={r['M']}",
                        "; ".join(f"{w['workers']} worker(s): {_f(w['fx_step_s'])} s" for w in r["worker_scaling"]),
                    )
                )
            if r.get("fd_vs_spsa"):
                f = r["fd_vs_spsa"]
                rows.append(
                    (
                        f"FD vs SPSA ({f['chain']})",
                        f"M={f['M']}, P={f['P']}",
                        f"FD {_f(f['fd_step_s'])} s / SPSA {_f(f['spsa_step_s'])} s = "
                        f"{_f(f['fd_vs_spsa_step_ratio'], '.1f')}x (theory (2P+1)/3 = {_f(f['fd_vs_spsa_theory'], '.1f')}x)",
                    )
                )
        elif name == "train_step":
            rows.append(
                (
                    name,
                    f"{r['encoder']}, M={r['M']}, context {r['context']}",
                    f"step {_f(r['step_s'], '.2f')} s = encoder {_f(r['encoder_s'], '.2f')} s + fx "
                    f"{_f(r['fx_s'], '.2f')} s + rest {_f(r['rest_s'], '.2f')} s; fx share "
                    f"{100 * r['fx_share']:.1f}% (goal <= 20%)",
                )
            )
        elif name == "inference":
            s = r["speed"]
            rows.append(
                (
                    f"{name} speed",
                    f"{r['encoder']}, {s['audio_s']:g} s file, CPU",
                    f"{_f(r['realtime_factor'], '.2f')}x real time (goal >= 10x): predict {_f(s['predict_s'], '.1f')} s, "
                    f"render {_f(s['render_s'], '.1f')} s",
                )
            )
            m = r.get("memory")
            if m:
                rows.append(
                    (
                        f"{name} peak memory",
                        f"{m['encoder']}, {m['short']['minutes']:.3g} vs {m['long']['minutes']:.3g} min",
                        f"process peak (ru_maxrss) {m['short']['peak_rss_mb']:.0f} vs {m['long']['peak_rss_mb']:.0f} MiB; "
                        f"peak while processing (VmHWM reset after load) "
                        f"{_f(m['short'].get('processing_peak_rss_mb'), '.0f')} vs "
                        f"{_f(m['long'].get('processing_peak_rss_mb'), '.0f')} MiB; "
                        f"grows with length: {'yes' if m['grows_with_length'] else 'no'}",
                    )
                )
    lines = [
        f"Machine: {combined['machine']}, {combined['cpu_count']} CPUs, load average at start "
        f"{combined['loadavg_start']}, at end {combined['loadavg_end']}",
        "",
        "| Benchmark | Setting | Result |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (CI smoke run)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table; the JSON goes to --json-out")
    ap.add_argument(
        "--json-out", default=None, help="also write the JSON here (default with --markdown: benchmarks/results.json)"
    )
    ap.add_argument("--only", default=None, help="comma-separated subset of the result names (debugging)")
    ap.add_argument("--fx-steps", type=int, default=10, help="fx_layer --steps (default: %(default)s)")
    ap.add_argument(
        "--per-slot-batch",
        type=int,
        default=20,
        help="fx_layer --per-slot-batch: per-slot baseline with 3*M' processes (default: %(default)s)",
    )
    ap.add_argument("--workers-sweep", default="1,2", help="fx_layer --workers-sweep (default: %(default)s)")
    ap.add_argument("--train-steps", type=int, default=2, help="train_step --steps (default: %(default)s)")
    ap.add_argument("--long-minutes", type=float, default=10.0, help="inference --long-minutes (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per benchmark, seconds (default: %(default)s)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    load_start = _loadavg()
    status = effects_status()
    jobs = plan(args, status)
    only = set(args.only.split(",")) if args.only else None
    results: dict[str, dict] = {}
    for job in jobs:
        name, cmd = job[0], job[1]
        if only is not None and name not in only:
            continue
        if cmd is None:
            _log(f"{name}: skipped ({job[2]})")
            results[name] = {"skipped": job[2]}
            continue
        results[name] = run_bench(name, cmd, args.timeout)
    combined = {
        "machine": platform.platform(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "quick": args.quick,
        "effects_status": status,
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "total_s": time.perf_counter() - t0,
        "results": results,
    }
    text = json.dumps(combined, indent=2)
    json_out = args.json_out or (str(HERE / "results.json") if args.markdown else None)
    if json_out:
        Path(json_out).write_text(text + "\n")
        _log(f"JSON written to {json_out}")
    print(markdown(combined) if args.markdown else text)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
