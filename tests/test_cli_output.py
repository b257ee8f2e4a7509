"""What a person sees: `afx --help`, `afx recipes`, silent VST3 teardown, data errors before run folders, each
callback once, and the summary that closes `fit`.

Subprocess tests run the installed `afx` next to ``sys.executable`` in ``tmp_path`` (W&B offline), as a user would.
"""

from __future__ import annotations

import csv
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from test_training import TINY_RUN, cli_env  # one definition of the tiny run and the subprocess environment

from afx_lightning import registry
from afx_lightning.cli import main
from afx_lightning.effects.base import PluginUnavailable

ROOT = Path(__file__).resolve().parents[1]
AFX = Path(sys.executable).parent / "afx"
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
BREATH = ROOT / "recipes" / "breath.yaml"
SHORT = ROOT / "tests" / "configs" / "quickstart_short.yaml"
ZAM = Path("/usr/lib/vst3/ZaMultiCompX2.vst3")
needs_zam = pytest.mark.skipif(not ZAM.exists(), reason="needs zam-plugins (sudo apt-get install zam-plugins)")


def env_for(cwd: Path) -> dict:
    """test_training's CLI environment, without forcing W&B silent: these tests check what W&B prints."""
    env = cli_env(cwd)
    if "WANDB_SILENT" not in os.environ:
        env.pop("WANDB_SILENT")
    return env


def afx(*args, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    assert AFX.exists(), f"console script afx is not installed next to {sys.executable}"
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(AFX), *map(str, args)], cwd=cwd, env=env_for(cwd), capture_output=True, text=True, timeout=timeout
    )


def rows(out: str) -> dict[str, list[str]]:
    """A table printed by the CLI, keyed by its first column (the header skipped)."""
    return {line.split()[0]: re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[1:] if line.strip()}


# ------------------------------------------------------------------------------------------------ help


COMMANDS = [
    "fit",
    "validate",
    "test",
    "predict",
    "effects list",
    "effects show",
    "effects inspect",
    "recipes list",
    "recipes show",
    "process",
    "evaluate",
    "match",
]


@pytest.mark.parametrize("args", [["--help"], ["-h"], []], ids=["--help", "-h", "no args"])
def test_help_lists_every_command_with_one_line(tmp_path, args):
    result = afx(*args, cwd=tmp_path, timeout=60)
    assert result.returncode == (2 if not args else 0), result.stderr
    listed = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    for command in COMMANDS:
        hits = [line for line in listed if line.startswith(command + " ") or line.startswith(command + "  ")]
        assert len(hits) == 1, f"{command!r} not listed once in:\n{result.stdout}"
        assert len(hits[0].split(None, len(command.split()))[-1]) > 10, f"no description for {command!r}"
    assert "Traceback" not in result.stderr


def test_an_unknown_command_is_one_line(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'frobnicate'" in err[0] and "recipes" in err[0]


# ------------------------------------------------------------------------------------------------ recipes


def test_recipes_list_shows_chain_p_and_data(capsys):
    assert main(["recipes", "list"]) == 0
    table = rows(capsys.readouterr().out)
    assert set(registry.recipe_names()) <= set(table)
    assert table["quickstart"][1:] == ["pb_mb_compressor", "21", "demo (generated)"]
    breath = yaml.safe_load(BREATH.read_text())
    chain = breath["model"]["fx"]["chain"]  # declared in the recipe: listed by its declared name
    assert table["breath"][1:3] == [chain["name"] if isinstance(chain, dict) else chain, "2"]
    data = breath["data"]
    if data.get("root"):  # the recipe names where its data lives
        assert table["breath"][3].startswith(f"{data['dataset']} at {data['root']}"), table["breath"]
    else:
        assert table["breath"][3] == f"{data['dataset']}: set --data.root", table["breath"]


def test_recipes_list_marks_a_chain_whose_plugins_are_missing(capsys, monkeypatch):
    real = registry.build_chain

    def build(name, **kwargs):
        if name == "pb_mastering":
            raise PluginUnavailable("not installed")
        return real(name, **kwargs)

    monkeypatch.setattr(registry, "build_chain", build)
    assert main(["recipes", "list"]) == 0
    table = rows(capsys.readouterr().out)
    assert table["mastering"][1:3] == ["pb_mastering", "-"]
    assert table["quickstart"][2] == "21"


def test_recipes_show_prints_path_and_yaml(capsys):
    assert main(["recipes", "show", "quickstart"]) == 0
    out = capsys.readouterr().out
    first, rest = out.split("\n", 1)
    assert Path(first.removeprefix("# ")).resolve() == QUICKSTART.resolve()
    assert rest == QUICKSTART.read_text()
    assert main(["recipes", "show", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("afx recipes: unknown recipe 'nope'")


def test_the_registry_defaults_are_the_classes_defaults():
    from afx_lightning.blackbox import FxConfig
    from afx_lightning.data import AudioFxDataModule
    from afx_lightning.module import DeepAFx

    assert FxConfig().chain == registry.DEFAULT_CHAIN
    assert inspect.signature(DeepAFx).parameters["fx"].default.chain == registry.DEFAULT_CHAIN
    assert inspect.signature(AudioFxDataModule).parameters["dataset"].default == registry.DEFAULT_DATASET


# ------------------------------------------------------------------------------------------------ VST3 teardown


@needs_zam
@pytest.mark.parametrize("args", [["effects", "list"], ["effects", "show", "zam_mastering"], ["recipes", "list"]])
def test_vst3_chains_are_listed_without_dpf_teardown_lines(tmp_path, args):
    result = afx(*args, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "zam" in result.stdout
    assert "DPF" not in result.stderr, result.stderr[:2000]


SCRIPT = """
import gc, sys
import torch  # a heap like a training process's
from afx_lightning import registry
for name in ("zam_compressor", "zam_mastering", "zam_compressor"):
    chain = registry.build_chain(name, sample_rate=22050, block_size=1024)
    chain.reset()
    chain.close()
    gc.collect()  # nothing of a closed chain is left for a later collection to destroy
    print(f"after {name}", file=sys.stderr, flush=True)
chain = registry.build_chain("zam_mastering", sample_rate=22050, block_size=1024)  # left for the exit
print("end", file=sys.stderr, flush=True)
"""


@needs_zam
def test_building_resetting_and_closing_vst3_chains_prints_nothing_but_our_own_lines(tmp_path):
    """Plugins are destroyed on close, at collections and at exit: no teardown line, and stderr works between."""
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["after zam_compressor", "after zam_mastering", "after zam_compressor", "end"]


def test_a_plugin_load_that_fails_keeps_its_own_messages(capfd):
    from afx_lightning.effects.pedalboard_backend import plugin_teardown_silenced

    with pytest.raises(RuntimeError):
        with plugin_teardown_silenced():
            os.write(2, b"native diagnostics\n")
            raise RuntimeError("load failed")
    with plugin_teardown_silenced():
        os.write(2, b"teardown chatter\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "native diagnostics\nafter\n"


# ------------------------------------------------------------------------------------------------ data first


def write_bad_folder(root: Path) -> Path:
    for split in ("train", "val"):
        for side in ("input", "target"):
            (root / split / side).mkdir(parents=True)
            (root / split / side / "take1.wav").write_bytes(b"not audio at all" * 64)
    return root


@pytest.mark.parametrize("case", ["missing root", "bad file"])
def test_a_data_error_is_one_line_and_leaves_no_run_folder(tmp_path, case):
    root = Path("/nonexistent/afx-data") if case == "missing root" else write_bad_folder(tmp_path / "pairs")
    cwd = tmp_path / "cwd"
    result = afx("fit", "--config", QUICKSTART, *TINY_RUN, "--data.dataset", "folder", "--data.root", root, cwd=cwd)
    assert result.returncode != 0, "the bad data was accepted"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("afx: error: "), result.stderr[-3000:]
    assert (str(root) if case == "missing root" else "take1.wav") in errors[0], errors[0]
    left = sorted(p.name for p in cwd.iterdir() if not p.name.startswith(".wandb-"))
    assert left == [], f"a failed run left {left} in {cwd}"


# ------------------------------------------------------------------------------------------------ callbacks


def callbacks_of(*args: str) -> dict:
    from afx_lightning.lightning_cli import make_cli

    cli = make_cli(list(args), run=False)
    found: dict = {}
    for cb in cli.trainer.callbacks:
        found.setdefault(type(cb).__name__, []).append(cb)
    return found


def test_a_recipes_own_callbacks_win_and_each_appears_once():
    """recipes/breath.yaml lists LearningRateMonitor, MediaLogger(every_n_epochs=5), ModelCheckpoint, EarlyStopping."""
    found = callbacks_of(
        "--config",
        str(BREATH),
        "--data.dataset",
        "demo",
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        "x",
    )
    counts = {name: len(cbs) for name, cbs in found.items()}
    for name in (
        "LearningRateMonitor",
        "MediaLogger",
        "ModelCheckpoint",
        "LatestCheckpoint",
        "EarlyStopping",
        "FitSummary",
    ):
        assert counts.get(name) == 1, counts
    assert found["MediaLogger"][0].every_n_epochs == 5
    assert found["EarlyStopping"][0].patience == 25


def test_a_recipe_without_checkpointing_gets_last_ckpt_and_the_defaults():
    found = callbacks_of(
        "--config",
        str(QUICKSTART),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        "x",
    )
    (ckpt,) = found["ModelCheckpoint"]
    assert ckpt.save_last and ckpt.monitor == "val/loss" and ckpt.mode == "min"
    assert [len(found[n]) for n in ("LearningRateMonitor", "MediaLogger", "FitSummary", "LatestCheckpoint")] == [1] * 4
    assert found["MediaLogger"][0].every_n_epochs == 1


def test_defaults_respect_a_run_without_logger_or_checkpointing():
    found = callbacks_of(
        "--config", str(QUICKSTART), "--trainer.logger", "false", "--trainer.enable_checkpointing", "false"
    )
    assert "LearningRateMonitor" not in found and "ModelCheckpoint" not in found and "LatestCheckpoint" not in found
    assert "FitSummary" in found and "MediaLogger" in found


# ------------------------------------------------------------------------------------------------ fit summary


def test_the_demo_parameter_error_compares_with_the_hidden_truth():
    from afx_lightning.callbacks import demo_parameter_error

    truth = [np.full((4, 2), 0.5, np.float32), np.full((3, 2), 0.25, np.float32)]
    theta = {0: torch.full((4, 2), 0.6), 1: torch.full((2, 2), 0.25)}  # clip 1: only its first 2 frames evaluated
    module = SimpleNamespace(
        evaluated_clips=lambda: {i: {"theta": t} for i, t in theta.items()}, defaults=torch.tensor([0.5, 0.0])
    )
    trainer = SimpleNamespace(datamodule=SimpleNamespace(dataset="demo", val_clips=SimpleNamespace(trajectories=truth)))
    got = demo_parameter_error(trainer, module)
    assert got["theta_error"] == pytest.approx((8 * 0.1 + 4 * 0.0) / 12, abs=1e-6)
    # defaults (0.5, 0), on the same frames: clip 0 errors 0, 0.5 (4 frames); clip 1 errors 0.25, 0.25 (2 frames)
    assert got["theta_error_defaults"] == pytest.approx((4 * 0.5 + 2 * 0.5) / 12)
    trainer.datamodule.dataset = "folder"
    assert demo_parameter_error(trainer, module) is None


@pytest.mark.slow
def test_fit_ends_with_a_summary_and_no_tips(tmp_path):
    """The quickstart cut to 8 steps (two 4-step epochs, two validations): the summary's numbers, checkpoint and
    commands are real. How far the model trained does not matter here, only that two validations are compared."""
    t0 = time.monotonic()
    shorter = ["--trainer.max_steps", "8", "--data.steps_per_epoch", "4"]
    result = afx("fit", "--config", QUICKSTART, "--config", SHORT, *shorter, cwd=tmp_path, timeout=600)
    wall = time.monotonic() - t0
    assert result.returncode == 0, result.stderr[-4000:]
    out, err = result.stdout, result.stderr
    print(f"\n[fit summary] {wall:.1f} s wall\n{out}")
    both = out + err
    assert "Tip" not in both and "litlogger" not in both and "litmodels" not in both, both[-3000:]
    assert "anonymous" not in both, both[-3000:]
    assert "Traceback" not in both

    lines = [line.strip() for line in out.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("afx fit: 8 steps"))

    def line_with(prefix: str) -> str:
        hits = [line for line in lines[start + 1 :] if line.startswith(prefix)]
        assert len(hits) == 1, (prefix, out)
        return hits[0]

    val = [
        r
        for r in csv.DictReader(next(tmp_path.glob("csv_logs/quickstart/version_*/metrics.csv")).open())
        if r.get("val/loss")
    ]
    assert len(val) == 2
    best = min(val, key=lambda r: float(r["val/loss"]))
    loss_line = line_with("best val/loss")
    assert f"{float(best['val/loss']):.3g} at step " in loss_line, (loss_line, best)
    assert f"(identity: {float(best['val/loss_identity']):.3g})" in loss_line
    mfcc_line = line_with("val/d_mfcc")
    assert f"{float(best['val/d_mfcc']):.3g} " in mfcc_line, (mfcc_line, best)
    assert f"(identity: {float(best['val/d_mfcc_identity']):.3g})" in mfcc_line
    theta = re.search(r"hidden truth\| ([\d.]+) .*chain defaults: ([\d.]+)", out)
    assert theta, out
    assert 0.0 <= float(theta.group(1)) <= 1.0 and 0.0 < float(theta.group(2)) <= 1.0

    command = re.search(r"afx process --ckpt (\S+) in\.wav out\.wav", out)
    assert command, out
    ckpt = tmp_path / command.group(1)
    assert ckpt.is_file() and ckpt.suffix == ".ckpt", ckpt
    step = re.search(r"at step (\d+)", loss_line).group(1)  # optimizer steps, as the checkpoint is named
    assert ckpt.name.endswith(f"step={step}.ckpt"), (ckpt.name, loss_line)
    assert (ckpt.parent / "last.ckpt").is_file(), "the quickstart wrote no last.ckpt"
    sf.write(tmp_path / "in.wav", (0.1 * np.random.default_rng(0).standard_normal(22050)).astype(np.float32), 22050)
    processed = afx(*command.group(0).split()[1:], "--no-progress", cwd=tmp_path, timeout=300)  # the printed command
    assert processed.returncode == 0 and (tmp_path / "out.wav").is_file(), processed.stderr[-3000:]
    sync = re.search(r"wandb sync (\S+)", out)
    assert sync and (tmp_path / sync.group(1)).is_dir() and "offline-run-" in sync.group(1), out
    assert re.search(r"metrics in \S+metrics\.csv", out), out


def test_last_ckpt_is_the_latest_step_even_when_val_loss_got_worse(tmp_path):
    """Lightning >= 2.6 refreshes a ModelCheckpoint's last.ckpt only with a new best: resuming from it would
    replay from the best step. The CLI's LatestCheckpoint keeps it at the step training reached."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from afx_lightning.callbacks import LatestCheckpoint

    class Worsening(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("val/loss", float(self.current_epoch))  # the first epoch is the best

    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_last=True)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[best, LatestCheckpoint(dirpath=str(tmp_path))],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Worsening())
    steps = {
        p.name: torch.load(p, map_location="cpu", weights_only=False)["global_step"] for p in tmp_path.glob("*.ckpt")
    }
    assert steps == {"epoch=0-step=2.ckpt": 2, "last.ckpt": 6}, steps
