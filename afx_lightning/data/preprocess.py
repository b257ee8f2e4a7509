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
6. optionally loudness-normalise the *input only* to ``loudness_lufs`` (ITU-R BS.1770 via pyloudnorm). This is
   the paper's mastering preprocessing ("loudness normalize each unmastered track to -25 dBFS"): the target
   (the master) keeps its own loudness, since making it louder is part of what the model must learn.

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
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .datasets import DataError, read_audio

log = logging.getLogger(__name__)

CACHE_VERSION = 1
AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff")


@dataclass(frozen=True)
class PreprocessOptions:
    """Everything that changes the preprocessed audio (all of it goes into the cache key)."""

    sample_rate: int = 22050
    channels: int = 1  # 1: downmix to mono; C > 1: keep C-channel files as they are, copy mono files to C
    align: bool = True
    max_lag_seconds: float = 1.0
    min_overlap: float = 0.9
    loudness_lufs: Optional[float] = None
    highpass_hz: Optional[float] = None
    silence_floor: float = 1e-7
    # None: the overlap check above (corpora). A number: input and target may differ by at most this many samples
    # (at the model rate, after alignment), the rest is cut off (paired folders: export tails, encoder padding).
    length_tolerance: Optional[int] = None

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
        if self.highpass_hz is not None and not 0.0 < self.highpass_hz < self.sample_rate / 2:
            raise DataError(f"data.highpass_hz must be in (0, {self.sample_rate / 2}), got {self.highpass_hz}")


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


def highpass(audio: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """2nd-order high-pass (torchaudio biquad, Q = 0.707) along the last axis. The signal is scaled into [-0.5, 0.5] around the
    filter because torchaudio's ``lfilter`` clamps its output to [-1, 1]; the filter is linear, so the scale is undone.
    """
    import torch
    import torchaudio.functional as AF

    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio
    scale = 0.5 / peak
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32) * scale)
    y = AF.highpass_biquad(x, int(sample_rate), float(cutoff_hz))
    return (y.numpy() / scale).astype(np.float32)


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


def loudness_gain_db(audio: np.ndarray, sample_rate: int, lufs: float, path: Path) -> float:
    """The gain (dB) that brings ``audio`` ((samples,) or (channels, samples)) to ``lufs`` integrated loudness
    (BS.1770 over all channels, pyloudnorm)."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)
    if audio.shape[-1] < int(meter.block_size * sample_rate):
        raise DataError(f"{path}: shorter than {meter.block_size} s, too short to measure loudness (data.loudness_lufs)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = audio.astype(np.float64)
        loudness = float(meter.integrated_loudness(data.T if data.ndim == 2 and data.shape[0] > 1 else data.reshape(-1)))
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
    if opts.highpass_hz is not None:
        x = highpass(x, opts.sample_rate, opts.highpass_hz)
        y = highpass(y, opts.sample_rate, opts.highpass_hz)
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
    gain_db = 0.0
    if opts.loudness_lufs is not None:
        gain_db = loudness_gain_db(x, opts.sample_rate, opts.loudness_lufs, input_path)
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
                f, input=result.input, target=result.target, lag=np.int64(result.lag),
                gain_db=np.float64(result.gain_db), silent=np.bool_(result.silent),
            )
        os.replace(tmp, cache_path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"{cache_path.parent}: cannot write the preprocessing cache ({err}); set data.cache_dir", stacklevel=3)


# --------------------------------------------------------------------------------------------------- augmentation


def augment_input(
    audio: np.ndarray,
    seed: int | Sequence[int],
    noise_snr_db: Optional[tuple[float, float]] = None,
    gain_db: Optional[tuple[float, float]] = None,
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
