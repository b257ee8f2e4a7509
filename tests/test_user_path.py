"""The path a user takes, run as a user runs it: the installed ``afx`` executable in a fresh working directory.

1. ``afx fit`` on the quickstart recipe (shortened) -> ``afx process`` and ``afx evaluate`` on the checkpoint it
   wrote -> ``afx fit --ckpt_path`` resumes it. A checkpoint written by LightningCLI must load in the other commands.
2. A non-editable install into a fresh venv (from the lock, offline: uv's cache holds every wheel) lists the
   chains and finds the recipes from any directory, i.e. the package ships its recipes and chain registry.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIT = [
    "fit",
    "--config",
    str(ROOT / "recipes/quickstart.yaml"),
    "--config",
    str(ROOT / "tests/configs/quickstart_short.yaml"),
]


def _run(args: list, cwd: Path, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def _checkpoints(root: Path) -> dict:
    """Every checkpoint under ``root`` -> its global step (read weights-only, as the loaders do)."""
    return {p: int(torch.load(p, map_location="cpu", weights_only=True)["global_step"]) for p in root.rglob("*.ckpt")}


def _written_checkpoint(root: Path) -> Path:
    """``last.ckpt`` (what the README tells users to pass) when the run writes one, else its latest checkpoint."""
    found = _checkpoints(root)
    assert found, f"afx fit wrote no checkpoint under {root}"
    last = [p for p in found if p.name == "last.ckpt"]
    return last[0] if last else max(found, key=found.get)


def _stereo(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    env = 0.05 + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) ** 2
    return np.stack([env * np.sin(2 * np.pi * 220 * t), env * np.sin(2 * np.pi * 330 * t)], axis=1).astype(np.float32)


@pytest.mark.slow
def test_fit_then_process_evaluate_and_resume_through_the_cli(tmp_path):
    afx = str(BIN / "afx")
    # the timbre term, set from the command line; 8 steps in two 4-step epochs (two validations, as the 40-step
    # quickstart_short run has): nothing below depends on how far the model trained, only on what the run wrote
    fit = [*FIT, "--model.loss.mfcc_weight", "1", "--trainer.max_steps", "8", "--data.steps_per_epoch", "4"]
    _run([afx, *fit], tmp_path)
    ckpt = _written_checkpoint(tmp_path)
    step = _checkpoints(tmp_path)[ckpt]
    assert step > 0
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["afx_model"]["loss"]["mfcc_weight"] == 1.0

    # afx process: any rate and channel count in, the input's length, rate and channels out
    sr, x = 44100, _stereo(1.5, 44100)
    sf.write(tmp_path / "in.wav", x, sr, subtype="PCM_16")
    _run(
        [afx, "process", "--ckpt", str(ckpt), "in.wav", "out.wav", "--automation", "auto.csv", "--no-progress"],
        tmp_path,
    )
    info = sf.info(tmp_path / "out.wav")
    assert (info.samplerate, info.channels, info.frames) == (sr, 2, len(x))
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    assert np.isfinite(y).all() and np.abs(y).max() > 1e-3
    with open(tmp_path / "auto.csv") as f:
        header = next(csv.reader(f))
    assert header[0] == "time_s" and "threshold0" in header  # pb_mb_compressor's parameters, by name

    # many files in one call, the encoder in int8: each written under its own name, rate and channels kept
    sf.write(tmp_path / "mono.wav", x[:, 0], 22050)
    _run([afx, "process", "--ckpt", str(ckpt), "--output-dir", "batch", "--quantize", "in.wav", "mono.wav"], tmp_path)
    assert (sf.info(tmp_path / "batch/in.wav").channels, sf.info(tmp_path / "batch/mono.wav").channels) == (2, 1)
    assert sf.info(tmp_path / "batch/mono.wav").frames == len(x)

    # afx evaluate: model and identity scores per file and on average
    for side, signal in (("input", x[:, 0]), ("target", np.tanh(3 * x[:, 0]) / 3)):
        (tmp_path / "pairs/test" / side).mkdir(parents=True)
        sf.write(tmp_path / "pairs/test" / side / "a.wav", signal, sr)
    proc = _run(
        [afx, "evaluate", "--ckpt", str(ckpt), "--data", "pairs", "--split", "test", "--json", "scores.json"], tmp_path
    )
    assert "a.wav" in proc.stdout and "mean" in proc.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert [f["name"] for f in scores["files"]] == ["a.wav"]
    for which in ("model", "identity"):
        assert set(scores["mean"][which]) == {"d_mfcc", "mrstft", "loudness_diff_lu"}
        assert all(math.isfinite(v) for v in scores["mean"][which].values())

    # resume: the global step continues from the checkpoint's, it does not restart
    before = set(_checkpoints(tmp_path))
    logs_before = set(tmp_path.rglob("metrics.csv"))
    _run([afx, *fit, "--ckpt_path", str(ckpt), "--trainer.max_steps", str(step + 3)], tmp_path)
    after = _checkpoints(tmp_path)
    assert max(after.values()) == step + 3
    resumed = [p for p in after if p not in before or p.name == "last.ckpt"]
    assert resumed and max(after[p] for p in resumed) == step + 3
    new_logs = [p for p in tmp_path.rglob("metrics.csv") if p not in logs_before]
    assert new_logs, "the resumed run logged nothing (tests/configs/quickstart_short.yaml has a CSVLogger)"
    with open(new_logs[0]) as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows if r.get("step")]
    assert steps and min(steps) >= step, f"the resumed run logged from step {min(steps)}, not from {step}"
    assert any(r.get("train/loss_mfcc") for r in rows), "the timbre term was not logged"


@pytest.mark.slow
def test_a_non_editable_install_into_a_fresh_venv_lists_chains_and_finds_recipes(tmp_path):
    uv = shutil.which("uv", path=str(BIN)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (it comes from requirements.lock)")
    # a copy of the source tree, so the build writes its build/ and egg-info there and not into the checkout
    src = tmp_path / "src"
    skip = {
        ".venv",
        ".git",
        ".pytest_cache",
        ".ruff_cache",
        "__pycache__",
        "build",
        "dist",
        "runs",
        "wandb",
        "lightning_logs",
    }
    shutil.copytree(ROOT, src, ignore=lambda _, names: [n for n in names if n in skip or n.endswith(".egg-info")])
    # uv itself is installed by pip, not from uv's cache: the fresh venv does not need it
    lock, keep = [], True
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line[0].isspace():
            keep = not line.startswith("uv==")
        if keep:
            lock.append(line)
    (tmp_path / "lock.txt").write_text("\n".join(lock) + "\n")
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([uv, "venv", "--python", sys.executable, str(venv)], tmp_path, env=env)
    offline = ["--offline"]
    try:
        _run([uv, "pip", "sync", *offline, "--require-hashes", "--python", str(python), "lock.txt"], tmp_path, env=env)
    except AssertionError:  # a wheel missing from uv's cache: fetch it
        offline = []
        _run([uv, "pip", "sync", "--require-hashes", "--python", str(python), "lock.txt"], tmp_path, env=env)
    _run(
        [uv, "pip", "install", *offline, "--no-deps", "--no-build-isolation", "--python", str(python), str(src)],
        tmp_path,
        env=env,
    )
    shutil.rmtree(src)  # the installed package must not need its source tree

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    site = _run([str(python), "-c", "import afx_lightning, sys; print(afx_lightning.__file__)"], elsewhere, env=env)
    assert Path(site.stdout.strip()).is_relative_to(venv), site.stdout  # not the checkout (not editable)

    chains = _run([str(venv / "bin" / "afx"), "effects", "list"], elsewhere, env=env).stdout
    for name in ("pb_mb_compressor", "pb_mb_gate", "pb_mastering", "pb_graphic_eq", "pb_octave_eq"):
        assert any(line.split()[:1] == [name] and line.split()[-1] == "ok" for line in chains.splitlines()), chains

    show = "from afx_lightning import registry\nfor n in registry.recipe_names(): print(n, registry.recipe_path(n))"
    recipes = _run([str(python), "-c", show], elsewhere, env=env).stdout
    found = dict(line.split(" ", 1) for line in recipes.splitlines())
    assert {"quickstart", "breath", "amp", "mastering"} <= set(found), recipes
    assert all(Path(p).is_file() and Path(p).is_relative_to(venv) for p in found.values()), recipes
    listed = subprocess.run(
        [str(venv / "bin" / "afx"), "recipes", "list"],
        check=False,
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    if listed.returncode == 0:  # `afx recipes list`, where this version has it
        assert "quickstart" in listed.stdout
    config = _run(
        [str(venv / "bin" / "afx"), "fit", "--recipe", "quickstart", "--print_config"], elsewhere, env=env
    ).stdout
    assert "pb_mb_compressor" in config and "SmallEncoder" in config
