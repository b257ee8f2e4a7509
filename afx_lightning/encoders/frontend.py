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


class LogMelStream:
    """A whole signal's un-normalised log-mel, computed chunk by chunk as audio arrives (inference).

    Frame ``k`` covers samples ``[k·hop, k·hop + n_fft)`` of the stream, so a context starting at sample
    ``s = q·hop`` sees exactly frames ``q ... q + frames_in(width) - 1``: the frames :meth:`LogMelFrontend.log_mel`
    computes for that context alone, without recomputing the ~97 % that consecutive contexts share. Only
    uncentred framing (the default) allows this; the caller checks :meth:`supports`. Memory: the audio of one
    window plus the frames not yet taken.
    """

    def __init__(self, frontend: LogMelFrontend, chunk_frames: int = 1024) -> None:
        if not self.supports(frontend):
            raise ValueError("LogMelStream needs an uncentred front end (center=False)")
        self.frontend = frontend
        self.hop, self.n_fft = int(frontend.mel.hop_length), int(frontend.n_fft)
        self.chunk = int(chunk_frames) * self.hop
        self._audio = torch.zeros(0, device=frontend.mel.mel_scale.fb.device)
        self._frames: list[Tensor] = []
        self._first = 0  # global index of the first frame held

    @staticmethod
    def supports(frontend: LogMelFrontend) -> bool:
        return not frontend.mel.spectrogram.center

    def frames_in(self, width: int) -> int:
        """Frames of a ``width``-sample context (``width >= n_fft``)."""
        return 1 + (width - self.n_fft) // self.hop

    def push(self, audio: Tensor) -> None:
        """Append mono samples; the frames whose windows are complete are computed in chunks."""
        self._audio = torch.cat([self._audio, audio.reshape(-1).to(self._audio)])
        while len(self._audio) >= self.chunk + self.n_fft - self.hop:
            self._compute(self.chunk + self.n_fft - self.hop)

    def _compute(self, length: int) -> None:
        seg = self._audio[:length]
        self._frames.append(self.frontend.log_mel(seg[None])[0, 0])  # [n_mels, 1 + (length - n_fft) // hop]
        used = (1 + (length - self.n_fft) // self.hop) * self.hop
        self._audio = self._audio[used:]

    def finish(self) -> None:
        """The stream has ended: frames of every complete window left in the buffer (none is padded)."""
        if len(self._audio) >= self.n_fft:
            self._compute(len(self._audio))

    @property
    def available(self) -> int:
        """Global index one past the last computed frame."""
        return self._first + sum(f.shape[1] for f in self._frames)

    def window(self, start: int, stop: int) -> Tensor:
        """Frames ``[start, stop)`` of the stream as ``[1, 1, n_mels, stop - start]``; the frames before ``start``
        are dropped (calls must not go back)."""
        if start < self._first or stop > self.available:
            raise ValueError(f"log-mel frames [{start}, {stop}) asked for, [{self._first}, {self.available}) held")
        frames = torch.cat(self._frames, dim=1) if len(self._frames) != 1 else self._frames[0]
        frames = frames[:, start - self._first :]
        self._frames, self._first = [frames], start
        return frames[:, : stop - start][None, None]
