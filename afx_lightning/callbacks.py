"""Media for the dashboards: audio, spectrograms and the predicted parameter automation.

Every ``every_n_epochs`` validation runs, the first ``num_clips`` validation clips (input, target, output) are
written as WAV and PNG under the run's folder (``media_files/``) and sent to the logger: W&B (``wandb.Audio``/``wandb.Image``)
or TensorBoard (``add_audio``/``add_figure``); a CSV logger keeps the files only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence

import lightning.pytorch as pl
import numpy as np
import soundfile as sf
import torch

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run_folder(trainer: pl.Trainer) -> Path:
    """This run's own folder: W&B's run files folder, else the first logger's version folder."""
    from lightning.pytorch.loggers import WandbLogger

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

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


def spectrogram_db(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Log-power STFT of mono audio, in dB relative to its peak (for display only)."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs() ** 2
    db = 10 * torch.log10(spec + 1e-10)
    return (db - db.max()).clamp(min=-90).numpy()


def clip_figure(clip: Dict[str, torch.Tensor], param_names: Sequence[str], sample_rate: int, title: str):
    """Spectrograms of input/target/output above a heat map of the automation (rows = parameter names)."""
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), gridspec_kw={"height_ratios": [1, 1, 1, 1.4]})
    seconds = clip["input"].shape[-1] / sample_rate
    for ax, key in zip(axes[:3], ("input", "target", "output")):
        ax.imshow(spectrogram_db(clip[key].mean(0).numpy()), origin="lower", aspect="auto",
                  extent=(0, seconds, 0, sample_rate / 2000), cmap="magma")
        ax.set_ylabel(f"{key}\nkHz")
    theta = clip["theta"].numpy().T
    axes[3].imshow(theta, aspect="auto", vmin=0, vmax=1, cmap="viridis", extent=(0, seconds, len(param_names), 0),
                   interpolation="nearest")
    axes[3].set_yticks(np.arange(len(param_names)) + 0.5)
    axes[3].set_yticklabels(param_names, fontsize=max(4, 9 - len(param_names) // 10))
    axes[3].set_xlabel("seconds")
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
        media: List[tuple] = []
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

    def _send(self, trainer: pl.Trainer, media: List[tuple], sample_rate: int) -> None:
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
