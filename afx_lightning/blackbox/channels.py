"""How C-channel audio meets a chain built for another channel count: one rule for training and ``afx process``.

Parameters are *linked*: one θ per frame drives every channel, as a mastering engineer's linked stereo chain. A mono
chain (all the shipped ones) gets one plugin instance per channel, each carrying its own channel's state from block
to block; a chain built for C channels gets the C-channel block in one instance; a mono signal through a multichannel
chain is duplicated into it and its output averaged back (a stereo-only plugin fed mono). Anything else (a stereo
chain on three channels) has no obvious mapping and is refused in one line.

The layout turns a batch of rows ``[M, C, N]`` into the pool's rows ``[M * instances, width, N]`` and back, and a
slot ``s`` into the pool slots ``s * instances + i``: every channel instance is a slot of its own, so its state lives
on (and its faults are isolated in) the worker that slot is on. Torch-free, like the rest of the pool side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChannelLayout:
    """``channels`` of audio through a chain of ``chain_channels``: ``instances`` per row of ``width`` channels."""

    channels: int
    chain_channels: int

    @classmethod
    def of(cls, chain_channels: int, channels: int, chain_name: str, what: str = "input") -> ChannelLayout:
        """The layout, or a one-line ``ValueError`` naming the chain and ``what`` has the other channel count."""
        chain_channels, channels = int(chain_channels), int(channels)
        if channels < 1:
            raise ValueError(f"the {what} must have at least one channel, got {channels}")
        if chain_channels not in (1, channels) and channels != 1:
            raise ValueError(
                f"chain {chain_name!r} processes {chain_channels} channels and the {what} has {channels}: only a mono "
                f"chain (one instance per channel), a {channels}-channel chain, or mono audio (duplicated into the "
                "chain) fits"
            )
        return cls(channels, chain_channels)

    @property
    def per_channel(self) -> bool:
        """A mono chain on multichannel audio: one instance per channel."""
        return self.chain_channels == 1 and self.channels > 1

    @property
    def instances(self) -> int:
        """Plugin instances (pool slots) per row."""
        return self.channels if self.per_channel else 1

    @property
    def width(self) -> int:
        """Channels of each instance's block (the pool's channel count)."""
        return self.chain_channels

    def slots(self, slots: Sequence[int]) -> list[int]:
        """Row slots -> the pool slots of their channel instances (row by row, channel by channel)."""
        k = self.instances
        return [int(s) * k + i for s in slots for i in range(k)]

    def rows(self, values: Sequence) -> list:
        """Any per-row list (fresh flags) repeated for each channel instance."""
        return [v for v in values for _ in range(self.instances)]

    def split(self, audio: np.ndarray) -> np.ndarray:
        """Rows ``[M, C, N]`` -> pool rows ``[M * instances, width, N]``."""
        m, c, n = audio.shape
        if c != self.channels:
            raise ValueError(f"audio has {c} channels, the layout {self.channels}")
        if self.per_channel:
            return audio.reshape(m * c, 1, n)
        if c != self.width:  # mono into a multichannel chain
            return np.repeat(audio, self.width, axis=1)
        return audio

    def repeat(self, params: np.ndarray) -> np.ndarray:
        """Per-row parameters ``[M, ...]`` -> ``[M * instances, ...]``: linked, every channel the same θ (and Δ)."""
        return np.repeat(params, self.instances, axis=0) if self.instances > 1 else params

    def merge(self, out: np.ndarray) -> np.ndarray:
        """Pool output ``[M * instances, I, width, N]`` -> ``[M, I, C, N]``."""
        rows, i, w, n = out.shape
        if self.per_channel:
            m = rows // self.instances
            return np.ascontiguousarray(out.reshape(m, self.instances, i, n).transpose(0, 2, 1, 3))
        if w != self.channels:  # a multichannel chain's output averaged back to mono
            return out.mean(axis=2, keepdims=True)
        return out

    def channel_failed(self, failed: np.ndarray) -> np.ndarray:
        """Pool rows' failure flags ``[M * instances]`` -> per row and channel ``[M, C]``."""
        failed = np.asarray(failed, dtype=bool).reshape(-1, self.instances)
        return np.broadcast_to(failed, (failed.shape[0], self.channels))
