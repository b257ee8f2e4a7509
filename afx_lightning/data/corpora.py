"""Public corpora as they unpack from their downloads -> lists of (input, target, name, split) pairs -> clips.

Nothing is downloaded here: point ``root`` at the unpacked folder. Each loader returns :class:`PairSpec` lists;
:class:`CorpusClips` turns the pairs of one split into :class:`PairedClips` through :mod:`.preprocess` (with its
on-disk cache). Expected layouts::

    DAPS (dataset: daps; root = the unpacked daps/ folder)
        daps/cleanraw/f1_script1_cleanraw.wav     input: clean studio takes with breaths and lip smacks
        daps/clean/f1_script1_clean.wav           target: the same takes with those removed by hand
        (also produced/, ipad_office1/, ... : any folder can be input_dir/target_dir; a file pairs by its
        name without the "_<folder>" suffix, e.g. f1_script1_ipad_office1.wav -> f1_script1)
        macOS "._*" files in the archive are ignored. Splits by speaker as in the official DeepAFx code:
        val = f10, m10; test = f9, m9; train = the other 16 speakers.

    IDMT-SMT-Audio-Effects or any "dry folder + processed folder" corpus (dataset: idmt)
        input_glob  (relative to root), e.g. "Gitarre monophon/Samples/NoFX/*.wav"
        target_glob (relative to root), e.g. "Gitarre monophon/Samples/Distortion/*.wav"
        pair_key: a regex searched in each file *stem*; group "key" (or group 1, or the whole match) is the
        pairing key, e.g. r"^(?P<key>[A-Z]\\d+-\\d+)-" for IDMT names like G61-40100-1111-20593 (instrument and
        note, dropping the effect/setting fields). Default: the whole stem (identical file names).
        Splits: a stable hash of the key against split_fractions (train, val, test), default 0.8/0.1/0.1.

    Unmastered/mastered tracks, Mixing Secrets style (dataset: mixes)
        root/unmastered/<Song>.wav ↔ root/mastered/<song>_master.wav, paired by stem: case-insensitive,
        ignoring spaces/dashes/underscores and trailing tags such as _master, _mastered, _unmastered, _premaster,
        _mix, _mixdown, _final. WAV, FLAC and AIFF are read. Splits by a stable hash of the stem, default
        0.81/0.095/0.095 (the paper's 429/51/50 minutes). The paper's preprocessing: align=True and
        loudness_lufs=-25 (input only).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .datasets import Clip, DataError, PairedClips
from .preprocess import AUDIO_SUFFIXES, PreprocessOptions, prepare_pair

SPLITS = ("train", "val", "test")
DAPS_VAL_SPEAKERS = ("f10", "m10")
DAPS_TEST_SPEAKERS = ("f9", "m9")
MIX_FRACTIONS = (0.81, 0.095, 0.095)
GLOB_FRACTIONS = (0.8, 0.1, 0.1)
MIX_TAGS = ("unmastered", "premastered", "premaster", "mastered", "master", "mixdown", "mixed", "mix", "final")

# the folder names each dataset uses when data.input_dir / data.target_dir are not set
DEFAULT_DIRS = {
    "folder": ("input", "target"),
    "daps": ("cleanraw", "clean"),
    "mixes": ("unmastered", "mastered"),
}


@dataclass(frozen=True)
class PairSpec:
    """One pair of files and the split it belongs to."""

    input: Path
    target: Path
    name: str
    split: str


def _audio_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("._")
    )


def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist ({what})")


def hash_split(key: str, fractions: Sequence[float]) -> str:
    """A stable split for ``key`` (same on every machine and run): its hash in [0, 1) against the fractions."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not 0.999 <= sum(fractions) <= 1.001:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    u = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
    edge = 0.0
    for split, fraction in zip(SPLITS, fractions):
        edge += fraction
        if u < edge:
            return split
    return SPLITS[-1]


# --------------------------------------------------------------------------------------------------- DAPS


def _strip_folder_suffix(stem: str, folder: str) -> str:
    suffix = "_" + folder
    if stem.lower().endswith(suffix.lower()):
        return stem[: -len(suffix)]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def daps_pairs(
    root: str | Path,
    input_dir: str = "cleanraw",
    target_dir: str = "clean",
    val_speakers: Iterable[str] = DAPS_VAL_SPEAKERS,
    test_speakers: Iterable[str] = DAPS_TEST_SPEAKERS,
) -> list[PairSpec]:
    """DAPS pairs ``<input_dir>/f1_script1_<input_dir>.wav`` ↔ ``<target_dir>/f1_script1_<target_dir>.wav``, split by speaker."""
    root = Path(root).expanduser()
    inputs, targets = root / input_dir, root / target_dir
    _require_dir(inputs, f"DAPS input folder; data.root should be the unpacked daps/ folder with {input_dir}/ and {target_dir}/")
    _require_dir(targets, f"DAPS target folder; data.root should be the unpacked daps/ folder with {input_dir}/ and {target_dir}/")
    by_key = {_strip_folder_suffix(p.stem, target_dir): p for p in _audio_files(targets)}
    val, test = {s.lower() for s in val_speakers}, {s.lower() for s in test_speakers}
    pairs = []
    files = _audio_files(inputs)
    if not files:
        raise DataError(f"{inputs}: no audio files")
    for path in files:
        key = _strip_folder_suffix(path.stem, input_dir)
        target = by_key.get(key)
        if target is None:
            raise DataError(f"{path}: missing target {targets / f'{key}_{target_dir}.wav'} (DAPS pairs by speaker_script)")
        speaker = key.split("_", 1)[0].lower()
        split = "val" if speaker in val else "test" if speaker in test else "train"
        pairs.append(PairSpec(path, target, key, split))
    return pairs


# --------------------------------------------------------------------------------------------------- glob pairs


def _key_of(pattern: re.Pattern, path: Path) -> Optional[str]:
    match = pattern.search(path.stem)
    if match is None:
        return None
    if "key" in match.groupdict():
        return match.group("key")
    return match.group(1) if match.groups() else match.group(0)


def glob_pairs(
    root: str | Path,
    input_glob: str,
    target_glob: str,
    pair_key: str = r"^(?P<key>.+)$",
    fractions: Sequence[float] = GLOB_FRACTIONS,
) -> list[PairSpec]:
    """Inputs matching ``input_glob`` paired with targets matching ``target_glob`` by the ``pair_key`` regex (IDMT style)."""
    root = Path(root).expanduser()
    _require_dir(root, "data.root")
    try:
        pattern = re.compile(pair_key)
    except re.error as err:
        raise DataError(f"data.pair_key {pair_key!r} is not a valid regex ({err})") from None

    def index(glob: str, role: str) -> dict[str, Path]:
        found: dict[str, Path] = {}
        files = sorted(p for p in root.glob(glob) if p.is_file() and not p.name.startswith("._"))
        if not files:
            raise DataError(f"{root / glob}: no {role} files match")
        for path in files:
            key = _key_of(pattern, path)
            if key is None:
                raise DataError(f"{path}: name does not match data.pair_key {pair_key!r}")
            if key in found:
                raise DataError(f"{path}: pair key {key!r} also matches {found[key]} (make data.pair_key more specific)")
            found[key] = path
        return found

    inputs, targets = index(input_glob, "input"), index(target_glob, "target")
    pairs = []
    for key, path in sorted(inputs.items()):
        if key not in targets:
            raise DataError(f"{path}: missing target (no file matching {target_glob!r} has pair key {key!r})")
        pairs.append(PairSpec(path, targets[key], key, hash_split(key, fractions)))
    return pairs


# --------------------------------------------------------------------------------------------------- mixes


_TAG_RE = re.compile(r"[\s_\-.]+(?:" + "|".join(MIX_TAGS) + r")$")


def mix_stem(path: str | Path) -> str:
    """A track's pairing name: lower case, trailing mix/master tags and separators dropped."""
    stem = Path(path).stem.lower().strip()
    while True:
        shorter = _TAG_RE.sub("", stem)
        if shorter == stem or not shorter:
            break
        stem = shorter
    return re.sub(r"[\s_\-]+", "", stem)


def mix_pairs(
    root: str | Path,
    input_dir: str = "unmastered",
    target_dir: str = "mastered",
    fractions: Sequence[float] = MIX_FRACTIONS,
) -> list[PairSpec]:
    """``root/<input_dir>/*`` ↔ ``root/<target_dir>/*`` paired by :func:`mix_stem`, split by its hash."""
    root = Path(root).expanduser()
    inputs, targets = root / input_dir, root / target_dir
    _require_dir(inputs, f"folder of unmastered tracks; data.root needs {input_dir}/ and {target_dir}/")
    _require_dir(targets, f"folder of mastered tracks; data.root needs {input_dir}/ and {target_dir}/")

    def index(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in _audio_files(folder):
            key = mix_stem(path)
            if key in found:
                raise DataError(f"{path}: pairs by the same name as {found[key]} ({key!r})")
            found[key] = path
        if not found:
            raise DataError(f"{folder}: no audio files")
        return found

    sources, masters = index(inputs), index(targets)
    pairs = []
    for key, path in sorted(sources.items()):
        if key not in masters:
            raise DataError(f"{path}: missing target (no file in {targets} pairs with {key!r})")
        pairs.append(PairSpec(path, masters[key], path.stem, hash_split(key, fractions)))
    return pairs


# --------------------------------------------------------------------------------------------------- clips


class CorpusClips(PairedClips):
    """The clips of one split: each pair preprocessed (and cached) by :func:`.preprocess.prepare_pair`.

    Silent inputs are skipped with a warning. ``lags`` maps clip names to the alignment shift found (samples).
    """

    def __init__(
        self,
        pairs: Sequence[PairSpec],
        options: PreprocessOptions = PreprocessOptions(),
        cache_dir: str | Path | None = None,
        name: str = "corpus",
    ):
        super().__init__(options.sample_rate, name)
        self.pairs = list(pairs)
        self.options = options
        self.cache_dir = cache_dir
        self.lags: dict[str, int] = {}
        self.gains_db: dict[str, float] = {}

    def _load(self) -> list[Clip]:
        if not self.pairs:
            raise DataError(f"{self.name}: no pairs in this split")
        clips = []
        for pair in self.pairs:
            result = prepare_pair(pair.input, pair.target, self.options, self.cache_dir)
            if result.silent:
                warnings.warn(f"{pair.input}: input is silent; clip skipped", stacklevel=2)
                continue
            self.lags[pair.name] = result.lag
            self.gains_db[pair.name] = result.gain_db
            clips.append(Clip(pair.name, result.input[None, :], result.target[None, :]))
        if not clips:
            raise DataError(f"{self.name}: every input clip is silent")
        return clips


def corpus_pairs(
    dataset: str,
    root: str | Path,
    input_dir: Optional[str] = None,
    target_dir: Optional[str] = None,
    input_glob: Optional[str] = None,
    target_glob: Optional[str] = None,
    pair_key: Optional[str] = None,
    split_fractions: Optional[Sequence[float]] = None,
) -> list[PairSpec]:
    """All pairs of a corpus (``daps``, ``idmt`` or ``mixes``) with their splits."""
    if root is None:
        raise DataError(f"data.root is not set: point it at the unpacked {dataset} corpus")
    if dataset == "daps":
        dirs = DEFAULT_DIRS["daps"]
        return daps_pairs(root, input_dir or dirs[0], target_dir or dirs[1])
    if dataset == "mixes":
        dirs = DEFAULT_DIRS["mixes"]
        return mix_pairs(root, input_dir or dirs[0], target_dir or dirs[1], split_fractions or MIX_FRACTIONS)
    if dataset == "idmt":
        if not input_glob or not target_glob:
            raise DataError("data.dataset=idmt needs data.input_glob and data.target_glob (relative to data.root)")
        return glob_pairs(root, input_glob, target_glob, pair_key or r"^(?P<key>.+)$", split_fractions or GLOB_FRACTIONS)
    raise DataError(f"unknown corpus {dataset!r} (daps, idmt or mixes)")


def default_cache_dir(root: str | Path) -> Path:
    return Path(root).expanduser() / ".afx_cache"
