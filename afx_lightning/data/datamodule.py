"""The LightningDataModule: paired clips -> slot streams -> whole batches for the black-box layer.

Every batch is a dict of tensors::

    context  float32 (R, C, context_size)  the encoder's view, frame at offset context_before, zero-padded at clip edges
    frame    float32 (R, C, frame_size)    input[pos : pos + N]
    target   float32 (R, C, frame_size)    target[pos : pos + N]
    slot     int64   (R,)                  which slot (set of plugin instances) the row belongs to
    fresh    bool    (R,)                  the slot starts a new clip: reset its instances before rendering
    clip     int64   (R,)                  clip index in its split
    position int64   (R,)                  frame start, in samples

Training batches always have R = batch_size rows with slot = arange(batch_size). Evaluation batches drop the
rows of slots that have nothing left to play, so the last ones are smaller; ``slot`` then lists only the
playing slots (never renumbered), which keeps each row on the instances that heard its clip so far.

Exact resume. A rank's training stream is a pure function of ``(clips, batch_size, seed, rank, world_size)``
and of the number of batches it has played, so a checkpoint stores only that count, taken from the trainer
(``global_step * accumulate_grad_batches``, not the live stream: the loader may have fetched ahead), and a resume
rebuilds the stream and fast-forwards it (scheduling only, no audio: about 0.3 s per million slot-steps). That
is exact when every optimizer step consumes ``accumulate_grad_batches`` batches and checkpoints are written at
optimizer-step boundaries, as ``ModelCheckpoint`` does. Epochs end where the global batch count reaches a
multiple of ``steps_per_epoch``, so a resumed run keeps the same epoch boundaries.

DDP. Each rank trains on its own stream: a disjoint shard of the training clips (playable clip ``i`` to rank
``i % world_size``; fewer clips than ranks: a warning and all clips on every rank) and a generator seeded by
``(seed, rank)``; rank and world size come from the trainer when the stream is built. Validation and test
loaders likewise play a disjoint shard of their clips per rank (log their metrics with ``sync_dist=True``).
Lightning writes the data module state of rank 0 only; since the state is a batch count, every rank resumes
its own stream from it. Resuming with another world size keeps the batch count and epoch boundaries but not the
data order (a warning says so).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from .corpora import (
    DEFAULT_ROOTS,
    CorpusClips,
    PairSpec,
    check_fractions,
    corpus_pairs,
    default_cache_dir,
    folder_layout,
)
from .datasets import DataError, DemoClips, PairedClips
from .preprocess import Preprocessing, PreprocessOptions
from .streams import SlotStream, StreamStep, shard_frame_counts

SPLITS = ("train", "val", "test")
CORPORA = ("daps", "idmt", "mixes")
MISSING_ROOT = "data.root is not set: point it at a folder with input/ and target/ (or use data.dataset=demo)"
Batch = dict[str, torch.Tensor]


def _range_arg(name: str, value: Optional[list[float]]) -> Optional[tuple[float, float]]:
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


class _EvalBatches(IterableDataset):
    """A finite, repeatable pass over one split: every iteration replays the same schedule from the start."""

    def __init__(self, frame_counts: list[int], num_slots: int, make_batch: Callable[[StreamStep], Batch]):
        self._frame_counts = frame_counts
        self._num_slots = num_slots
        self._make_batch = make_batch
        self._length = SlotStream(frame_counts, num_slots, mode="eval").count_steps()

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Batch]:
        for step in SlotStream(self._frame_counts, self._num_slots, mode="eval"):
            yield self._make_batch(step)


class _TrainBatches(IterableDataset):
    """One epoch of the data module's persistent training stream."""

    def __init__(self, owner: "AudioFxDataModule"):
        self._owner = owner

    def __len__(self) -> int:
        return self._owner.steps_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        return self._owner._train_epoch()


class _ResumableLoader(DataLoader):
    """A DataLoader that Lightning sees as resumable (so it does not warn about mid-epoch checkpoints).

    Its state is the data module's, so with the data module attached both checkpoint copies are equal. Without
    the data module (``trainer.fit(model, train_dataloaders=...)``) the consumed-batch count is unknown, so it
    saves nothing rather than a count one prefetched batch ahead.
    """

    def __init__(self, dataset: _TrainBatches, owner: "AudioFxDataModule"):
        super().__init__(dataset, batch_size=None, num_workers=0)
        self._owner = owner

    def state_dict(self) -> dict[str, Any]:
        if self._owner.trainer is None:
            warnings.warn(
                "data: pass the data module as trainer.fit(datamodule=...) to checkpoint the training stream; "
                "a resume will restart it",
                stacklevel=2,
            )
            return {}
        return self._owner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._owner.load_state_dict(state)


class AudioFxDataModule(pl.LightningDataModule):
    """Paired audio for DeepAFx training, cut into per-slot consecutive frames.

    Args:
        dataset: ``demo`` (generated known-answer task through ``demo_chain``), ``folder`` (audio pairs under
            ``root``), or a public corpus as unpacked: ``daps``, ``idmt`` (any dry folder + processed folder) or
            ``mixes`` (unmastered/mastered tracks); layouts in :mod:`afx_lightning.data.corpora`.
        root: for ``folder``: a folder with ``input/`` and ``target/`` (split into train/val/test by
            ``split_fractions``), or already split into ``train/``, ``val/`` and optionally ``test/``, each holding
            ``input/`` and ``target/``; files paired by name. For the corpora: the unpacked corpus folder; unset
            means ``data/daps``, ``data/idmt`` or ``data/mixes`` under the folder the run starts in. Checked when
            the data module is built (before any logger starts): a missing corpus is named with its download.
        demo_chain: for ``demo``: the registered chain that renders the targets.
        batch_size: M, the number of training slots (sets of plugin instances).
        val_batch_size: slots used for validation and test.
        steps_per_epoch: training batches per epoch.
        frame_size: N, samples per frame (and the plugin block size).
        context_size: samples the encoder sees around each frame; ``(context_size - frame_size) // 2`` lie before it.
        sample_rate: the model's rate; files at other rates are resampled (cached, see below).
        channels: 1 downmixes files to mono; otherwise files keep exactly this many channels (a mono file is
            copied to each; other counts are an error naming the file). The corpora are mono.
        seed: training stream shuffling and demo data generation.
        demo_clips, demo_val_clips, demo_test_clips, demo_seconds: demo split sizes and clip length.
        demo_variation: how far the hidden parameters wander around their base point (in [0, 1] units).
        demo_spread: how far the base point lies from the chain defaults toward a random point (0..1).
        input_dir, target_dir: sub-folder names inside each split of ``root`` (``folder``) or inside ``root``
            (``daps``, ``mixes``); unset means the dataset's own: input/target, cleanraw/clean, unmastered/mastered.
        length_tolerance: for ``folder``: input/target length difference (samples at ``sample_rate``) trimmed
            silently; more is an error. The corpora check instead that the pair overlaps by 90 %.

    Preprocessing (``folder`` and the corpora ``daps``, ``idmt``, ``mixes``: files are read, converted to
    ``channels``, resampled to ``sample_rate`` and preprocessed once, then cached, see
    :mod:`afx_lightning.data.preprocess`):
        cache_dir: where preprocessed pairs are cached (default ``<root>/.afx_cache``); keyed by file path, size,
            mtime and every option below, so a changed file or option recomputes.
        align: time-align each target to its input by cross-correlation (within +-``max_lag_seconds``); unset:
            on for the corpora, off for ``folder`` (a user's pairs are taken as already aligned).
        max_lag_seconds: the alignment search range.
        loudness_lufs: normalise each *input* to this integrated loudness (the paper: -25 for mastering); the
            target keeps its loudness. None: no normalisation.
        highpass_hz: 2nd-order high-pass on input and target (e.g. 60 for speech). None: off.
        input_glob, target_glob, pair_key: for ``idmt``: globs relative to ``root`` and the regex whose group
            ``key`` (or group 1, or whole match) in a file stem pairs an input with a target.
        split_fractions: ``[train, val, test]`` fractions (summing to 1, train and val > 0) for ``folder`` with
            just ``input/`` and ``target/`` (default 0.8/0.1/0.1; whole files, ordered by a hash of their name, see
            :func:`afx_lightning.data.corpora.split_files`) and for the hash-based splits of ``idmt`` and ``mixes``
            (defaults 0.8/0.1/0.1 and 0.81/0.095/0.095); DAPS splits by speaker (val f10/m10, test f9/m9).

    Train-time augmentation (off by default; training batches only, never validation/test/predict):
        augment_gain_db: ``[lo, hi]``: every play of a clip gets a random gain in dB.
        augment_noise_snr_db: ``[lo, hi]``: every play of a clip gets white noise at a random SNR in dB relative
            to the clip's RMS (after the gain), independent per channel.
        Only the *input* (``context`` and ``frame``) is augmented; the ``target`` is left as is. That is what
        the official DeepAFx code does (noise on the input only, so the model learns to predict robust
        parameters for noisy inputs while still aiming at the clean target). The semantics are those of
        :func:`afx_lightning.data.preprocess.augment_input`, computed block-wise so the context and the frame
        of a row see the same augmented signal. A *play* is one pass of a slot through a clip, identified by
        ``(seed, rank, clip, slot, step the play started)``: the same clip dealt again gets a new draw, and the
        draws are a pure function of the stream state, so a resumed run makes identical batches.

    Prediction (``afx predict``; the same code path as ``afx process``, see ``DeepAFx.predict_step``):
        predict_files: input files; each is processed whole into ``predict_output_dir`` under its own name.
        predict_output_dir: an existing folder for the outputs.
        predict_overwrite: replace existing outputs.
        predict_smoothing_hz: low-pass cutoff of the parameter curves (``afx process --smoothing-hz``).
    """

    def __init__(
        self,
        dataset: str = "demo",
        root: Optional[str] = None,
        demo_chain: str = "pb_mb_compressor",
        batch_size: int = 100,
        val_batch_size: int = 8,
        steps_per_epoch: int = 1000,
        frame_size: int = 1024,
        context_size: int = 40960,
        sample_rate: int = 22050,
        channels: int = 1,
        seed: int = 0,
        demo_clips: int = 8,
        demo_val_clips: int = 4,
        demo_test_clips: int = 4,
        demo_seconds: float = 6.0,
        demo_variation: float = 0.1,
        demo_spread: float = 0.3,
        input_dir: Optional[str] = None,
        target_dir: Optional[str] = None,
        length_tolerance: int = 1024,
        cache_dir: Optional[str] = None,
        align: Optional[bool] = None,
        max_lag_seconds: float = 1.0,
        loudness_lufs: Optional[float] = None,
        highpass_hz: Optional[float] = None,
        input_glob: Optional[str] = None,
        target_glob: Optional[str] = None,
        pair_key: Optional[str] = None,
        split_fractions: Optional[list[float]] = None,
        augment_noise_snr_db: Optional[list[float]] = None,
        augment_gain_db: Optional[list[float]] = None,
        predict_files: Optional[list[str]] = None,
        predict_output_dir: Optional[str] = None,
        predict_overwrite: bool = False,
        predict_smoothing_hz: float = 2.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = root if root is not None else DEFAULT_ROOTS.get(dataset)
        self.demo_chain = demo_chain
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.frame_size = int(frame_size)
        self.context_size = int(context_size)
        self._sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.seed = int(seed)
        self.demo_clips = int(demo_clips)
        self.demo_val_clips = int(demo_val_clips)
        self.demo_test_clips = int(demo_test_clips)
        self.demo_seconds = float(demo_seconds)
        self.demo_variation = float(demo_variation)
        self.demo_spread = float(demo_spread)
        default_dirs = {"daps": ("cleanraw", "clean"), "mixes": ("unmastered", "mastered")}.get(dataset, ("input", "target"))
        self.input_dir = input_dir or default_dirs[0]
        self.target_dir = target_dir or default_dirs[1]
        self.length_tolerance = int(length_tolerance)
        self.cache_dir = cache_dir
        self.align = (dataset != "folder") if align is None else bool(align)
        self.max_lag_seconds = float(max_lag_seconds)
        self.loudness_lufs = None if loudness_lufs is None else float(loudness_lufs)
        self.highpass_hz = None if highpass_hz is None else float(highpass_hz)
        self._preprocessing = Preprocessing(highpass_hz=self.highpass_hz, loudness_lufs=self.loudness_lufs)
        self.input_glob = input_glob
        self.target_glob = target_glob
        self.pair_key = pair_key
        self.split_fractions = split_fractions  # checked (and made floats) by _check_args
        self.augment_noise_snr_db = _range_arg("augment_noise_snr_db", augment_noise_snr_db)
        self.augment_gain_db = _range_arg("augment_gain_db", augment_gain_db)
        self.predict_files = [str(f) for f in predict_files] if predict_files is not None else None
        self.predict_output_dir = predict_output_dir
        self.predict_overwrite = bool(predict_overwrite)
        self.predict_smoothing_hz = float(predict_smoothing_hz)
        self._clip_rms: dict[int, float] = {}
        self._noise_blocks: dict[tuple, np.ndarray] = {}  # the last training batch's noise blocks (reused)
        self._corpus: Optional[list[PairSpec]] = None  # all pairs of a corpus or folder, listed once (_check_args)
        self._check_args()
        self._splits: dict[str, Optional[PairedClips]] = {}
        self._given: dict[str, Optional[PairedClips]] = {}
        self._train: Optional[SlotStream] = None
        self._train_placement: tuple[int, int] = (0, 1)  # (rank, world size) the training stream was built for
        self._pending: Optional[dict[str, Any]] = None

    @classmethod
    def from_clips(
        cls,
        train: PairedClips,
        val: Optional[PairedClips] = None,
        test: Optional[PairedClips] = None,
        **kwargs: Any,
    ) -> "AudioFxDataModule":
        """A data module over clips built in code (tests, notebooks); other options as in the constructor."""
        kwargs.setdefault("sample_rate", train.sample_rate)
        dm = cls(**kwargs)
        dm._given = {"train": train, "val": val, "test": test}
        return dm

    # ------------------------------------------------------------------------------------------ config

    @property
    def context_before(self) -> int:
        """Samples of context before the frame start (19 968 for the paper's 40 960 / 1024)."""
        return (self.context_size - self.frame_size) // 2

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def num_channels(self) -> int:
        return self._split("train").num_channels

    def _check_args(self) -> None:
        """Every option, and for files on disk their layout and pairing (a directory listing, no audio read):
        called when the data module is built, so a bad run stops before any logger or worker starts."""
        if self.dataset not in ("demo", "folder", *CORPORA):
            raise DataError(f"data.dataset must be 'demo', 'folder', 'daps', 'idmt' or 'mixes', got {self.dataset!r}")
        if self.split_fractions is not None:
            self.split_fractions = list(check_fractions(self.split_fractions))
            if self.dataset in ("demo", "daps"):  # a folder already split says so itself (folder_pairs)
                warnings.warn(f"data.split_fractions is not used by data.dataset={self.dataset}", stacklevel=2)
        if self.dataset == "demo" and self._preprocessing.active:
            warnings.warn("data.highpass_hz / data.loudness_lufs apply to files: data.dataset=demo ignores them", stacklevel=2)
        if self.dataset in CORPORA and self.channels != 1:
            raise DataError(f"data.dataset={self.dataset} downmixes to mono: data.channels must be 1, got {self.channels}")
        positive = {
            "batch_size": self.batch_size,
            "val_batch_size": self.val_batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "frame_size": self.frame_size,
            "sample_rate": self._sample_rate,
            "channels": self.channels,
        }
        for name, value in positive.items():
            if value < 1:
                raise DataError(f"data.{name} must be at least 1, got {value}")
        if self.context_size < self.frame_size:
            raise DataError(f"data.context_size ({self.context_size}) must be at least data.frame_size ({self.frame_size})")
        if self.dataset == "folder" and self.root is None:
            raise DataError(MISSING_ROOT)
        if self.dataset != "demo" and self.root is not None:
            root = Path(self.root).expanduser()
            if root.exists() and not root.is_dir():
                raise DataError(f"data.root {self.root} is not a folder (data.dataset={self.dataset})")
            self._list_pairs()

    def _make_split(self, split: str) -> Optional[PairedClips]:
        if self._given:
            return self._given.get(split)
        if self.dataset != "demo":
            return self._corpus_split(split)
        counts = {"train": self.demo_clips, "val": self.demo_val_clips, "test": self.demo_test_clips}
        if counts[split] < 1:
            return None
        return DemoClips(
            self.demo_chain,
            num_clips=counts[split],
            clip_seconds=self.demo_seconds,
            sample_rate=self._sample_rate,
            seed=3 * self.seed + SPLITS.index(split),  # distinct audio per split ...
            task_seed=self.seed,  # ... one hidden task for all of them
            block_size=self.frame_size,
            depth=self.demo_variation,
            spread=self.demo_spread,
            name=f"demo {split} [{self.demo_chain}]",
        )

    def _list_pairs(self) -> list[PairSpec]:
        """All pairs of the corpus or folder with their splits, listed once."""
        if self._corpus is None:
            if self.root is None:
                raise DataError(MISSING_ROOT)
            self._corpus = corpus_pairs(
                self.dataset, self.root, self.input_dir, self.target_dir,
                self.input_glob, self.target_glob, self.pair_key, self.split_fractions,
            )
        return self._corpus

    @property
    def preprocessing(self) -> Preprocessing:
        """What this data's inputs went through: the checkpoint records it and inference repeats it. Demo and
        in-code clips are used as they are (data.highpass_hz / loudness_lufs apply to files)."""
        return Preprocessing() if self._given or self.dataset == "demo" else self._preprocessing

    def preprocess_options(self) -> PreprocessOptions:
        """What turns this data's files into clips (all of it keys the cache)."""
        return PreprocessOptions(
            sample_rate=self._sample_rate, channels=self.channels, align=self.align,
            max_lag_seconds=self.max_lag_seconds, **self._preprocessing.to_config(),
            length_tolerance=self.length_tolerance if self.dataset == "folder" else None,
        )

    def _corpus_split(self, split: str) -> Optional[PairedClips]:
        """One split of a corpus or paired folder, preprocessed with caching; an empty split is None for test (not
        every dataset has one) and otherwise an error naming the data."""
        pairs = [p for p in self._list_pairs() if p.split == split]
        if not pairs:
            if split == "test":
                return None
            total = len(self._corpus or [])
            if self.dataset != "folder":
                raise DataError(f"data: the {self.dataset} corpus at {self.root} has no {split} pairs ({total} pairs in all)")
            if folder_layout(self.root) == "split":
                raise DataError(f"data: no {split} split ({Path(self.root).expanduser() / split} does not exist)")
            raise DataError(
                f"data: no {split} files in {self.root}: {total} pair(s) in all, split by data.split_fractions "
                f"{self.split_fractions or [0.8, 0.1, 0.1]} (a val split needs at least 2 pairs)"
            )
        cache = self.cache_dir if self.cache_dir is not None else default_cache_dir(self.root)
        return CorpusClips(pairs, self.preprocess_options(), cache, name=f"{self.dataset} {split}")

    def _split(self, split: str, required: bool = True) -> Optional[PairedClips]:
        """The clips of a split, loaded and checked once."""
        if split not in self._splits:
            clips = self._make_split(split)
            if clips is not None:
                self._check_clips(split, clips)
            self._splits[split] = clips
        clips = self._splits[split]
        if clips is None and required:
            if self._given:
                where = "none given"
            elif self.dataset != "demo":
                where = f"no {split} pairs in {self.root}"
            else:
                where = f"data.demo_{split}_clips is 0" if split != "train" else "data.demo_clips is 0"
            raise DataError(f"data: no {split} split ({where})")
        return clips

    def _check_clips(self, split: str, clips: PairedClips) -> None:
        if clips.sample_rate != self._sample_rate:
            raise DataError(f"data: {split} clips are at {clips.sample_rate} Hz but data.sample_rate is {self._sample_rate} Hz")
        if not any(c.num_samples >= self.frame_size for c in clips):
            raise DataError(f"data: no {split} clip is at least one frame ({self.frame_size} samples) long")
        train = self._splits.get("train")
        if split != "train" and train is not None and clips.num_channels != train.num_channels:
            raise DataError(f"data: {split} clips have {clips.num_channels} channels, train clips {train.num_channels}")

    def setup(self, stage: str) -> None:
        """Load (or render) the splits a stage needs, failing early with one-line errors."""
        self._check_args()
        if stage == "predict":
            self.check_predict()
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}.get(stage, ())
        for split in needed:
            self._split(split)
        self._check_model_channels()
        if stage == "fit":
            self._train_stream()

    def _check_model_channels(self) -> None:
        """Clips of another channel count than the model was built for would fail deep in the plugin pool: say so
        here, naming the option (the CLI links data.channels to model.channels; a model built in code may differ)."""
        fx = getattr(getattr(getattr(self, "trainer", None), "lightning_module", None), "fx", None)
        want = getattr(fx, "channels", None)
        loaded = [c for c in self._splits.values() if c is not None]
        if not isinstance(want, int) or not loaded or loaded[0].num_channels == want:
            return
        raise DataError(
            f"data.channels is {self.channels} and the clips have {loaded[0].num_channels} channel(s), but the model "
            f"(chain {fx.info.name!r}) was built for {want}: set model.channels: {loaded[0].num_channels} (the CLI "
            "links it to data.channels)"
        )

    def describe(self) -> str:
        """One line for logs: source, split sizes, layout."""
        source = "clips given in code" if self._given else (
            f"demo chain {self.demo_chain}" if self.dataset == "demo" else f"{self.dataset} {self.root}"
        )
        parts = []
        for split in SPLITS:
            clips = self._splits.get(split)
            if clips is not None:
                parts.append(f"{split} {len(clips)} clips/{clips.total_seconds:.1f} s")
        sizes = ", ".join(parts) or "not loaded yet"
        channels = f"{self._splits['train'].num_channels} ch" if self._splits.get("train") is not None else f"{self.channels} ch"
        return (
            f"data: {source} | {sizes} | {channels} @ {self._sample_rate} Hz | M={self.batch_size} slots "
            f"(val {self.val_batch_size}) x N={self.frame_size}, context {self.context_size} "
            f"({self.context_before} before) | {self.steps_per_epoch} steps/epoch"
        )

    @property
    def train_clips(self) -> PairedClips:
        return self._split("train")

    @property
    def val_clips(self) -> PairedClips:
        return self._split("val")

    @property
    def test_clips(self) -> PairedClips:
        return self._split("test")

    # ------------------------------------------------------------------------------------------ batches

    def _frame_counts(self, clips: PairedClips) -> list[int]:
        return [c.num_samples // self.frame_size for c in clips]

    def make_batch(self, clips: PairedClips, step: StreamStep, train_step: Optional[int] = None) -> Batch:
        """Cut the audio a schedule step asks for.

        ``train_step`` (the training stream's step index of this batch) turns on the input augmentation when
        configured; evaluation batches never pass it.
        """
        rows, n, width, before = len(step), self.frame_size, self.context_size, self.context_before
        channels = clips.num_channels
        context = np.zeros((rows, channels, width), dtype=np.float32)
        frame = np.empty((rows, channels, n), dtype=np.float32)
        target = np.empty((rows, channels, n), dtype=np.float32)
        positions = step.frames * n
        for r, (c, pos) in enumerate(zip(step.clips.tolist(), positions.tolist())):
            clip = clips[c]
            frame[r] = clip.input[:, pos : pos + n]
            target[r] = clip.target[:, pos : pos + n]
            lo = pos - before
            a, b = max(lo, 0), min(lo + width, clip.num_samples)
            context[r, :, a - lo : b - lo] = clip.input[:, a:b]
        if train_step is not None and (self.augment_gain_db is not None or self.augment_noise_snr_db is not None):
            self._augment(clips, step, train_step, context, frame)
        return {
            "context": torch.from_numpy(context),
            "frame": torch.from_numpy(frame),
            "target": torch.from_numpy(target),
            "slot": torch.from_numpy(step.slots.copy()),
            "fresh": torch.from_numpy(step.fresh.copy()),
            "clip": torch.from_numpy(step.clips.copy()),
            "position": torch.from_numpy(positions),
        }

    def _augment(self, clips: PairedClips, step: StreamStep, train_step: int, context: np.ndarray,
                 frame: np.ndarray) -> None:
        """Gain and noise on the rows' input in place (see the class docstring); noise comes in frame-sized
        blocks keyed by sample position, so overlapping contexts and frames of a play agree."""
        n, width, before = self.frame_size, self.context_size, self.context_before
        rank = self._train_placement[0]
        blocks: dict[tuple, np.ndarray] = {}
        old = self._noise_blocks
        for r, (slot, c, f) in enumerate(zip(step.slots.tolist(), step.clips.tolist(), step.frames.tolist())):
            clip = clips[c]
            play = (_seed_word(self.seed), rank, c, slot, train_step - f)  # a slot plays one frame per step
            rng = np.random.default_rng(play)
            gain = 1.0
            if self.augment_gain_db is not None:
                gain = 10.0 ** (rng.uniform(*self.augment_gain_db) / 20.0)
            sigma = 0.0
            if self.augment_noise_snr_db is not None:
                snr = rng.uniform(*self.augment_noise_snr_db)
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

    def _rank(self) -> tuple[int, int]:
        """(global rank, world size) from the trainer; (0, 1) without one."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(getattr(trainer, "global_rank", 0) or 0), int(getattr(trainer, "world_size", 1) or 1)

    def _new_train_stream(self, rank: int, world_size: int) -> SlotStream:
        counts, _ = shard_frame_counts(self._frame_counts(self._split("train")), rank, world_size, "training clips")
        return SlotStream(counts, self.batch_size, "train", self.seed, rank=rank)

    def _train_stream(self) -> SlotStream:
        placement = self._rank()
        if self._train is not None and placement != self._train_placement:
            # built before the trainer (and its rank) was known: rebuild for this rank at the same step count
            played = self._train.steps
            self._train = self._new_train_stream(*placement)
            self._train.fast_forward(played)
            self._train_placement = placement
        if self._train is None:
            self._train = self._new_train_stream(*placement)
            self._train_placement = placement
            if self._pending is not None:
                self._apply(self._pending)
        return self._train

    def _train_epoch(self) -> Iterator[Batch]:
        stream = self._train_stream()
        clips = self._split("train")
        for _ in range(self.steps_per_epoch - stream.steps % self.steps_per_epoch):
            index = stream.steps
            yield self.make_batch(clips, next(stream), train_step=index)

    def train_dataloader(self) -> DataLoader:
        self._split("train")
        return _ResumableLoader(_TrainBatches(self), self)

    def _eval_loader(self, split: str) -> DataLoader:
        clips = self._split(split)
        counts, _ = shard_frame_counts(self._frame_counts(clips), *self._rank(), what=f"{split} clips")
        dataset = _EvalBatches(counts, self.val_batch_size, lambda step: self.make_batch(clips, step))
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # ------------------------------------------------------------------------------------------ predict

    def check_predict(self) -> None:
        """One-line errors for a predict run that cannot write its outputs."""
        if not self.predict_files:
            raise DataError("data.predict_files is empty: list the audio files to process (--data.predict_files [a.wav,b.wav])")
        if self.predict_output_dir is None:
            raise DataError("data.predict_output_dir is not set: name an existing folder for the processed files")
        out = Path(self.predict_output_dir).expanduser()
        if not out.is_dir():
            raise DataError(f"data.predict_output_dir {out} does not exist (or is not a folder)")
        seen: dict[str, str] = {}
        for f in self.predict_files:
            if not Path(f).expanduser().is_file():
                raise DataError(f"data.predict_files: {f} does not exist")
            name = Path(f).name
            if name in seen:
                raise DataError(f"data.predict_files: {seen[name]} and {f} would both be written to {out / name}")
            seen[name] = f

    def predict_output_path(self, path: str) -> Path:
        return Path(self.predict_output_dir).expanduser() / Path(path).name

    def predict_dataloader(self) -> DataLoader:
        """One item per file: its path (``DeepAFx.predict_step`` processes the whole file)."""
        self.check_predict()
        return DataLoader([str(Path(f).expanduser()) for f in self.predict_files], batch_size=None, num_workers=0)

    # ------------------------------------------------------------------------------------------ resume

    def _consumed_batches(self) -> int:
        """How many training batches the model has taken (see the module docstring for the assumption)."""
        trainer = self.trainer
        if trainer is None:
            return self._train.steps if self._train is not None else 0
        return int(trainer.global_step) * int(getattr(trainer, "accumulate_grad_batches", 1) or 1)

    def state_dict(self) -> dict[str, Any]:
        """The batches the model has consumed, and what they must be replayed against (Lightning checkpoints it)."""
        if self._train is None:
            return copy.deepcopy(self._pending) if self._pending is not None else {}
        return {
            "train_steps": self._consumed_batches(),
            "num_slots": self.batch_size,
            "num_clips": len(self._split("train")),
            "seed": self.seed,
            "world_size": self._train_placement[1],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict or "train_steps" not in state_dict:
            return
        self._pending = copy.deepcopy(state_dict)
        if self._train is not None:
            self._apply(self._pending)

    def _apply(self, state: dict[str, Any]) -> None:
        saved_clips, clips = int(state["num_clips"]), len(self._split("train"))
        if int(state["num_slots"]) != self.batch_size:
            raise DataError(
                f"data: the checkpoint's stream has {state['num_slots']} slots, this run {self.batch_size} "
                "(data.batch_size changed?): it cannot resume the same stream"
            )
        if saved_clips != clips or int(state["seed"]) != self.seed:
            raise DataError(
                f"data: the checkpoint was trained on {saved_clips} clips with data.seed {state['seed']}, this run has "
                f"{clips} clips and seed {self.seed}: it cannot resume the same stream"
            )
        if int(state["world_size"]) != self._train_placement[1]:
            warnings.warn(
                f"data: the checkpoint was written with {state['world_size']} rank(s), this run has "
                f"{self._train_placement[1]}: the batch count and epoch boundaries continue, the clip order does not",
                stacklevel=2,
            )
        with warnings.catch_warnings():  # the shard warning was given when the stream was first built
            warnings.simplefilter("ignore")
            stream = self._new_train_stream(*self._train_placement)
        stream.fast_forward(int(state["train_steps"]))
        self._train = stream
        self._pending = None
