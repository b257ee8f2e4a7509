"""Streams with bounded memory: a chunked resampler equal to resampling the whole signal, and a ring buffer."""

from __future__ import annotations

import math

import numpy as np
import torch


class StreamingResampler:
    """``torchaudio.functional.resample`` over a stream, chunk by chunk, with bounded memory.

    Each chunk is resampled together with ``pad`` input samples of real context on both sides (more than the
    sinc kernel's reach) and only the outputs of its own span are kept; chunk starts are multiples of the reduced
    input rate so every chunk's output grid coincides with the whole signal's. The result equals resampling the
    whole signal at once up to float rounding (no clicks at chunk joints), with the same length ``ceil(L·new/orig)``.
    """

    def __init__(self, orig_freq: int, new_freq: int, step: int = 1 << 16):
        import torchaudio

        g = math.gcd(int(orig_freq), int(new_freq))
        self.o, self.n = int(orig_freq) // g, int(new_freq) // g
        self.identity = self.o == self.n
        self._resample = torchaudio.transforms.Resample(self.o, self.n) if not self.identity else None
        width = math.ceil(6 * self.o / (min(self.o, self.n) * 0.99))  # torchaudio's default kernel half-width
        self.pad = self.o * math.ceil((width + self.o + 16) / self.o)
        self.step = self.o * max(1, math.ceil(step / self.o))
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # global index of _buf[0]
        self._next = 0  # global input index whose outputs come next (a multiple of o)

    def output_length(self, input_length: int) -> int:
        return -(-input_length * self.n // self.o)

    def _run(self, a: int, b: int, keep_from: int, keep_to: int | None) -> np.ndarray:
        seg = torch.from_numpy(np.ascontiguousarray(self._buf[a - self._buf_start : b - self._buf_start]))
        with torch.no_grad():
            y = self._resample(seg).numpy()
        lo = (keep_from - a) * self.n // self.o
        hi = None if keep_to is None else (keep_to - a) * self.n // self.o
        return y[lo:hi]

    def push(self, x: np.ndarray) -> np.ndarray:
        """Mono input samples -> the output samples that are final now."""
        x = np.asarray(x, dtype=np.float32)
        if self.identity:
            return x
        self._buf = np.concatenate([self._buf, x])
        end = self._buf_start + len(self._buf)
        outs = []
        while self._next + self.step + self.pad <= end:
            r0 = self._next
            a = max(0, r0 - self.pad)
            outs.append(self._run(a, r0 + self.step + self.pad, r0, r0 + self.step))
            self._next = r0 + self.step
        drop = max(0, self._next - self.pad) - self._buf_start
        if drop > 0:
            self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """The remaining outputs (the stream has ended: zeros beyond it, as torchaudio pads)."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        end = self._buf_start + len(self._buf)
        if self._next >= end:
            return np.zeros(0, dtype=np.float32)
        a = max(0, self._next - self.pad)
        out = self._run(a, end, self._next, None)
        self._next = end
        return out


class _Ring:
    """A window of a stream by global sample index; reads outside [0, total) are zeros."""

    def __init__(self) -> None:
        self.buf = np.zeros(0, dtype=np.float32)
        self.start = 0
        self.total: int | None = None  # known once the stream ends

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def append(self, x: np.ndarray) -> None:
        if len(x):
            self.buf = np.concatenate([self.buf, x])

    def get(self, a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a, self.start), min(b, self.end)
        if hi > lo:
            out[lo - a : hi - a] = self.buf[lo - self.start : hi - self.start]
        return out

    def discard_before(self, index: int) -> None:
        drop = min(index, self.end) - self.start
        if drop > 0:
            self.buf, self.start = self.buf[drop:], self.start + drop
