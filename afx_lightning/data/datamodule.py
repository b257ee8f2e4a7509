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

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from .augment import InputAugmentation
from .corpora import check_fractions
from .datasets import DataError, PairedClips
from .preprocess import Preprocessing, PreprocessOptions
from .sources import SPLITS, DataSource, FileSource, GivenSource, SourceOptions, make_source
from .streams import SlotStream, StreamStep, TrainStream, shard_frame_counts
from .writer import PredictOptions

Batch = dict[str, torch.Tensor]


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

    def __init__(self, owner: AudioFxDataModule):
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

    def __init__(self, dataset: _TrainBatches, owner: AudioFxDataModule):
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
            ``mixes`` (unmastered/mastered tracks); one class each in :mod:`afx_lightning.data.sources`, layouts in
            :mod:`afx_lightning.data.corpora`.
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
        Only the *input* is augmented, per play of a clip, reproducibly: see :mod:`afx_lightning.data.augment`.

    Prediction (``afx predict``; the same code path as ``afx process``, see ``DeepAFx.predict_step``; the files
    are written by :class:`afx_lightning.data.writer.PredictionFileWriter`):
        predict_files: input files; each is processed whole into ``predict_output_dir`` under its own name.
        predict_output_dir: an existing folder for the outputs.
        predict_overwrite: replace existing outputs.
        predict_smoothing_hz: low-pass cutoff of the parameter curves (``afx process --smoothing-hz``); unset:
            the same default as ``afx process``.
    """

    def __init__(
        self,
        dataset: str = "demo",
        root: str | None = None,
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
        input_dir: str | None = None,
        target_dir: str | None = None,
        length_tolerance: int = 1024,
        cache_dir: str | None = None,
        align: bool | None = None,
        max_lag_seconds: float = 1.0,
        loudness_lufs: float | None = None,
        highpass_hz: float | None = None,
        input_glob: str | None = None,
        target_glob: str | None = None,
        pair_key: str | None = None,
        split_fractions: list[float] | None = None,
        augment_noise_snr_db: list[float] | None = None,
        augment_gain_db: list[float] | None = None,
        predict_files: list[str] | None = None,
        predict_output_dir: str | None = None,
        predict_overwrite: bool = False,
        predict_smoothing_hz: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.frame_size = int(frame_size)
        self.context_size = int(context_size)
        self._sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.seed = int(seed)
        self._check_sizes()
        if split_fractions is not None:
            split_fractions = list(check_fractions(split_fractions))
        self.source: DataSource = make_source(
            dataset,
            SourceOptions(
                root=root,
                input_dir=input_dir,
                target_dir=target_dir,
                input_glob=input_glob,
                target_glob=target_glob,
                pair_key=pair_key,
                split_fractions=split_fractions,
                sample_rate=self._sample_rate,
                channels=self.channels,
                frame_size=self.frame_size,
                seed=self.seed,
                cache_dir=cache_dir,
                align=align,
                max_lag_seconds=float(max_lag_seconds),
                length_tolerance=int(length_tolerance),
                preprocessing=Preprocessing(
                    highpass_hz=None if highpass_hz is None else float(highpass_hz),
                    loudness_lufs=None if loudness_lufs is None else float(loudness_lufs),
                ),
                demo_chain=demo_chain,
                demo_clips=int(demo_clips),
                demo_val_clips=int(demo_val_clips),
                demo_test_clips=int(demo_test_clips),
                demo_seconds=float(demo_seconds),
                demo_variation=float(demo_variation),
                demo_spread=float(demo_spread),
            ),
        )
        self.augmentation = InputAugmentation(augment_gain_db, augment_noise_snr_db, seed=self.seed)
        self.predict_options = PredictOptions(
            [str(f) for f in predict_files] if predict_files is not None else None,
            predict_output_dir,
            bool(predict_overwrite),
            None if predict_smoothing_hz is None else float(predict_smoothing_hz),
        )
        self.source.check()  # a bad run stops here, before any logger or worker starts
        self._splits: dict[str, PairedClips | None] = {}
        self._train = TrainStream(self.batch_size, self.seed)

    @classmethod
    def from_clips(
        cls,
        train: PairedClips,
        val: PairedClips | None = None,
        test: PairedClips | None = None,
        **kwargs: Any,
    ) -> AudioFxDataModule:
        """A data module over clips built in code (tests, notebooks); other options as in the constructor."""
        kwargs.setdefault("sample_rate", train.sample_rate)
        dm = cls(**kwargs)
        dm.source = GivenSource(train, val, test)
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

    @property
    def root(self) -> str | None:
        return self.source.root

    @property
    def input_dir(self) -> str | None:
        return self.source.input_dir if isinstance(self.source, FileSource) else None

    @property
    def target_dir(self) -> str | None:
        return self.source.target_dir if isinstance(self.source, FileSource) else None

    def _check_sizes(self) -> None:
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
            raise DataError(
                f"data.context_size ({self.context_size}) must be at least data.frame_size ({self.frame_size})"
            )

    @property
    def preprocessing(self) -> Preprocessing:
        """What this data's inputs went through: the checkpoint records it and inference repeats it. Demo and
        in-code clips are used as they are (data.highpass_hz / loudness_lufs apply to files)."""
        return self.source.preprocessing

    def preprocess_options(self) -> PreprocessOptions:
        """What turns this data's files into clips (all of it keys the cache)."""
        if not isinstance(self.source, FileSource):
            raise DataError(f"data.dataset={self.dataset} reads no files: it has no preprocessing options")
        return self.source.preprocess_options()

    def _split(self, split: str, required: bool = True) -> PairedClips | None:
        """The clips of a split, loaded and checked once."""
        if split not in self._splits:
            clips = self.source.clips(split)
            if clips is not None:
                self._check_clips(split, clips)
            self._splits[split] = clips
        clips = self._splits[split]
        if clips is None and required:
            raise DataError(f"data: no {split} split ({self.source.missing(split)})")
        return clips

    def _check_clips(self, split: str, clips: PairedClips) -> None:
        if clips.sample_rate != self._sample_rate:
            raise DataError(
                f"data: {split} clips are at {clips.sample_rate} Hz but data.sample_rate is {self._sample_rate} Hz"
            )
        if not any(c.num_samples >= self.frame_size for c in clips):
            raise DataError(f"data: no {split} clip is at least one frame ({self.frame_size} samples) long")
        train = self._splits.get("train")
        if split != "train" and train is not None and clips.num_channels != train.num_channels:
            raise DataError(f"data: {split} clips have {clips.num_channels} channels, train clips {train.num_channels}")

    def setup(self, stage: str) -> None:
        """Load (or render) the splits a stage needs, failing early with one-line errors."""
        self._check_sizes()
        self.source.check()
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
        source = self.source.describe()
        parts = []
        for split in SPLITS:
            clips = self._splits.get(split)
            if clips is not None:
                parts.append(f"{split} {len(clips)} clips/{clips.total_seconds:.1f} s")
        sizes = ", ".join(parts) or "not loaded yet"
        channels = (
            f"{self._splits['train'].num_channels} ch"
            if self._splits.get("train") is not None
            else f"{self.channels} ch"
        )
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

    def make_batch(self, clips: PairedClips, step: StreamStep, train_step: int | None = None) -> Batch:
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
        if train_step is not None and self.augmentation.active:
            self.augmentation.apply(clips, step, train_step, self._train.placement[0], context, frame, before)
        return {
            "context": torch.from_numpy(context),
            "frame": torch.from_numpy(frame),
            "target": torch.from_numpy(target),
            "slot": torch.from_numpy(step.slots.copy()),
            "fresh": torch.from_numpy(step.fresh.copy()),
            "clip": torch.from_numpy(step.clips.copy()),
            "position": torch.from_numpy(positions),
        }

    def _rank(self) -> tuple[int, int]:
        """(global rank, world size) from the trainer; (0, 1) without one."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(getattr(trainer, "global_rank", 0) or 0), int(getattr(trainer, "world_size", 1) or 1)

    def _train_stream(self) -> TrainStream:
        """The training stream, built (or rebuilt, at the same step count) for this rank."""
        self._train.build(self._frame_counts(self._split("train")), *self._rank())
        return self._train

    def _train_epoch(self) -> Iterator[Batch]:
        stream = self._train_stream()
        clips = self._split("train")
        for _ in range(stream.epoch(self.steps_per_epoch)):
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
        self.predict_options.check()

    def predict_output_path(self, path: str) -> Path:
        return self.predict_options.output_path(path)

    def predict_dataloader(self) -> DataLoader:
        """One item per file: its path (``DeepAFx.predict_step`` processes the whole file)."""
        self.check_predict()
        files = [str(Path(f).expanduser()) for f in self.predict_options.files]
        return DataLoader(files, batch_size=None, num_workers=0)

    # ------------------------------------------------------------------------------------------ resume

    def _consumed_batches(self) -> int:
        """How many training batches the model has taken (see the module docstring for the assumption)."""
        trainer = self.trainer
        if trainer is None:
            return self._train.steps
        return int(trainer.global_step) * int(getattr(trainer, "accumulate_grad_batches", 1) or 1)

    def state_dict(self) -> dict[str, Any]:
        """The batches the model has consumed, and what they must be replayed against (Lightning checkpoints it)."""
        return self._train.state_dict(self._consumed_batches() if self._train.built else None)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train.load_state_dict(state_dict)
