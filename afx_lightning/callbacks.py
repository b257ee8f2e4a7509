"""Callbacks the CLI adds to every run: media for the dashboards and the closing summary of ``fit``.

:class:`MediaLogger`: every ``every_n_epochs`` validation runs, the first ``num_clips`` validation clips (input,
target, output) are written as WAV and PNG under the run's folder (``media_files/``) and sent to the logger: W&B
(``wandb.Audio``/``wandb.Image``) or TensorBoard (``add_audio``/``add_figure``); a CSV logger keeps the files only.

:class:`FitSummary`: what a run learned and where it went, printed when ``fit`` ends.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import lightning.pytorch as pl
import matplotlib
import numpy as np
import soundfile as sf
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from .plots import automation_panel, spectrogram_db, spectrogram_panel  # noqa: E402


def run_folder(trainer: pl.Trainer) -> Path:
    """This run's own folder: W&B's run files folder, else the first logger's version folder."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return Path(logger.experiment.dir)
    # what trainer.log_dir returns, without its broadcast: this runs on rank 0 only under DDP, and a collective
    # there would pair with the next one of the other ranks and hang the run
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    first = trainer.loggers[0]
    folder = first.log_dir if isinstance(first, (TensorBoardLogger, CSVLogger)) else first.save_dir
    return Path(folder or trainer.default_root_dir)


def clip_figure(clip: dict[str, torch.Tensor], param_names: Sequence[str], sample_rate: int, title: str):
    """Spectrograms of input/target/output above a heat map of the automation (rows = parameter names)."""
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), gridspec_kw={"height_ratios": [1, 1, 1, 1.4]})
    seconds = clip["input"].shape[-1] / sample_rate
    for ax, key in zip(axes[:3], ("input", "target", "output")):
        spectrogram_panel(ax, spectrogram_db(clip[key].mean(0).numpy()), seconds, sample_rate, key)
    automation_panel(axes[3], clip["theta"].numpy().T, param_names, seconds)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def automation_figure(theta: np.ndarray, param_names: Sequence[str], frame_seconds: float, title: str):
    """One small line plot per parameter: its normalised value over time."""
    cols = min(4, len(param_names))
    rows = math.ceil(len(param_names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 1.6 * rows), squeeze=False, sharex=True)
    t = np.arange(theta.shape[0]) * frame_seconds
    for i, ax in enumerate(axes.flat):
        if i >= len(param_names):
            ax.axis("off")
            continue
        ax.plot(t, theta[:, i], lw=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(param_names[i], fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class MediaLogger(pl.Callback):
    """Logs audio, spectrograms and parameter automation of validation clips.

    Args:
        every_n_epochs: log on every n-th validation run (the sanity check is skipped).
        num_clips: how many validation clips to log.
    """

    def __init__(self, every_n_epochs: int = 1, num_clips: int = 2):
        self.every_n_epochs = every_n_epochs
        self.num_clips = num_clips
        self._runs = 0

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._runs += 1
        if (self._runs - 1) % self.every_n_epochs:
            return
        clips = list(pl_module.evaluated_clips().items())[: self.num_clips]
        if not clips:
            return
        sr = pl_module.hparams.sample_rate
        names = pl_module.param_names
        folder = run_folder(trainer) / "media_files" / f"step_{trainer.global_step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        media: list[tuple] = []
        for clip_id, clip in clips:
            for key in ("input", "target", "output"):
                path = folder / f"clip{clip_id}_{key}.wav"
                sf.write(path, clip[key].numpy().T, sr, subtype="FLOAT")
                media.append(("audio", f"clip{clip_id}/{key}", path, clip[key]))
            figures = {
                "spectrograms": clip_figure(clip, names, sr, f"clip {clip_id} at step {trainer.global_step}"),
                "automation": automation_figure(
                    clip["theta"].numpy(), names, pl_module.hparams.frame_size / sr, f"clip {clip_id} automation"
                ),
            }
            for name, fig in figures.items():
                path = folder / f"clip{clip_id}_{name}.png"
                fig.savefig(path, dpi=80)
                media.append(("image", f"clip{clip_id}/{name}", path, fig))
        self._send(trainer, media, sr)
        plt.close("all")

    def _send(self, trainer: pl.Trainer, media: list[tuple], sample_rate: int) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                payload = {}
                for kind, key, path, _ in media:
                    payload[f"media/{key}"] = (
                        wandb.Audio(str(path), sample_rate=sample_rate) if kind == "audio" else wandb.Image(str(path))
                    )
                logger.experiment.log({**payload, "trainer/global_step": step})
            elif isinstance(logger, TensorBoardLogger):
                for kind, key, _, obj in media:
                    if kind == "audio":
                        logger.experiment.add_audio(key, obj.mean(0, keepdim=True), step, sample_rate)
                    else:
                        logger.experiment.add_figure(key, obj, step, close=False)


#: What FitSummary keeps of each validation (logged by DeepAFx).
VAL_METRICS = ("val/loss", "val/loss_identity", "val/d_mfcc", "val/d_mfcc_identity")


class LatestCheckpoint(ModelCheckpoint):
    """Writes ``last.ckpt`` after every validation and epoch, whether or not val/loss improved.

    Why: since Lightning 2.6 a ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only at steps where it
    also saved a top-k checkpoint, so with ``save_top_k=1`` on val/loss ``last.ckpt`` is a copy of the best and a
    resumed run silently loses every step since. This one keeps a single file named ``last`` (no monitor, top 1,
    no version counter), next to the recipe's best-val checkpoints.
    """

    def __init__(self, dirpath: str | None = None):
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )


def demo_parameter_error(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float] | None:
    """For the demo's known-answer task: mean |theta - hidden theta| (normalised, over the last validation's frames),
    of the model and of the chain defaults; None for any other data.

    The demo knows its hidden trajectories (``DemoClips.trajectories``, per clip and frame); an evaluated clip's
    theta rows are its frames from the first on (each slot streams a clip from its start).
    """
    dm = getattr(trainer, "datamodule", None)
    if getattr(dm, "dataset", None) != "demo":
        return None
    truths = getattr(getattr(dm, "val_clips", None), "trajectories", None)
    clips = pl_module.evaluated_clips() if hasattr(pl_module, "evaluated_clips") else {}
    defaults = getattr(pl_module, "defaults", None)
    if not truths or not clips or defaults is None:
        return None
    defaults = defaults.detach().cpu().numpy()
    model_err, default_err = [], []
    for index, clip in clips.items():
        theta = clip["theta"].float().numpy()
        truth = np.asarray(truths[index])[: len(theta)]
        theta = theta[: len(truth)]
        model_err.append(np.abs(theta - truth).ravel())
        default_err.append(np.abs(defaults[None, :] - truth).ravel())
    return {
        "theta_error": float(np.concatenate(model_err).mean()),
        "theta_error_defaults": float(np.concatenate(default_err).mean()),
    }


def _shown(path: str | Path) -> str:
    """A path as a user would type it: relative when under the working directory."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _viewing(trainer: pl.Trainer) -> list[str]:
    """How to look at this run, one line per logger."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    lines = []
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            if getattr(logger, "_offline", False):
                lines.append(f"wandb sync {_shown(Path(run.dir).parent)}   (offline W&B run: uploads it)")
            else:
                lines.append(f"W&B run {getattr(run, 'url', None) or run.id}")
        elif isinstance(logger, TensorBoardLogger):
            lines.append(f"tensorboard --logdir {_shown(logger.log_dir)}")
        elif isinstance(logger, CSVLogger):
            lines.append(f"metrics in {_shown(Path(logger.log_dir) / 'metrics.csv')}")
    return lines


class FitSummary(pl.Callback):
    """Ends ``fit`` with a few lines: best val loss and d_MFCC against the identity baseline (input as output), the
    checkpoint, the ``afx process`` command for it, how to look at the run, and on the demo's known-answer task
    the parameter error against the hidden truth (model vs chain defaults).

    Collected after each validation and when training ends (while loggers are still open), printed by rank 0 at
    the end of ``fit`` (after the progress bar has closed). Under DDP, losses are averaged across ranks; the
    parameter error covers rank 0's clips.

    Args:
        stream: where to print (default: standard output).
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.best: dict[str, float] | None = None
        self.last: dict[str, float] | None = None
        self._started = 0.0
        self._lines: list[str] = []

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last": self.last}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.last = state_dict.get("best"), state_dict.get("last")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()
        self._lines = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {k: float(metrics[k]) for k in VAL_METRICS if k in metrics}
        if "val/loss" not in row:
            return
        row["step"] = trainer.global_step
        row.update(demo_parameter_error(trainer, pl_module) or {})
        self.last = row
        if self.best is None or row["val/loss"] < self.best["val/loss"]:
            self.best = row

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._lines = self.summary(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self._lines:
            print("\n".join(self._lines), file=self.stream or sys.stdout, flush=True)

    def summary(self, trainer: pl.Trainer) -> list[str]:
        """The summary's lines (logger runs still open: the W&B run folder is asked for)."""
        wall = time.monotonic() - self._started if self._started else 0.0
        lines = [f"afx fit: {trainer.global_step} steps in {wall:.0f} s"]
        best = self.best
        if best is None:
            lines.append("  no validation ran: no val loss to report")
        else:
            identity = f" (identity: {best['val/loss_identity']:.3g})" if "val/loss_identity" in best else ""
            lines.append(f"  best val/loss    {best['val/loss']:.3g} at step {best['step']}{identity}")
            if "val/d_mfcc" in best:
                identity = f" (identity: {best['val/d_mfcc_identity']:.3g})" if "val/d_mfcc_identity" in best else ""
                lines.append(f"  val/d_mfcc       {best['val/d_mfcc']:.3g} at that step{identity}")
            if "theta_error" in best:
                lines.append(
                    f"  parameters       mean |theta - hidden truth| {best['theta_error']:.3f} at that step "
                    f"(chain defaults: {best['theta_error_defaults']:.3f}; normalised to [0, 1])"
                )
        ckpt, last = self._checkpoints(trainer)
        if ckpt is None:
            lines.append("  no checkpoint was written")
        else:
            also = f"   (last: {last})" if last and last != ckpt else ""
            lines.append(f"  checkpoint       {ckpt}{also}")
            lines.append(f"  apply it         afx process --ckpt {ckpt} in.wav out.wav")
        for line in _viewing(trainer):
            lines.append(f"  look at the run  {line}")
        return lines

    @staticmethod
    def _checkpoints(trainer: pl.Trainer) -> tuple[str | None, str | None]:
        """(the checkpoint to use, last.ckpt): the best on val/loss when one was kept, else the last written."""
        best = last = None
        for cb in trainer.checkpoint_callbacks:
            path = getattr(cb, "best_model_path", "")
            if best is None and path and getattr(cb, "monitor", None) == "val/loss" and os.path.isfile(path):
                best = _shown(path)
            path = getattr(cb, "last_model_path", "")
            if last is None and path and os.path.isfile(path):
                last = _shown(path)
        return best or last, last
