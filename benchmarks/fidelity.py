"""Real-audio fidelity benchmark (issue 11): does training drive the plugins where the target is, on real audio?

Why: the quickstart's known-answer task cannot show whether a model learns anything beyond level on real
recordings rendered by processors the chains do not contain. Per task this trains with the task's *shipped*
recipe through the real CLI, scores the best checkpoint on the test split with ``afx evaluate``, and puts it
between two bounds: the identity (the input as output) and the chain's static oracle (``afx match``: the best
single setting of the same chain per test file, found by CMA-ES).

The paired sets come from :mod:`fidelity_data` (real recordings from Debian packages through ZamTube, an
event edit, and Calf's EQ + multiband limiter), built once into ``~/.cache/afx-lightning/fidelity`` (or
``--data-dir``); it names the packages to install::

    sudo apt-get install freepats pocketsphinx-testdata asc-music zam-plugins calf-plugins liblilv-0-0

Per task ``T`` in amp, breath, mastering::

    afx fit --config recipes/T.yaml --data.dataset folder --data.root <set> \\
        --model.encoder afx_lightning.encoders.SmallEncoder --model.encoder.centre true --model.lr 0.002 \\
        --data.batch_size 16 --data.steps_per_epoch 100 --trainer.max_time <budget> --trainer.max_epochs -1 ...
    afx evaluate --ckpt <best val/loss checkpoint> --data <set> --split test --json ...
    afx match --chain <the recipe's chain> <test input> <test target> --json ...      (each test file)

The training settings are the quickstart's CPU settings (SmallEncoder, batch 16, lr 2e-3; Inception at batch 100
takes 13 s a step on 2 cores), the encoder with its centre features on (``centre=True``: a per-frame decision such
as gating a breath needs to know what is in the frame, not only somewhere in the 1.9 s context), with a
validation every 100 steps; everything else is the recipe's, so a recipe
change shows up here. The budget is wall-clock (``--trainer.max_time``: start-up and validation included).

Usage::

    python benchmarks/fidelity.py                       # all tasks, 300 s of training each (~30 min on 2 cores)
    python benchmarks/fidelity.py --tasks amp --budget-s 120
    python benchmarks/fidelity.py --quick               # smoke run: tiny sets, a few steps, 1 oracle file
    python benchmarks/fidelity.py --tasks breath --encoder tcn --fit-args="--model.encoder.centre true"
    python benchmarks/fidelity.py --oracle-json earlier.json   # train and score again, reuse the static oracle

Output: one JSON object on stdout, ``{"benchmark": "fidelity", "settings": ..., "tasks": {task: result}}``,
each result holding ``scores[metric] = {model, identity, oracle}`` (test-split means, metrics as
``afx evaluate``: d_mfcc, mrstft, loudness_diff_lu), ``train`` (wall time, steps, best checkpoint), ``data``
and ``oracle`` details; a failed task holds ``error``. A one-line summary goes to stderr. Exit status 1 if any
task failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import fidelity_data  # noqa: E402 (a sibling module, importable once HERE is on sys.path)

METRICS = ("d_mfcc", "mrstft", "loudness_diff_lu")
ENCODERS = {  # --encoder NAME -> the afx fit options that select it
    "small": ["--model.encoder", "afx_lightning.encoders.SmallEncoder", "--model.encoder.centre", "true"],
    "tcn": ["--model.encoder", "afx_lightning.encoders.TemporalConvEncoder"],
    "inception": ["--model.encoder", "afx_lightning.encoders.InceptionEncoder"],  # the recipes' own (slow on CPU)
}


def log(msg: str) -> None:
    print(f"[fidelity] {msg}", file=sys.stderr, flush=True)


def afx_command() -> list[str]:
    """The installed ``afx`` next to this interpreter (the user's entry point), else ``python -m``."""
    exe = Path(sys.executable).parent / "afx"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from afx_lightning.cli import main; sys.exit(main())"]


def run(cmd: list[str], cwd: Path, timeout: float, log_file: Path) -> float:
    """Run ``cmd`` with its output in ``log_file``; its wall time. Raises with the log's tail on failure."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with log_file.open("w") as out:
        try:
            proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(cmd[:4])} ... (log {log_file})") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(
            f"exit status {proc.returncode}: {' '.join(cmd[:4])} ...; log {log_file}:\n" + "\n".join(tail)
        )
    return wall


def recipe_chain(recipe: Path, folder: Path) -> tuple[str, str]:
    """The recipe's chain as (a label, what ``afx match --chain`` takes): a registered name or file as it is, a
    chain declared inline in the recipe written to ``folder/chain.yaml`` (labelled by its declared name)."""
    import yaml

    chain = yaml.safe_load(recipe.read_text())["model"]["fx"]["chain"]
    if isinstance(chain, dict):
        path = folder / "chain.yaml"
        path.write_text(yaml.safe_dump(chain, sort_keys=False))
        return str(chain.get("name", "declared chain")), str(path)
    return str(chain), str(chain)


def max_time(seconds: float) -> str:
    s = int(round(seconds))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def checkpoints(run_dir: Path) -> tuple:
    """(best val/loss checkpoint, last.ckpt) under a run folder; the best falls back to the last."""
    found = sorted(run_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    last = [p for p in found if p.name.startswith("last")]
    best = [p for p in found if not p.name.startswith("last")]
    if not found:
        raise RuntimeError(f"training wrote no checkpoint under {run_dir}")
    last_ckpt = last[-1] if last else found[-1]
    return (best[-1] if best else last_ckpt), last_ckpt


def checkpoint_progress(path: Path) -> dict[str, int]:
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {"epoch": int(state.get("epoch", -1)), "global_step": int(state.get("global_step", -1))}


def oracle(chain: str, pairs: list[tuple], work: Path, budget: int, max_seconds: float, timeout: float) -> dict:
    """``afx match`` on each test pair: the chain's best static setting per file (CMA-ES, its default objective)."""
    scores: dict[str, list[float]] = {m: [] for m in METRICS}
    files, wall, objective = [], 0.0, None
    for inp, tgt in pairs:
        out = work / f"match_{inp.stem}.json"
        cmd = afx_command() + [
            "match",
            "--chain",
            chain,
            str(inp),
            str(tgt),
            "--json",
            str(out),
            "--overwrite",
            "--budget",
            str(budget),
            "--max-seconds",
            str(max_seconds),
        ]
        wall += run(cmd, ROOT, timeout, work / f"match_{inp.stem}.log")
        result = json.loads(out.read_text())
        match, objective = result["scores"]["match"], result.get("objective")
        for m in METRICS:
            scores[m].append(float("nan") if match.get(m) is None else float(match[m]))
        files.append(
            {
                "file": inp.name,
                "match": match,
                "identity": result["scores"]["identity"],
                "evaluations": result.get("evaluations"),
                "search_s": result.get("search_s"),
            }
        )
    return {
        "mean": {m: float(np.nanmean(v)) for m, v in scores.items()},
        "files": files,
        "budget": budget,
        "max_seconds": max_seconds,
        "wall_s": round(wall, 1),
        "objective": objective,
    }


def reused_oracle(path: Path, task: str, chain: str, manifest: dict, pairs: list[tuple]) -> dict | None:
    """The oracle of an earlier run's JSON when it searched the same chain on the same test files of the same
    data version (it does not depend on training, and takes most of the benchmark's time); else None."""
    earlier = json.loads(path.read_text()).get("tasks", {}).get(task, {})
    orc = earlier.get("oracle")
    same_data = (
        earlier.get("data", {}).get("counts") == manifest["counts"]
        and earlier.get("data", {}).get("processor") == manifest["processor"]
    )
    files = [f["file"] for f in (orc or {}).get("files", [])]
    if not orc or earlier.get("chain") != chain or not same_data or files != [p.name for p, _ in pairs]:
        log(f"{task}: {path} holds no oracle for this chain and test set: searching again")
        return None
    log(f"{task}: oracle reused from {path} (afx match --chain {chain}, {len(files)} test file(s))")
    return {**orc, "reused_from": str(path)}


def fit_command(recipe: Path, data: Path, task_work: Path, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The ``afx fit`` command of one task: the recipe at the benchmark's CPU settings, then ``--fit-args``."""
    fit = afx_command() + [
        "fit",
        "--config",
        str(recipe),
        "--data.dataset",
        "folder",
        "--data.root",
        str(data),
        "--data.cache_dir",
        str(task_work / "cache"),
        *ENCODERS[args.encoder],
        "--model.lr",
        str(args.lr),
        "--data.batch_size",
        str(args.batch_size),
        "--data.steps_per_epoch",
        str(args.steps_per_epoch),
        "--trainer.max_epochs",
        "-1",
        "--trainer.max_time",
        max_time(args.budget_s),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.logger.save_dir",
        str(run_dir),
        "--seed_everything",
        str(args.seed),
    ]
    if args.max_steps:
        fit += ["--trainer.max_steps", str(args.max_steps)]
    if args.val_batch_size:
        fit += ["--data.val_batch_size", str(args.val_batch_size)]
    fit += shlex.split(args.fit_args)
    return fit


def run_task(task: str, args: argparse.Namespace, work: Path) -> dict:
    data = fidelity_data.ensure(task, args.data_dir, quick=args.quick)
    manifest = json.loads((data / "manifest.json").read_text())
    recipe = ROOT / "recipes" / f"{task}.yaml"
    task_work = work / task
    if task_work.exists():
        shutil.rmtree(task_work)
    task_work.mkdir(parents=True)
    chain, chain_arg = recipe_chain(recipe, task_work)
    run_dir = task_work / "run"

    fit = fit_command(recipe, data, task_work, run_dir, args)
    log(f"{task}: training {chain} ({recipe.name}) for {args.budget_s:.0f} s on {data}")
    train_wall = run(fit, task_work, args.budget_s + args.startup_timeout_s, task_work / "fit.log")
    best, last = checkpoints(run_dir)
    progress = checkpoint_progress(last)
    best_progress = checkpoint_progress(best)

    eval_json = task_work / "evaluate.json"
    log(f"{task}: evaluating {best.name} on the test split")
    eval_wall = run(
        afx_command()
        + ["evaluate", "--ckpt", str(best), "--data", str(data), "--split", "test", "--json", str(eval_json)],
        task_work,
        args.startup_timeout_s + 600,
        task_work / "evaluate.log",
    )
    evaluation = json.loads(eval_json.read_text())

    pairs = [(p, data / "test" / "target" / p.name) for p in sorted((data / "test" / "input").glob("*.wav"))]
    if args.oracle_files:
        pairs = pairs[: args.oracle_files]
    orc = reused_oracle(args.oracle_json, task, chain, manifest, pairs) if args.oracle_json else None
    if orc is None:
        log(f"{task}: oracle (afx match --chain {chain}) on {len(pairs)} test file(s)")
        orc = oracle(
            chain_arg,
            pairs,
            task_work,
            args.oracle_budget,
            args.oracle_max_seconds,
            args.startup_timeout_s + args.oracle_max_seconds * 3,
        )

    model, identity = evaluation["mean"]["model"], evaluation["mean"]["identity"]
    scores = {m: {"model": model[m], "identity": identity[m], "oracle": orc["mean"][m]} for m in METRICS}
    vs_identity = {m: round(model[m] / identity[m] - 1.0, 4) if identity[m] else None for m in METRICS}
    return {
        "task": task,
        "recipe": f"recipes/{task}.yaml",
        "chain": chain,
        "scores": scores,
        "model_vs_identity": vs_identity,
        "train": {
            "budget_s": args.budget_s,
            "wall_s": round(train_wall, 1),
            "steps": progress["global_step"],
            "epochs": progress["epoch"] + 1,
            "best_checkpoint": best.name,
            "best_step": best_progress["global_step"],
            "batch_size": args.batch_size,
            "lr": args.lr,
            "encoder": " ".join(ENCODERS[args.encoder]),
            "steps_per_epoch": args.steps_per_epoch,
        },
        "evaluate_s": round(eval_wall, 1),
        "test_files": len(evaluation["files"]),
        "oracle": orc,
        "data": {
            "path": str(data),
            "counts": manifest["counts"],
            "seconds": manifest["seconds"],
            "source": manifest["source"],
            "processor": manifest["processor"],
        },
        "work_dir": str(task_work),
    }


def finite(value):
    """JSON has no NaN/Infinity (ΔLU of a file under 0.4 s is NaN): write null."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def summary(results: dict[str, dict]) -> str:
    parts = []
    for task, r in results.items():
        if "error" in r:
            parts.append(f"{task}: ERROR")
            continue
        s = r["scores"]
        parts.append(
            f"{task}: d_MFCC {s['d_mfcc']['model']:.4f} (id {s['d_mfcc']['identity']:.4f}, oracle {s['d_mfcc']['oracle']:.4f})"
            f" MR-STFT {s['mrstft']['model']:.3f} (id {s['mrstft']['identity']:.3f}, oracle {s['mrstft']['oracle']:.3f})"
            f" dLU {s['loudness_diff_lu']['model']:.2f} (id {s['loudness_diff_lu']['identity']:.2f})"
            f" [{r['train']['steps']} steps in {r['train']['wall_s']:.0f} s]"
        )
    return "fidelity: " + "; ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", choices=fidelity_data.TASKS, default=list(fidelity_data.TASKS))
    p.add_argument("--budget-s", type=float, default=300.0, help="training wall-clock budget per task (default 300)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sets, a few steps, one oracle file")
    p.add_argument("--data-dir", type=Path, default=fidelity_data.DEFAULT_ROOT, help="where the sets are built/cached")
    p.add_argument("--work-dir", type=Path, help="runs, logs and scores (default: a temporary folder, removed)")
    p.add_argument(
        "--encoder",
        choices=sorted(ENCODERS),
        default="small",
        help="small: the SmallEncoder with its centre features (default); tcn: the streaming TemporalConvEncoder; "
        "inception: the recipes' own encoder (about 10x slower a step on a CPU)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--steps-per-epoch", type=int, default=100, help="training steps between validations")
    p.add_argument("--val-batch-size", type=int, help="override the recipe's val_batch_size")
    p.add_argument("--max-steps", type=int, help="also stop after this many steps")
    p.add_argument(
        "--fit-args",
        default="",
        help="more afx fit options, appended after the benchmark's own (e.g. '--model.loss.mfcc_weight 4'): "
        "an experiment on top of the shipped recipe, recorded in the JSON's settings",
    )
    p.add_argument("--oracle-budget", type=int, default=600, help="afx match evaluations per test file")
    p.add_argument("--oracle-max-seconds", type=float, default=90.0, help="afx match search time per test file")
    p.add_argument("--oracle-files", type=int, help="match only the first N test files (default all)")
    p.add_argument(
        "--oracle-json",
        type=Path,
        help="reuse the oracle of an earlier run's JSON where chain and test "
        "files are the same (the oracle does not depend on training)",
    )
    p.add_argument("--startup-timeout-s", type=float, default=300.0, help="slack over each subprocess' own work")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.budget_s = min(args.budget_s, 45.0)
        args.batch_size, args.steps_per_epoch, args.val_batch_size = 4, 4, 4
        args.max_steps = args.max_steps or 8
        args.oracle_budget, args.oracle_max_seconds, args.oracle_files = 12, 10.0, 1
    args.data_dir = args.data_dir.expanduser()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir.expanduser() if args.work_dir else Path(tempfile.mkdtemp(prefix="afx-fidelity-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    for task in args.tasks:
        t_task = time.perf_counter()
        try:
            results[task] = run_task(task, args, work)
        except Exception as exc:  # one task's failure does not hide the others' results
            results[task] = {"task": task, "error": f"{type(exc).__name__}: {exc}"}
            log(f"{task}: FAILED: {exc}")
        results[task]["task_wall_s"] = round(time.perf_counter() - t_task, 1)
    out = {
        "benchmark": "fidelity",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tasks": results,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(finite(out), indent=2, default=str))
    print(summary(results), file=sys.stderr)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
