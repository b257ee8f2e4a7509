"""Where the training pairs come from: one small class per ``data.dataset`` value, behind one protocol.

Each source knows how to find (or make) its pairs, its split rule, its defaults (folder names, root, alignment)
and the one line that says what is missing. The data module picks its source once, from :data:`SOURCES`, and
never tests the dataset name again::

    demo    DemoSource     a generated known-answer task (no files)
    folder  FolderSource   a user's paired folders (input/ + target/, or train/ val/ test/ each with both)
    daps    DapsSource     DAPS as it unpacks, split by speaker
    idmt    GlobSource     any "dry folder + processed folder" corpus, paired by a regex over file names
    mixes   MixesSource    unmastered/mastered tracks, paired by song name

A new source is a class with the :class:`DataSource` methods, added to :data:`SOURCES`. The file layouts and
pairing rules themselves live in :mod:`.corpora`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from .corpora import (
    DEFAULT_DIRS,
    GLOB_FRACTIONS,
    MIX_FRACTIONS,
    SPLITS,
    CorpusClips,
    PairSpec,
    daps_pairs,
    default_cache_dir,
    folder_layout,
    folder_pairs,
    glob_pairs,
    missing_corpus,
    mix_pairs,
)
from .datasets import DataError, DemoClips, PairedClips
from .preprocess import Preprocessing, PreprocessOptions

MISSING_ROOT = "data.root is not set: point it at a folder with input/ and target/ (or use data.dataset=demo)"


@dataclass(frozen=True)
class SourceOptions:
    """The data options a source may read (the data module's own, as given; None: the source's default)."""

    root: str | None = None
    input_dir: str | None = None
    target_dir: str | None = None
    input_glob: str | None = None
    target_glob: str | None = None
    pair_key: str | None = None
    split_fractions: Sequence[float] | None = None
    sample_rate: int = 22050
    channels: int = 1
    frame_size: int = 1024
    seed: int = 0
    cache_dir: str | None = None
    align: bool | None = None
    max_lag_seconds: float = 1.0
    length_tolerance: int = 1024
    preprocessing: Preprocessing = Preprocessing()
    demo_chain: str = "pb_mb_compressor"
    demo_clips: int = 8
    demo_val_clips: int = 4
    demo_test_clips: int = 4
    demo_seconds: float = 6.0
    demo_variation: float = 0.1
    demo_spread: float = 0.3


@runtime_checkable
class DataSource(Protocol):
    """What the data module needs from a source of paired clips."""

    name: ClassVar[str]

    def check(self) -> None:
        """Options and, for files, their layout and pairing (a listing, no audio read): one-line errors, at once."""

    def clips(self, split: str) -> PairedClips | None:
        """The clips of ``split`` (loaded lazily by the returned object); None when the source has no such split."""

    def missing(self, split: str) -> str:
        """Why ``split`` is absent, for ``data: no <split> split (...)``."""

    @property
    def preprocessing(self) -> Preprocessing:
        """What this source's inputs went through (the checkpoint records it; inference repeats it)."""

    def describe(self) -> str:
        """The source in a few words for the data module's log line."""


class DemoSource:
    """``data.dataset: demo``: :class:`.datasets.DemoClips`, one hidden task (seeded by data.seed) for all splits."""

    name: ClassVar[str] = "demo"

    def __init__(self, options: SourceOptions):
        self.options = options
        self.root = None

    def _count(self, split: str) -> int:
        o = self.options
        return {"train": o.demo_clips, "val": o.demo_val_clips, "test": o.demo_test_clips}[split]

    def check(self) -> None:
        if self.options.split_fractions is not None:
            warnings.warn("data.split_fractions is not used by data.dataset=demo", stacklevel=3)
        if self.options.preprocessing.active:
            warnings.warn(
                "data.highpass_hz / data.loudness_lufs apply to files: data.dataset=demo ignores them", stacklevel=3
            )

    def clips(self, split: str) -> PairedClips | None:
        o, count = self.options, self._count(split)
        if count < 1:
            return None
        return DemoClips(
            o.demo_chain,
            num_clips=count,
            clip_seconds=o.demo_seconds,
            sample_rate=o.sample_rate,
            seed=3 * o.seed + SPLITS.index(split),  # distinct audio per split ...
            task_seed=o.seed,  # ... one hidden task for all of them
            block_size=o.frame_size,
            depth=o.demo_variation,
            spread=o.demo_spread,
            name=f"demo {split} [{o.demo_chain}]",
        )

    def missing(self, split: str) -> str:
        return f"data.demo_{split}_clips is 0" if split != "train" else "data.demo_clips is 0"

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing()  # generated at the model's rate: nothing to repeat at inference

    def describe(self) -> str:
        return f"demo chain {self.options.demo_chain}"


class GivenSource:
    """Clips built in code (:meth:`AudioFxDataModule.from_clips`): used as they are. Not a ``data.dataset`` value."""

    name: ClassVar[str] = "given"

    def __init__(self, train: PairedClips, val: PairedClips | None = None, test: PairedClips | None = None):
        self._clips = {"train": train, "val": val, "test": test}
        self.root = None

    def check(self) -> None:
        pass

    def clips(self, split: str) -> PairedClips | None:
        return self._clips.get(split)

    def missing(self, split: str) -> str:
        return "none given"

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing()

    def describe(self) -> str:
        return "clips given in code"


class FileSource:
    """The shared part of the sources on disk: listed once, each split preprocessed and cached by
    :class:`.corpora.CorpusClips`. Subclasses give their pairs, defaults and missing-data line."""

    name: ClassVar[str]
    default_root: ClassVar[str | None] = None  # where it is looked for when data.root is unset (from the cwd)
    default_dirs: ClassVar[tuple[str, str]] = DEFAULT_DIRS["folder"]
    align_by_default: ClassVar[bool] = True
    mono_only: ClassVar[bool] = True  # the public corpora are mono

    def __init__(self, options: SourceOptions):
        self.options = options
        self.root = options.root if options.root is not None else self.default_root
        self.input_dir = options.input_dir or self.default_dirs[0]
        self.target_dir = options.target_dir or self.default_dirs[1]
        self.align = self.align_by_default if options.align is None else bool(options.align)
        self._pairs: list[PairSpec] | None = None

    def find_pairs(self, root: Path) -> list[PairSpec]:
        """Every pair under ``root`` with its split (raises a one-line :class:`DataError` naming what is wrong)."""
        raise NotImplementedError

    def missing_root(self) -> str:
        """The line for a root that does not exist: where the data should be and what its download is called."""
        return missing_corpus(self.name, self.root, self.input_dir, self.target_dir, self.options.input_glob)

    def check(self) -> None:
        if self.mono_only and self.options.channels != 1:
            raise DataError(
                f"data.dataset={self.name} downmixes to mono: data.channels must be 1, got {self.options.channels}"
            )
        if self.root is not None:
            root = Path(self.root).expanduser()
            if root.exists() and not root.is_dir():
                raise DataError(f"data.root {self.root} is not a folder (data.dataset={self.name})")
        self.pairs()

    def pairs(self) -> list[PairSpec]:
        """All pairs with their splits, listed once."""
        if self._pairs is None:
            if self.root is None:
                raise DataError(MISSING_ROOT)
            if not Path(self.root).expanduser().exists():
                raise DataError(self.missing_root())
            self._pairs = self.find_pairs(Path(self.root).expanduser())
        return self._pairs

    def preprocess_options(self) -> PreprocessOptions:
        """What turns these files into clips (all of it keys the cache)."""
        o = self.options
        return PreprocessOptions(
            sample_rate=o.sample_rate,
            channels=o.channels,
            align=self.align,
            max_lag_seconds=o.max_lag_seconds,
            **o.preprocessing.to_config(),
            length_tolerance=self.length_tolerance(),
        )

    def length_tolerance(self) -> int | None:
        """None: the corpora check that a pair overlaps by 90 % instead of a length difference."""
        return None

    def clips(self, split: str) -> PairedClips | None:
        pairs = [p for p in self.pairs() if p.split == split]
        if not pairs:
            if split == "test":  # not every dataset has one
                return None
            raise DataError(self.empty_split(split))
        cache = self.options.cache_dir if self.options.cache_dir is not None else default_cache_dir(self.root)
        return CorpusClips(pairs, self.preprocess_options(), cache, name=f"{self.name} {split}")

    def empty_split(self, split: str) -> str:
        return f"data: the {self.name} corpus at {self.root} has no {split} pairs ({len(self.pairs())} pairs in all)"

    def missing(self, split: str) -> str:
        return f"no {split} pairs in {self.root}"

    @property
    def preprocessing(self) -> Preprocessing:
        return self.options.preprocessing

    def describe(self) -> str:
        return f"{self.name} {self.root}"


class FolderSource(FileSource):
    """``data.dataset: folder``: :func:`.corpora.folder_pairs`; taken as aligned, any rate and channel count."""

    name: ClassVar[str] = "folder"
    align_by_default: ClassVar[bool] = False  # a user's pairs are taken as already aligned
    mono_only: ClassVar[bool] = False

    def missing_root(self) -> str:
        return f"data.root {Path(self.root).expanduser()} does not exist or is not a folder"

    def check(self) -> None:
        if self.root is None:
            raise DataError(MISSING_ROOT)
        super().check()

    def find_pairs(self, root: Path) -> list[PairSpec]:
        return folder_pairs(root, self.input_dir, self.target_dir, self.options.split_fractions)

    def length_tolerance(self) -> int | None:
        return self.options.length_tolerance

    def empty_split(self, split: str) -> str:
        if folder_layout(self.root) == "split":
            return f"data: no {split} split ({Path(self.root).expanduser() / split} does not exist)"
        return (
            f"data: no {split} files in {self.root}: {len(self.pairs())} pair(s) in all, split by data.split_fractions "
            f"{list(self.options.split_fractions or [0.8, 0.1, 0.1])} (a val split needs at least 2 pairs)"
        )


class DapsSource(FileSource):
    """``data.dataset: daps``: :func:`.corpora.daps_pairs`, split by speaker (val f10/m10, test f9/m9)."""

    name: ClassVar[str] = "daps"
    default_root: ClassVar[str | None] = "data/daps"
    default_dirs: ClassVar[tuple[str, str]] = DEFAULT_DIRS["daps"]

    def check(self) -> None:
        if self.options.split_fractions is not None:
            warnings.warn("data.split_fractions is not used by data.dataset=daps", stacklevel=3)
        super().check()

    def find_pairs(self, root: Path) -> list[PairSpec]:
        return daps_pairs(root, self.input_dir, self.target_dir)


class GlobSource(FileSource):
    """``data.dataset: idmt``: :func:`.corpora.glob_pairs` (input_glob, target_glob, pair_key), split by key hash."""

    name: ClassVar[str] = "idmt"
    default_root: ClassVar[str | None] = "data/idmt"

    def find_pairs(self, root: Path) -> list[PairSpec]:
        o = self.options
        if not o.input_glob or not o.target_glob:
            raise DataError("data.dataset=idmt needs data.input_glob and data.target_glob (relative to data.root)")
        return glob_pairs(
            root, o.input_glob, o.target_glob, o.pair_key or r"^(?P<key>.+)$", o.split_fractions or GLOB_FRACTIONS
        )


class MixesSource(FileSource):
    """``data.dataset: mixes``: :func:`.corpora.mix_pairs` (paired by song name), split by its hash."""

    name: ClassVar[str] = "mixes"
    default_root: ClassVar[str | None] = "data/mixes"
    default_dirs: ClassVar[tuple[str, str]] = DEFAULT_DIRS["mixes"]

    def find_pairs(self, root: Path) -> list[PairSpec]:
        return mix_pairs(root, self.input_dir, self.target_dir, self.options.split_fractions or MIX_FRACTIONS)


# data.dataset -> its source
SOURCES: dict[str, type] = {
    "demo": DemoSource,
    "folder": FolderSource,
    "daps": DapsSource,
    "idmt": GlobSource,
    "mixes": MixesSource,
}


def make_source(dataset: str, options: SourceOptions) -> DataSource:
    """The source ``data.dataset`` names, or a one-line error listing the known names."""
    cls = SOURCES.get(dataset) if isinstance(dataset, str) else None
    if cls is None:
        known = ", ".join(repr(name) for name in SOURCES)
        raise DataError(f"data.dataset must be one of {known}, got {dataset!r}")
    return cls(options)
