"""Preprocessing of paired recordings, cached on disk: read, mono, resample, high-pass, align, loudness-normalise.

One pair (input file, target file) goes through :func:`prepare_pair`:

1. read both with soundfile (int or float WAV/FLAC/AIFF), reject empty, truncated, non-audio and NaN/Inf files;
2. convert the channels: ``channels=1`` downmixes to mono (mean of the channels, the corpora); otherwise a file
   keeps its channels when it has exactly that many and a mono file is copied to each (paired folders);
3. resample to the model rate with ``torchaudio.functional.resample``;
4. optionally high-pass both (``highpass_hz``, e.g. 60 Hz for speech: removes rumble the gate should not learn);
5. optionally time-align the target to the input by FFT cross-correlation of their mono mixes within
   +-``max_lag_seconds`` (the target is shifted, every channel alike; both are then cut to their overlap, which
   must cover ``min_overlap`` of the input, or, with ``length_tolerance`` set, lose at most that many samples);
6. optionally loudness-normalise the *input only* to ``loudness_lufs`` (ITU-R BS.1770, pyloudnorm's algorithm
   streamed by :class:`LoudnessMeter`). This is the paper's mastering preprocessing ("loudness normalize each
   unmastered track to -25 dBFS"): the target (the master) keeps its own loudness, since making it louder is
   part of what the model must learn.

Steps 4 and 6 are a :class:`Preprocessing`, the one description of what a model's input goes through: saved in
every checkpoint (``afx_model["preprocessing"]``) and applied, streamed, by ``afx process``, ``afx evaluate`` and
``afx predict`` (:class:`~afx_lightning.inference.Processor`) with the same :class:`Highpass` and
:class:`LoudnessMeter`. Alignment (step 5) is not part of it: it is a property of a pair (a target shifted onto
its input), so it exists in training only; at inference there is no target to align.

An input that is silent (peak <= ``silence_floor``) carries no information: it is skipped with a warning.
Results are float32 arrays shaped (channels, samples).

Results are cached as ``.npz`` files under a cache folder, keyed by a hash of both files' resolved paths,
sizes and modification times and of every option, so a second run (or epoch) reads the cache and a changed
file or option recomputes. Errors are never cached.

:func:`augment_input` is the train-time augmentation of the official code (additive noise at a random SNR,
random gain), applied to an input clip only and deterministic given a seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..constants import SAMPLE_RATE
from .datasets import DataError, read_audio

log = logging.getLogger(__name__)

CACHE_VERSION = 1
AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff")


@dataclass(frozen=True)
class PreprocessOptions:
    """Everything that changes the preprocessed audio (all of it goes into the cache key)."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1  # 1: downmix to mono; C > 1: keep C-channel files as they are, copy mono files to C
    align: bool = True
    max_lag_seconds: float = 1.0
    min_overlap: float = 0.9
    loudness_lufs: float | None = None
    highpass_hz: float | None = None
    silence_floor: float = 1e-7
    # None: the overlap check above (corpora). A number: input and target may differ by at most this many samples
    # (at the model rate, after alignment), the rest is cut off (paired folders: export tails, encoder padding).
    length_tolerance: int | None = None

    def __post_init__(self) -> None:
        if self.sample_rate < 1:
            raise DataError(f"data.sample_rate must be at least 1, got {self.sample_rate}")
        if self.channels < 1:
            raise DataError(f"data.channels must be at least 1, got {self.channels}")
        if self.length_tolerance is not None and self.length_tolerance < 0:
            raise DataError(f"data.length_tolerance must be >= 0, got {self.length_tolerance}")
        if self.max_lag_seconds < 0:
            raise DataError(f"max_lag_seconds must be >= 0, got {self.max_lag_seconds}")
        if not 0.0 < self.min_overlap <= 1.0:
            raise DataError(f"min_overlap must be in (0, 1], got {self.min_overlap}")
        self.preprocessing.check(self.sample_rate)

    @property
    def preprocessing(self) -> Preprocessing:
        """The part of these options that inference repeats (high-pass, input loudness)."""
        return Preprocessing(highpass_hz=self.highpass_hz, loudness_lufs=self.loudness_lufs)


@dataclass(frozen=True)
class Preprocessing:
    """What every input a model sees goes through, in training and at inference alike.

    Training applies it in :func:`prepare_pair` (the high-pass to the target as well, so the model does not learn
    to remove rumble; the loudness gain to the input only, measured after alignment cut the pair to its overlap);
    inference applies :meth:`apply` to the whole file (streamed by the ``Processor``: the file's integrated
    loudness is measured in a first pass, then the gain applied). Alignment is not here: it belongs to pairs.
    """

    highpass_hz: float | None = None  # 2nd-order high-pass cutoff (input and target in training)
    loudness_lufs: float | None = None  # integrated loudness each input is normalised to

    def __post_init__(self) -> None:
        for name in ("highpass_hz", "loudness_lufs"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            ):
                raise DataError(f"preprocessing {name} must be a finite number or None, got {value!r}")
        if self.highpass_hz is not None and self.highpass_hz <= 0:
            raise DataError(f"data.highpass_hz must be above 0 Hz (and below Nyquist), got {self.highpass_hz}")

    @property
    def active(self) -> bool:
        return self.highpass_hz is not None or self.loudness_lufs is not None

    def check(self, sample_rate: int) -> None:
        if self.highpass_hz is not None and not self.highpass_hz < sample_rate / 2:
            raise DataError(f"data.highpass_hz must be in (0, {sample_rate / 2}), got {self.highpass_hz}")

    def describe(self) -> str:
        """``high-pass 60 Hz, input at -25 LUFS``, or ``none``."""
        parts = ([f"high-pass {self.highpass_hz:g} Hz"] if self.highpass_hz is not None else []) + (
            [f"input at {self.loudness_lufs:g} LUFS"] if self.loudness_lufs is not None else []
        )
        return ", ".join(parts) or "none"

    def to_config(self) -> dict:
        """Plain data for checkpoints (``afx_model["preprocessing"]``)."""
        return {"highpass_hz": self.highpass_hz, "loudness_lufs": self.loudness_lufs}

    @classmethod
    def from_config(cls, config: dict | None) -> Preprocessing:
        """The inverse of :meth:`to_config`; None (nothing recorded) is no preprocessing."""
        if config is None:
            return cls()
        if not isinstance(config, dict):
            raise DataError(f"preprocessing must be a mapping, got {type(config).__name__}")
        unknown = sorted(set(config) - {"highpass_hz", "loudness_lufs"})
        if unknown:
            raise DataError(f"preprocessing has unknown keys {unknown} (saved by a newer afx-lightning?)")
        return cls(highpass_hz=config.get("highpass_hz"), loudness_lufs=config.get("loudness_lufs"))

    def highpass_filter(self, sample_rate: int) -> Highpass | None:
        """A fresh streaming high-pass, or None when there is none."""
        return None if self.highpass_hz is None else Highpass(sample_rate, self.highpass_hz)

    def filter(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The high-pass over a whole signal (the last axis); unchanged without one."""
        return audio if self.highpass_hz is None else highpass(audio, sample_rate, self.highpass_hz)

    def gain_db(self, audio: np.ndarray, sample_rate: int, name: Path | str) -> float:
        """The loudness-normalisation gain of an input (0 without normalisation); :class:`DataError` naming
        ``name`` when it is too short or silent to measure."""
        if self.loudness_lufs is None:
            return 0.0
        return loudness_gain_db(audio, sample_rate, self.loudness_lufs, name)

    def apply(self, audio: np.ndarray, sample_rate: int, name: Path | str = "<array>") -> tuple[np.ndarray, float]:
        """An input signal as a model trained with this preprocessing expects it: (high-passed and normalised
        audio, the gain in dB that was applied)."""
        x = self.filter(audio, sample_rate)
        gain_db = self.gain_db(x, sample_rate, name)
        return (x * np.float32(10.0 ** (gain_db / 20.0)) if gain_db else x), gain_db


@dataclass
class PreparedPair:
    """A preprocessed pair: float32 ``input`` and ``target`` shaped (channels, samples), equal shapes (no samples
    when ``silent``)."""

    input: np.ndarray
    target: np.ndarray
    lag: int = 0  # samples the target was delayed w.r.t. the input (at the model rate); it was shifted back
    gain_db: float = 0.0  # loudness-normalisation gain applied to the input
    silent: bool = False
    cached: bool = False  # read from the cache rather than computed


# --------------------------------------------------------------------------------------------------- reading


def read_mono(path: str | Path) -> tuple[np.ndarray, int]:
    """A file as mono float32 samples and its sample rate; one-line :class:`DataError` naming the file otherwise."""
    audio, rate = read_audio(path)
    return np.ascontiguousarray(audio.mean(axis=0), dtype=np.float32), rate


def read_channels(path: str | Path, channels: int) -> tuple[np.ndarray, int]:
    """A file as float32 (channels, samples) and its rate: downmixed when ``channels`` is 1, a mono file copied to
    every channel, otherwise the file must have exactly ``channels`` (guessing a downmix of 5.1 to stereo is not ours)."""
    audio, rate = read_audio(path)
    have = audio.shape[0]
    if channels == 1:
        audio = audio.mean(axis=0, keepdims=True)
    elif have == 1:
        audio = np.repeat(audio, channels, axis=0)
    elif have != channels:
        raise DataError(f"{path}: has {have} channels but data.channels is {channels} (use 1 to downmix)")
    return np.ascontiguousarray(audio, dtype=np.float32), rate


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling (torchaudio) along the last axis; ``ceil(len * new / orig)`` samples come out."""
    if orig_rate == new_rate:
        return audio
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), int(orig_rate), int(new_rate))
    return out.numpy().astype(np.float32, copy=False)


class Highpass:
    """The data's 2nd-order high-pass (RBJ biquad, Q = 0.707, the coefficients of torchaudio's ``highpass_biquad``)
    as a stream: one filter state per channel carried from call to call, so a file filtered block by block at
    inference equals the clip filtered at once in training."""

    def __init__(self, sample_rate: int, cutoff_hz: float, q: float = 0.707):
        w0 = 2.0 * math.pi * float(cutoff_hz) / float(sample_rate)
        alpha, cos = math.sin(w0) / 2.0 / q, math.cos(w0)
        a0 = 1.0 + alpha
        self.b = np.array([(1.0 + cos) / 2.0, -1.0 - cos, (1.0 + cos) / 2.0]) / a0
        self.a = np.array([1.0, -2.0 * cos / a0, (1.0 - alpha) / a0])
        self._zi: np.ndarray | None = None

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """The next samples (along the last axis) of the stream, filtered; float32."""
        from scipy.signal import lfilter

        if self._zi is None:
            self._zi = np.zeros(audio.shape[:-1] + (2,))
        if audio.shape[-1] == 0:
            return audio.astype(np.float32, copy=False)
        y, self._zi = lfilter(self.b, self.a, audio.astype(np.float64, copy=False), axis=-1, zi=self._zi)
        return y.astype(np.float32)


def highpass(audio: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """:class:`Highpass` over a whole signal (from rest) along the last axis."""
    return Highpass(sample_rate, cutoff_hz)(audio)


def find_lag(input: np.ndarray, target: np.ndarray, max_lag: int) -> int:
    """The delay of ``target`` relative to ``input`` (``target[n] ~ input[n - lag]``), in [-max_lag, max_lag].

    Picks the peak of |cross-correlation| computed by FFT, so a polarity-inverted target aligns too.
    """
    from scipy.fft import irfft, next_fast_len, rfft

    n = next_fast_len(input.size + target.size - 1, real=True)
    corr = irfft(rfft(target.astype(np.float64), n) * np.conj(rfft(input.astype(np.float64), n)), n)
    max_lag = int(min(max_lag, n // 2 - 1))
    lags = np.arange(-max_lag, max_lag + 1)
    values = np.abs(corr[lags % n])
    return int(lags[int(np.argmax(values))])


def apply_lag(input: np.ndarray, target: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift ``target`` back by ``lag`` samples and cut both to their overlap (along the last axis)."""
    if lag >= 0:
        y = target[..., lag:]
        x = input
    else:  # the target leads: its first samples have no input; the input's first -lag samples have no target
        y = target
        x = input[..., -lag:]
    n = min(x.shape[-1], y.shape[-1])
    return x[..., :n], y[..., :n]


class LoudnessMeter:
    """Integrated loudness (ITU-R BS.1770-4) fed in chunks: pyloudnorm's ``Meter.integrated_loudness`` (its
    K-weighting filters, 400 ms blocks overlapping by 75 %, the -70 LUFS and -10 LU gates, the channel weights)
    computed as a stream, so a whole file is measured without holding it (one block of samples and one number
    per 100 ms are kept). The data pipeline measures a clip with it at once, inference a file block by block."""

    BLOCK_S, OVERLAP = 0.400, 0.75
    WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770 channel gains (L, R, C, Ls, Rs)

    def __init__(self, sample_rate: int, channels: int = 1):
        import pyloudnorm

        self.rate, self.channels = int(sample_rate), int(channels)
        stages = pyloudnorm.Meter(self.rate)._filters.values()  # the K-weighting pyloudnorm applies
        self._stages = [(np.asarray(f.b, float), np.asarray(f.a, float), float(f.passband_gain)) for f in stages]
        self._zi = [np.zeros((self.channels, max(len(a), len(b)) - 1)) for b, a, _ in self._stages]
        self._power = np.zeros((self.channels, 0))  # squared K-weighted samples from global index _start on
        self._start = 0
        self._blocks: list[np.ndarray] = []  # per-channel mean square of each finished block
        self.samples = 0

    @property
    def min_samples(self) -> int:
        return int(self.BLOCK_S * self.rate)

    def _bounds(self, j: int) -> tuple[int, int]:
        step = 1.0 - self.OVERLAP
        return int(self.BLOCK_S * (j * step) * self.rate), int(self.BLOCK_S * (j * step + 1) * self.rate)

    def push(self, audio: np.ndarray) -> None:
        """The next samples: (samples,) or (channels, samples)."""
        from scipy.signal import lfilter

        x = np.atleast_2d(np.asarray(audio, dtype=np.float64))
        if x.shape[0] != self.channels:
            raise ValueError(f"LoudnessMeter was built for {self.channels} channel(s), got {x.shape[0]}")
        if x.shape[1] == 0:
            return
        for i, (b, a, gain) in enumerate(self._stages):
            x, self._zi[i] = lfilter(b, a, x, axis=-1, zi=self._zi[i])
            x = gain * x
        self._power = np.concatenate([self._power, x * x], axis=1)
        self.samples += x.shape[1]
        self._close_blocks()

    def _close_blocks(self, count: int | None = None) -> None:
        """Finish the blocks that end inside the samples pushed so far or, at the end, the first ``count`` (the
        last ones cut short by the end of the signal, as pyloudnorm's slices are); keep what later blocks need."""
        while count is None or len(self._blocks) < count:
            lo, hi = self._bounds(len(self._blocks))
            if count is None and hi > self.samples:
                break
            span = self._power[:, lo - self._start : max(min(hi, self.samples) - self._start, 0)]
            self._blocks.append(span.sum(axis=1) / (self.BLOCK_S * self.rate))
        drop = min(self._bounds(len(self._blocks))[0], self.samples) - self._start
        if drop > 0:
            self._power, self._start = self._power[:, drop:], self._start + drop

    def integrated(self) -> float:
        """Integrated loudness in LUFS of everything pushed (-inf when every block is gated out); call once, last."""
        if self.samples < self.min_samples:
            raise ValueError(f"audio shorter than {self.BLOCK_S} s: too short to measure loudness")
        seconds, step = self.samples / self.rate, 1.0 - self.OVERLAP
        count = int(np.round((seconds - self.BLOCK_S) / (self.BLOCK_S * step))) + 1
        self._close_blocks(count)
        z = np.stack(self._blocks[:count], axis=1)  # (channels, blocks)
        weights = np.asarray(self.WEIGHTS[: self.channels])
        with np.errstate(divide="ignore"):
            block_lufs = -0.691 + 10.0 * np.log10(weights @ z)
            gated = block_lufs >= -70.0  # absolute gate
            if not gated.any():
                return float("-inf")
            relative = -0.691 + 10.0 * np.log10(weights @ z[:, gated].mean(axis=1)) - 10.0
            gated &= block_lufs > relative
            return float(-0.691 + 10.0 * np.log10(weights @ z[:, gated].mean(axis=1))) if gated.any() else float("-inf")


def loudness_gain_db(audio: np.ndarray, sample_rate: int, lufs: float, path: Path | str) -> float:
    """The gain (dB) that brings ``audio`` ((samples,) or (channels, samples)) to ``lufs`` integrated loudness
    (BS.1770 over all channels, :class:`LoudnessMeter`)."""
    meter = LoudnessMeter(sample_rate, 1 if audio.ndim == 1 else audio.shape[0])
    if audio.shape[-1] < meter.min_samples:
        raise DataError(f"{path}: shorter than {meter.BLOCK_S} s, too short to measure loudness (data.loudness_lufs)")
    meter.push(audio)
    loudness = meter.integrated()
    if not np.isfinite(loudness):
        raise DataError(f"{path}: loudness is {loudness} LUFS (all gated blocks silent); cannot normalise")
    return float(lufs) - loudness


# --------------------------------------------------------------------------------------------------- one pair


def _compute(input_path: Path, target_path: Path, opts: PreprocessOptions) -> PreparedPair:
    x, x_rate = read_channels(input_path, opts.channels)
    y, y_rate = read_channels(target_path, opts.channels)
    x = resample(x, x_rate, opts.sample_rate)
    y = resample(y, y_rate, opts.sample_rate)
    empty = np.zeros((x.shape[0], 0), dtype=np.float32)
    if float(np.max(np.abs(x))) <= opts.silence_floor:
        return PreparedPair(empty, empty, silent=True)
    prep = opts.preprocessing
    x, y = prep.filter(x, opts.sample_rate), prep.filter(y, opts.sample_rate)
    lag = 0
    if opts.align:
        lag = find_lag(x.mean(axis=0), y.mean(axis=0), int(round(opts.max_lag_seconds * opts.sample_rate)))
    full, full_target = x.shape[-1], y.shape[-1]
    x, y = apply_lag(x, y, lag)
    kept = x.shape[-1]
    if opts.length_tolerance is not None:
        shifted = (full - max(-lag, 0), full_target - max(lag, 0))  # both lengths once the lag is taken out
        if abs(shifted[0] - shifted[1]) > opts.length_tolerance:
            raise DataError(
                f"{input_path} has {full} samples but {target_path} has {full_target} at {opts.sample_rate} Hz "
                f"(lag {lag}; more than the {opts.length_tolerance}-sample data.length_tolerance apart)"
            )
    elif kept < opts.min_overlap * full:
        raise DataError(
            f"{input_path}: only {kept} of its {full} samples overlap {target_path} "
            f"(lag {lag}, lengths {full} and {full_target} at {opts.sample_rate} Hz); "
            f"less than {opts.min_overlap:.0%}: the files do not match"
        )
    gain_db = prep.gain_db(x, opts.sample_rate, input_path)
    if gain_db:
        x = x * np.float32(10.0 ** (gain_db / 20.0))
    if lag:
        log.info("%s: target %s delayed by %d samples; shifted", input_path, target_path, lag)
    return PreparedPair(
        np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.float32), lag, float(gain_db)
    )


def _file_identity(path: Path) -> list:
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"{path}: file not found") from None
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(input_path: Path, target_path: Path, opts: PreprocessOptions) -> str:
    """Hash of both files' (resolved path, size, mtime) and every option: a change in any recomputes.

    Options added after the first cache format are left out while at their defaults, so the corpora's
    existing cache entries stay valid.
    """
    options = asdict(opts)
    for name, default in (("channels", 1), ("length_tolerance", None)):
        if options[name] == default:
            del options[name]
    payload = {
        "version": CACHE_VERSION,
        "input": _file_identity(input_path),
        "target": _file_identity(target_path),
        "options": options,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cache_file(cache_dir: Path, input_path: Path, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(input_path).stem)[:60]
    return cache_dir / f"{safe}-{key[:20]}.npz"


def prepare_pair(
    input_path: str | Path,
    target_path: str | Path,
    options: PreprocessOptions = PreprocessOptions(),
    cache_dir: str | Path | None = None,
) -> PreparedPair:
    """Preprocess one pair (see the module docstring), reading/writing ``cache_dir`` when given.

    A silent input comes back with ``silent=True`` and empty arrays (the caller skips and warns).
    """
    input_path, target_path = Path(input_path).expanduser(), Path(target_path).expanduser()
    if not input_path.is_file():
        raise DataError(f"{input_path}: input file not found")
    if not target_path.is_file():
        raise DataError(f"{target_path}: missing target for input {input_path}")
    cache_path = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()
        cache_path = _cache_file(cache_dir, input_path, cache_key(input_path, target_path, options))
        if cache_path.is_file():
            try:
                with np.load(cache_path) as data:  # entries of the first format hold 1-D mono arrays
                    return PreparedPair(
                        np.atleast_2d(data["input"].astype(np.float32, copy=False)),
                        np.atleast_2d(data["target"].astype(np.float32, copy=False)),
                        int(data["lag"]),
                        float(data["gain_db"]),
                        bool(data["silent"]),
                        cached=True,
                    )
            except Exception as err:  # a broken cache entry (killed mid-write elsewhere): recompute it
                log.warning("%s: unreadable cache entry (%s); recomputing", cache_path, err)
    result = _compute(input_path, target_path, options)
    if cache_path is not None:
        _write_cache(cache_path, result)
    return result


def _write_cache(cache_path: Path, result: PreparedPair) -> None:
    """Atomic write (concurrent runs or DDP ranks never read a half-written entry); an unwritable cache folder
    (a read-only corpus) only costs a warning: the pair is recomputed next time."""
    tmp = None
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=cache_path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                input=result.input,
                target=result.target,
                lag=np.int64(result.lag),
                gain_db=np.float64(result.gain_db),
                silent=np.bool_(result.silent),
            )
        os.replace(tmp, cache_path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(
            f"{cache_path.parent}: cannot write the preprocessing cache ({err}); set data.cache_dir", stacklevel=3
        )


# --------------------------------------------------------------------------------------------------- augmentation


def augment_input(
    audio: np.ndarray,
    seed: int | Sequence[int],
    noise_snr_db: tuple[float, float] | None = None,
    gain_db: tuple[float, float] | None = None,
) -> np.ndarray:
    """Train-time augmentation of an *input* clip (as the official code): random gain in ``gain_db`` dB, then
    white noise at a random SNR in ``noise_snr_db`` dB relative to the clip's RMS. Deterministic given ``seed``
    (e.g. ``(stream_seed, epoch, clip_index)``); the target is never augmented. Returns a new float32 array.
    """
    rng = np.random.default_rng(seed)
    out = np.array(audio, dtype=np.float32, copy=True)
    if gain_db is not None:
        out *= np.float32(10.0 ** (rng.uniform(*gain_db) / 20.0))
    if noise_snr_db is not None:
        snr = rng.uniform(*noise_snr_db)
        rms = float(np.sqrt(np.mean(out.astype(np.float64) ** 2))) if out.size else 0.0
        if rms > 0.0:
            out += (rng.standard_normal(out.shape) * rms * 10.0 ** (-snr / 20.0)).astype(np.float32)
    return out
