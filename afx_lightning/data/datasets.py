"""Paired audio clips: what the model learns from (input -> what an engineer or a device made of it).

A :class:`PairedClips` is a list of :class:`Clip` objects held in memory, loaded once on first use. Two sources
ship here: :class:`PairedFolder` (audio files on disk, paired by file name) and :class:`DemoClips` (a generated
known-answer task: synthetic audio rendered through a registered chain with a hidden parameter trajectory).
Every load problem is reported in one line that names the file, because a bad file in a folder of hundreds is
otherwise hard to find.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..constants import FRAME_SIZE, SAMPLE_RATE
from ..effects.base import Chain
from ..effects.params import defaults_normalized
from ..errors import AfxError

if TYPE_CHECKING:
    from .preprocess import PreprocessOptions

ChainSource = str | Callable[..., Chain]


class DataError(AfxError, ValueError):
    """A data problem the user must fix (the message names the file or option)."""


@dataclass(frozen=True)
class Clip:
    """One paired example; ``input`` and ``target`` are float32 arrays shaped (channels, samples)."""

    name: str
    input: np.ndarray
    target: np.ndarray

    def __post_init__(self) -> None:
        if self.input.ndim != 2 or self.input.shape != self.target.shape:
            raise DataError(
                f"clip {self.name!r}: input {self.input.shape} and target {self.target.shape} must be equal (channels, samples)"
            )

    @property
    def num_samples(self) -> int:
        return int(self.input.shape[1])

    @property
    def num_channels(self) -> int:
        return int(self.input.shape[0])


class PairedClips(ABC):
    """A list of paired clips at one sample rate, loaded lazily exactly once and then kept in memory."""

    def __init__(self, sample_rate: int, name: str):
        self.sample_rate = int(sample_rate)
        self.name = name
        self._clips: list[Clip] | None = None

    @abstractmethod
    def _load(self) -> list[Clip]:
        """Produce the clips (called once)."""

    @property
    def clips(self) -> list[Clip]:
        if self._clips is None:
            clips = self._load()
            if not clips:
                raise DataError(f"{self.name}: no clips to use")
            channels = {c.num_channels for c in clips}
            if len(channels) > 1:
                raise DataError(f"{self.name}: clips have different channel counts {sorted(channels)}")
            self._clips = clips
        return self._clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Clip:
        return self.clips[index]

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    @property
    def num_channels(self) -> int:
        return self.clips[0].num_channels

    @property
    def total_seconds(self) -> float:
        return sum(c.num_samples for c in self.clips) / self.sample_rate

    def describe(self) -> str:
        return f"{self.name}: {len(self)} clips, {self.total_seconds:.1f} s, {self.num_channels} ch @ {self.sample_rate} Hz"


class ArrayClips(PairedClips):
    """Clips already in memory (tests, notebooks, users with their own loaders)."""

    def __init__(self, clips: Sequence[Clip], sample_rate: int, name: str = "arrays"):
        super().__init__(sample_rate, name)
        self._given = list(clips)

    def _load(self) -> list[Clip]:
        return self._given


# --------------------------------------------------------------------------------------------------- folders


def _check_wav_truncation(path: Path) -> None:
    """libsndfile reads a WAV cut short without complaint (fewer frames); check the data chunk size ourselves."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return  # not a plain RIFF/WAVE (RF64, W64, ...): leave the judgement to libsndfile
        fmt = "<I" if head[:4] == b"RIFF" else ">I"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                break
            chunk_id, chunk_size = chunk[:4], struct.unpack(fmt, chunk[4:])[0]
            if chunk_id == b"data":
                if 0 < chunk_size < 0xFFFFFFFF and pos + 8 + chunk_size > size:
                    raise DataError(
                        f"{path}: truncated WAV (header declares {chunk_size} data bytes, file has {size - pos - 8})"
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A file as float32 ``[channels, samples]`` and its rate; a one-line :class:`DataError` naming the file for a
    missing, truncated, unreadable or empty file or NaN/Inf samples. The one reader of whole files."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".wav":
        _check_wav_truncation(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile reports non-audio and broken files in several exception types
        message = " ".join(str(err).split())
        raise DataError(f"{path}: not a readable audio file ({message})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: contains no samples (empty audio file)")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: contains NaN or Inf samples")
    return np.ascontiguousarray(data.T), int(rate)


class PairedFolder(PairedClips):
    """A user's paired folder: ``root/input/*`` ↔ ``root/target/*`` split into train/val/test by
    :func:`.corpora.split_files`, or already split as ``root/{train,val,test}/{input,target}/``; matched by file name.

    Files come at any rate and channel count: they are converted (resampled with torchaudio, downmixed to mono
    when ``channels`` is 1, a mono file copied to each channel otherwise) and cached exactly as the corpora are,
    by :func:`.preprocess.prepare_pair` (in ``cache_dir``, default ``root/.afx_cache``). Lengths may differ by up to
    ``length_tolerance`` samples at the model rate (export tails, encoder padding): both are then cut to the
    shorter. Clips whose input is silent carry no information and are skipped with a warning.
    ``options`` replaces the preprocessing built from ``sample_rate``, ``channels`` and ``length_tolerance``
    (e.g. to align or loudness-normalise, as the data module does from its options).
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        input_dir: str = "input",
        target_dir: str = "target",
        sample_rate: int = SAMPLE_RATE,
        channels: int = 1,
        length_tolerance: int = 1024,
        silence_floor: float = 1e-7,
        split_fractions: Sequence[float] | None = None,
        cache_dir: str | Path | None = None,
        options: PreprocessOptions | None = None,
    ):
        from .preprocess import PreprocessOptions

        if options is None:
            options = PreprocessOptions(
                sample_rate=sample_rate,
                channels=channels,
                align=False,
                length_tolerance=length_tolerance,
                silence_floor=silence_floor,
            )
        super().__init__(options.sample_rate, f"{root}/{split}")
        if root is None:
            raise DataError(
                "data.root is not set: point it at a folder with input/ and target/ (or use data.dataset=demo)"
            )
        self.root = Path(root).expanduser()
        self.split = split
        self.input_dir = input_dir
        self.target_dir = target_dir
        self.split_fractions = split_fractions
        self.options = options
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else self.root / ".afx_cache"

    def _load(self) -> list[Clip]:
        from .corpora import CorpusClips, folder_layout, folder_pairs

        pairs = [
            p
            for p in folder_pairs(self.root, self.input_dir, self.target_dir, self.split_fractions)
            if p.split == self.split
        ]
        if not pairs:
            if folder_layout(self.root) == "split":
                raise DataError(
                    f"{self.root / self.split / self.input_dir} does not exist (data.root has no {self.split}/ split)"
                )
            raise DataError(
                f"{self.root / self.input_dir}: no files fall in the {self.split} split (data.split_fractions)"
            )
        return CorpusClips(pairs, self.options, self.cache_dir, name=self.name)._load()


# --------------------------------------------------------------------------------------------------- demo task


def _db(db: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(db) / 20.0)


def synthesize(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Mono test audio with dynamics worth compressing: decaying harmonic notes, noise bursts, level changes."""
    from scipy.signal import lfilter

    seconds = num_samples / sample_rate
    out = np.zeros(num_samples, dtype=np.float64)
    for _ in range(1 + rng.poisson(1.5 * seconds)):  # notes
        start = int(rng.uniform(0.0, 0.95) * num_samples)
        f0 = 55.0 * 2.0 ** rng.uniform(0.0, 4.0)
        decay = rng.uniform(0.08, 1.2)
        length = min(num_samples - start, int(5 * decay * sample_rate))
        t = np.arange(length) / sample_rate
        harmonics = np.arange(1, rng.integers(3, 11))
        harmonics = harmonics[harmonics * f0 < 0.45 * sample_rate]
        weights = rng.uniform(0.3, 1.0, harmonics.size) / harmonics ** rng.uniform(0.5, 2.0)
        phases = rng.uniform(0, 2 * np.pi, harmonics.size)
        tone = (weights[:, None] * np.sin(2 * np.pi * f0 * harmonics[:, None] * t + phases[:, None])).sum(0)
        envelope = (1.0 - np.exp(-t / 0.004)) * np.exp(-t / decay)
        out[start : start + length] += _db(rng.uniform(-30, 0)) * envelope * tone / weights.sum()
    for _ in range(rng.poisson(0.5 * seconds)):  # coloured noise bursts
        length = int(rng.uniform(0.02, 0.3) * sample_rate)
        start = int(rng.integers(0, max(1, num_samples - length)))
        length = min(length, num_samples - start)
        noise = lfilter([1.0], [1.0, -rng.uniform(0.0, 0.95)], rng.standard_normal(length))
        out[start : start + length] += _db(rng.uniform(-36, -6)) * np.hanning(length) * noise / (np.std(noise) + 1e-9)
    # slow level changes between random knots, so the right compression varies along a clip
    knots = np.sort(np.concatenate([[0.0, seconds], rng.uniform(0, seconds, int(seconds / 0.8))]))
    gain = _db(np.interp(np.arange(num_samples) / sample_rate, knots, rng.uniform(-18, 0, knots.size)))
    out = out * gain + 1e-4 * rng.standard_normal(num_samples)
    out *= _db(rng.uniform(-12, -1)) / (np.max(np.abs(out)) + 1e-12)
    return out.astype(np.float32)


def level_driven_trajectory(
    audio: np.ndarray, base: np.ndarray, weights: np.ndarray, block_size: int, depth: float, smooth_frames: int = 11
) -> np.ndarray:
    """(frames, P) curves in [0, 1]: ``base + depth * weights * level(t)``.

    ``level`` is the input's frame RMS in dB, smoothed over ``smooth_frames`` frames (~0.5 s, well inside the
    encoder's context) and mapped so -30 dBFS -> 0 and +-20 dB around it -> +-1. The hidden parameters are
    thus a function of the audio the encoder hears: the task is learnable, not just a noisy average.
    """
    mono = audio.mean(axis=0)
    frames = -(-mono.size // block_size)
    padded = np.zeros(frames * block_size, dtype=np.float64)
    padded[: mono.size] = mono
    rms_db = 10.0 * np.log10((padded.reshape(frames, block_size) ** 2).mean(axis=1) + 1e-10)
    kernel = np.ones(smooth_frames) / smooth_frames
    smoothed = np.convolve(np.pad(rms_db, smooth_frames // 2, mode="edge"), kernel, mode="valid")[:frames]
    level = np.clip((smoothed + 30.0) / 20.0, -1.0, 1.0)
    return np.clip(base[None, :] + depth * weights[None, :] * level[:, None], 0.0, 1.0).astype(np.float32)


def render(chain: Chain, audio: np.ndarray, trajectory: np.ndarray, block_size: int) -> np.ndarray:
    """Stream ``audio`` (C, T) through a freshly reset chain, one block per trajectory row (the last one padded)."""
    chain.reset()
    channels, total = audio.shape
    out = np.zeros_like(audio)
    block = np.zeros((channels, block_size), dtype=np.float32)
    for k in range(trajectory.shape[0]):
        start = k * block_size
        n = min(block_size, total - start)
        block[:] = 0.0
        block[:, :n] = audio[:, start : start + n]
        out[:, start : start + n] = chain.process(block, trajectory[k])[:, :n]
    return out


class DemoClips(PairedClips):
    """A generated known-answer task: synthetic input rendered through a chain with a hidden trajectory.

    The trajectory is a fixed base point plus ``depth`` times a per-parameter weight times the input's smoothed
    level (:func:`level_driven_trajectory`), so the right parameters can be heard in the context. The base
    point moves ``spread`` of the way from the chain's defaults (usually a transparent setting) toward a random
    point drawn from ``task_seed``, so train/val/test share one task and the targets stay within a plausible
    level of the input (a uniform random point often drives a gate or mastering chain 30 dB down). ``trajectories[i]`` holds clip i's parameters per
    ``block_size`` frame, aligned with the frames the slot streams cut. Clip lengths vary by
    +-``length_jitter`` so slots do not all swap clips on the same step.
    """

    def __init__(
        self,
        chain: ChainSource = "pb_mb_compressor",
        num_clips: int = 8,
        clip_seconds: float = 6.0,
        sample_rate: int = SAMPLE_RATE,
        seed: int = 0,
        task_seed: int | None = None,
        block_size: int = FRAME_SIZE,
        depth: float = 0.1,
        spread: float = 0.3,
        length_jitter: float = 0.25,
        name: str | None = None,
    ):
        chain_name = chain if isinstance(chain, str) else getattr(chain, "__name__", "custom chain")
        super().__init__(sample_rate, name or f"demo[{chain_name}, seed {seed}]")
        if num_clips < 1 or clip_seconds <= 0:
            raise DataError(f"demo data needs num_clips >= 1 and clip_seconds > 0, got {num_clips} and {clip_seconds}")
        self.chain = chain
        self.num_clips = int(num_clips)
        self.clip_seconds = float(clip_seconds)
        self.seed = int(seed)
        self.task_seed = int(seed if task_seed is None else task_seed)
        self.block_size = int(block_size)
        self.depth = float(depth)
        self.spread = float(spread)
        self.length_jitter = float(length_jitter)
        self._trajectories: list[np.ndarray] = []
        self.base: np.ndarray | None = None
        self.param_names: list[str] = []

    def _build_chain(self) -> Chain:
        if isinstance(self.chain, str):
            from ..registry import build_chain

            return build_chain(self.chain, sample_rate=self.sample_rate, block_size=self.block_size)
        return self.chain(sample_rate=self.sample_rate, block_size=self.block_size)

    @property
    def trajectories(self) -> list[np.ndarray]:
        """Per clip, the hidden parameters in [0, 1], shaped (frames, P); frame k covers samples k*N .. (k+1)*N."""
        _ = self.clips
        return self._trajectories

    def _load(self) -> list[Clip]:
        chain = self._build_chain()
        try:
            self.param_names = list(chain.param_names)
            defaults = defaults_normalized(chain.params).astype(np.float64)
            task = np.random.default_rng([self.task_seed, 0xBA5E])
            goal = task.uniform(0.0, 1.0, chain.num_params)
            self.base = defaults + self.spread * (goal - defaults)
            self.weights = task.choice([-1.0, 1.0], chain.num_params) * task.uniform(0.5, 1.0, chain.num_params)
            streams = np.random.SeedSequence([self.seed, 0xDE40]).spawn(self.num_clips)
            clips, trajectories = [], []
            for i, seq in enumerate(streams):
                rng = np.random.default_rng(seq)
                seconds = self.clip_seconds * (1.0 + self.length_jitter * rng.uniform(-1.0, 1.0))
                total = max(self.block_size, int(round(seconds * self.sample_rate)))
                x = np.repeat(synthesize(rng, total, self.sample_rate)[None, :], chain.channels, axis=0)
                theta = level_driven_trajectory(x, self.base, self.weights, self.block_size, self.depth)
                y = render(chain, x, theta, self.block_size)
                if not np.isfinite(y).all():
                    raise DataError(f"{self.name}: the chain produced NaN/Inf on clip {i}")
                trajectories.append(theta)
                clips.append(Clip(f"demo{self.seed}_{i:03d}", x, y))
            self._trajectories = trajectories
            return clips
        finally:
            chain.close()
