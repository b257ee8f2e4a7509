"""Log-mel front end shared by every encoder (paper §2.1: non-trainable log-mel, then batch norm)."""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn


class LogMelFrontend(nn.Module):
    """Audio ``[B, C, T]`` or ``[B, T]`` -> normalised log10 mel power ``[B, 1, n_mels, frames]``.

    The mel projection is fixed (buffers, no parameters); only the trailing ``BatchNorm2d(1)`` learns, which is what
    the paper and its official code do: the encoder sees log10(mel power + 1e-6) standardised by batch statistics.
    Channels are averaged first, because the parameters drive one plugin chain per item whatever its channel count.

    Framing follows the official code (no centring: 40 960 samples give 157 frames). A context shorter than one
    window is zero-padded to ``n_fft`` so any length yields at least one frame.
    """

    def __init__(
        self,
        sample_rate: int = 22050,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        eps: float = 1e-6,
        center: bool = False,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.n_mels = n_mels
        self.eps = eps
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=n_fft,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
            center=center,
        )
        self.norm = nn.BatchNorm2d(1)

    def log_mel(self, audio: Tensor) -> Tensor:
        """Un-normalised log10 mel power ``[B, 1, n_mels, frames]`` (before the batch norm)."""
        if audio.dim() == 3:
            audio = audio.mean(dim=1)
        elif audio.dim() != 2:
            raise ValueError(f"expected audio [B, C, T] or [B, T], got shape {tuple(audio.shape)}")
        if audio.shape[-1] < self.n_fft:
            audio = nn.functional.pad(audio, (0, self.n_fft - audio.shape[-1]))
        return torch.log10(self.mel(audio) + self.eps).unsqueeze(1)

    def forward(self, audio: Tensor) -> Tensor:
        return self.norm(self.log_mel(audio))
