"""Train-time input augmentation of cut batches: random gain and white noise per *play* of a clip.

Only the input (``context`` and ``frame``) is augmented; the target is left as is. That is what the official
DeepAFx code does (noise on the input only, so the model learns to predict robust parameters for noisy inputs
while still aiming at the clean target). The semantics are those of
:func:`afx_lightning.data.preprocess.augment_input`, computed block-wise so the context and the frame of a row
see the same augmented signal. A play is one pass of a slot through a clip, identified by
``(seed, rank, clip, slot, step the play started)``: the same clip dealt again gets a new draw, and the draws
are a pure function of the stream state, so a resumed run makes identical batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .datasets import DataError, PairedClips
from .streams import StreamStep


def range_option(name: str, value: Sequence[float] | None) -> tuple[float, float] | None:
    """``[low, high]`` as two floats, or a one-line error naming ``data.<name>``."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"data.{name} must be two numbers [low, high], got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise DataError(f"data.{name} must be a finite range [low, high] with low <= high, got {value!r}")
    return lo, hi


def _seed_word(value: int) -> int:
    return int(value) % (1 << 63)  # SeedSequence takes non-negative entropy only


class InputAugmentation:
    """Gain (dB range) and noise (SNR range in dB relative to the clip's RMS, after the gain) on training rows.

    Holds the clips' RMS and the last batch's noise blocks (a play's next frame reuses the blocks its context
    already drew), so one object serves one training stream.
    """

    def __init__(
        self, gain_db: Sequence[float] | None = None, noise_snr_db: Sequence[float] | None = None, seed: int = 0
    ):
        self.gain_db = range_option("augment_gain_db", gain_db)
        self.noise_snr_db = range_option("augment_noise_snr_db", noise_snr_db)
        self.seed = int(seed)
        self._clip_rms: dict[int, float] = {}
        self._noise_blocks: dict[tuple, np.ndarray] = {}

    @property
    def active(self) -> bool:
        return self.gain_db is not None or self.noise_snr_db is not None

    def apply(
        self,
        clips: PairedClips,
        step: StreamStep,
        train_step: int,
        rank: int,
        context: np.ndarray,
        frame: np.ndarray,
        context_before: int,
    ) -> None:
        """Augment the rows' ``context`` and ``frame`` in place; ``train_step`` is the stream step of this batch.

        Noise comes in frame-sized blocks keyed by sample position, so overlapping contexts and frames of a play
        agree."""
        n, width, before = frame.shape[-1], context.shape[-1], context_before
        blocks: dict[tuple, np.ndarray] = {}
        old = self._noise_blocks
        for r, (slot, c, f) in enumerate(zip(step.slots.tolist(), step.clips.tolist(), step.frames.tolist())):
            clip = clips[c]
            play = (_seed_word(self.seed), rank, c, slot, train_step - f)  # a slot plays one frame per step
            rng = np.random.default_rng(play)
            gain = 1.0
            if self.gain_db is not None:
                gain = 10.0 ** (rng.uniform(*self.gain_db) / 20.0)
            sigma = 0.0
            if self.noise_snr_db is not None:
                snr = rng.uniform(*self.noise_snr_db)
                if c not in self._clip_rms:
                    self._clip_rms[c] = float(np.sqrt(np.mean(np.square(clip.input, dtype=np.float64))))
                sigma = self._clip_rms[c] * gain * 10.0 ** (-snr / 20.0)
            pos = f * n
            lo = pos - before
            a, b = max(lo, 0), min(lo + width, clip.num_samples)
            frame[r] *= np.float32(gain)
            context[r] *= np.float32(gain)
            if sigma <= 0.0:
                continue

            def noise(k: int) -> np.ndarray:
                key = (*play, k)
                block = blocks.get(key)
                if block is None:
                    block = old.get(key)
                    if block is None:
                        block = np.random.default_rng(key).standard_normal((clip.num_channels, n)).astype(np.float32)
                    blocks[key] = block
                return block

            for k in range(a // n, -(-b // n)):  # context: only its real samples (the padding stays zero)
                s0, s1 = max(a, k * n), min(b, (k + 1) * n)
                context[r, :, s0 - lo : s1 - lo] += np.float32(sigma) * noise(k)[:, s0 - k * n : s1 - k * n]
            frame[r] += np.float32(sigma) * noise(f)
        self._noise_blocks = blocks
