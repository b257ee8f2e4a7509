"""The figures shared by the media callback (:func:`~afx_lightning.callbacks.clip_figure`) and ``afx process
--plot`` (:func:`plot_automation`): spectrograms above a heat map of the automation, drawn the same way in both.

matplotlib is imported on first use (Agg backend), so importing this module costs nothing for a run that plots
nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectrogram_db(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Log-power STFT of mono audio, in dB relative to its peak (for display only)."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs() ** 2
    db = 10 * torch.log10(spec + 1e-10)
    return (db - db.max()).clamp(min=-90).numpy()


def spectrogram_panel(ax: Any, spec: np.ndarray, seconds: float, sample_rate: int, label: str) -> None:
    """One spectrogram (``spectrogram_db``) over ``seconds``, frequency in kHz up to Nyquist."""
    ax.imshow(spec, origin="lower", aspect="auto", extent=(0, seconds, 0, sample_rate / 2000), cmap="magma")
    ax.set_ylabel(f"{label}\nkHz")


def automation_panel(ax: Any, theta: np.ndarray, param_names: Sequence[str], seconds: float) -> None:
    """A heat map of normalised θ (``theta`` [P, frames], rows = parameter names, labels shrinking with P)."""
    ax.imshow(
        theta,
        aspect="auto",
        vmin=0,
        vmax=1,
        cmap="viridis",
        interpolation="nearest",
        extent=(0, seconds, len(param_names), 0),
    )
    ax.set_yticks(np.arange(len(param_names)) + 0.5)
    ax.set_yticklabels(param_names, fontsize=max(4, 9 - len(param_names) // 10))
    ax.set_xlabel("seconds")


def plot_automation(
    inp: np.ndarray,
    out: np.ndarray,
    automation: Any,
    sample_rate: int,
    path: str | os.PathLike,
    title: str = "",
    max_columns: int = 3000,
) -> None:
    """``afx process --plot``: input and output spectrograms above a heat map of the ``automation``
    (an :class:`~afx_lightning.inference.Automation`: ``names``, ``normalized`` [frames, P], ``frame_rate``)."""
    plt = _pyplot()
    seconds = len(inp) / sample_rate
    names = automation.names
    fig, axes = plt.subplots(3, 1, figsize=(12, 9), gridspec_kw={"height_ratios": [1, 1, 1.4]})
    for ax, audio, label in zip(axes[:2], (inp, out), ("input", "output")):
        audio = np.pad(audio, (0, max(0, 1024 - len(audio))))
        spec = spectrogram_db(audio)
        if spec.shape[1] > max_columns:  # display only: max-pool time so the PNG stays small
            k = -(-spec.shape[1] // max_columns)
            cols = spec.shape[1] // k * k
            spec = spec[:, :cols].reshape(spec.shape[0], -1, k).max(axis=2)
        spectrogram_panel(ax, spec, seconds, sample_rate, label)
    automation_panel(axes[2], automation.normalized.T, names, len(automation.normalized) / automation.frame_rate)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)
