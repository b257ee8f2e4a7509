"""Public corpora as they unpack from their downloads -> lists of (input, target, name, split) pairs -> clips.

Nothing is downloaded here: point ``root`` at the unpacked folder (by default ``data/<corpus>`` under the folder
you run in, see ``default_root`` in :mod:`.sources`; a missing one is reported with the name of its download). Each loader
returns :class:`PairSpec` lists; :class:`CorpusClips` turns the pairs of one split into :class:`PairedClips`
through :mod:`.preprocess` (with its on-disk cache). Expected layouts::

    DAPS (dataset: daps; root = the unpacked daps/ folder, default data/daps)
        daps/cleanraw/f1_script1_cleanraw.wav     input: clean studio takes with breaths and lip smacks
        daps/clean/f1_script1_clean.wav           target: the same takes with those removed by hand
        (also produced/, ipad_office1/, ... : any folder can be input_dir/target_dir; a file pairs by its
        name without the "_<folder>" suffix, e.g. f1_script1_ipad_office1.wav -> f1_script1)
        macOS "._*" files in the archive are ignored. Splits by speaker as in the official DeepAFx code:
        val = f10, m10; test = f9, m9; train = the other 16 speakers.

    IDMT-SMT-Audio-Effects or any "dry folder + processed folder" corpus (dataset: idmt; default root data/idmt)
        input_glob  (relative to root), e.g. "Gitarre monophon/Samples/NoFX/*.wav"
        target_glob (relative to root), e.g. "Gitarre monophon/Samples/Distortion/*.wav"
        pair_key: a regex searched in each file *stem*; group "key" (or group 1, or the whole match) is the
        pairing key, e.g. r"^(?P<key>[A-Z]\\d+-\\d+)-" for IDMT names like G61-40100-1111-20593 (instrument and
        note, dropping the effect/setting fields). Default: the whole stem (identical file names).
        Splits: a stable hash of the key against split_fractions (train, val, test), default 0.8/0.1/0.1.

    Unmastered/mastered tracks, Mixing Secrets style (dataset: mixes; default root data/mixes)
        root/unmastered/<Song>.wav ↔ root/mastered/<song>_master.wav, paired by stem: case-insensitive,
        ignoring spaces/dashes/underscores and trailing tags such as _master, _mastered, _unmastered, _premaster,
        _mix, _mixdown, _final. WAV, FLAC and AIFF are read. Splits by a stable hash of the stem, default
        0.81/0.095/0.095 (the paper's 429/51/50 minutes). The paper's preprocessing: align=True and
        loudness_lufs=-25 (input only).

    Paired folders as users have them (dataset: folder)
        root/input/*.wav ↔ root/target/*.wav (any audio suffix above), paired by file name, split by
        :func:`split_files` (whole files, so no clip of a file leaks into another split); or already split as
        root/{train,val,test}/{input,target}/. Any rate and channel count: converted by :mod:`.preprocess`.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .datasets import Clip, DataError, PairedClips
from .preprocess import AUDIO_SUFFIXES, PreprocessOptions, prepare_pair

SPLITS = ("train", "val", "test")
DAPS_VAL_SPEAKERS = ("f10", "m10")
DAPS_TEST_SPEAKERS = ("f9", "m9")
MIX_FRACTIONS = (0.81, 0.095, 0.095)
GLOB_FRACTIONS = (0.8, 0.1, 0.1)
FOLDER_FRACTIONS = (0.8, 0.1, 0.1)
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
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("._")
    )


def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist ({what})")


def check_fractions(fractions: object, option: str = "data.split_fractions") -> tuple[float, float, float]:
    """``[train, val, test]`` as three floats, or a one-line error naming the option (a fit needs train and val)."""
    try:
        values = tuple(float(f) for f in fractions)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if (
        len(values) != 3
        or not all(math.isfinite(f) and f >= 0 for f in values)
        or abs(sum(values) - 1.0) > 1e-3
        or values[0] <= 0
        or values[1] <= 0
    ):
        shown = list(fractions) if isinstance(fractions, (list, tuple)) else fractions
        raise DataError(
            f"{option} must be three fractions [train, val, test] >= 0 summing to 1, train and val > 0; got {shown!r}"
        )
    return values  # type: ignore[return-value]


def _stable_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


def split_files(keys: Sequence[str], fractions: Sequence[float] = FOLDER_FRACTIONS) -> dict[str, str]:
    """Whole files to splits, the same on every machine and run: the keys (file names) are ordered by their
    SHA-1 (not by data.seed, which only shuffles training), the first ``round(val * n)`` go to val, the next
    ``round(test * n)`` to test, the rest to train. So the fractions hold exactly up to rounding, val gets a file
    as soon as there are 2, test (when its fraction is > 0) as soon as there are 3, and train keeps at least one.
    A file added later moves at most a few others across the cuts."""
    _, val, test = check_fractions(fractions)
    order = sorted(set(keys), key=lambda k: (_stable_hash(k), k))
    n = len(order)
    n_val = math.floor(val * n + 0.5)
    n_test = math.floor(test * n + 0.5)
    if n >= 2:
        n_val = max(n_val, 1)
    if n >= 3 and test > 0:
        n_test = max(n_test, 1)
    while n_val + n_test > n - 1 and (n_val + n_test) > 0:  # train keeps one: take from the larger of val/test
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return {k: "val" if i < n_val else "test" if i < n_val + n_test else "train" for i, k in enumerate(order)}


def hash_split(key: str, fractions: Sequence[float]) -> str:
    """A stable split for ``key`` (same on every machine and run): its hash in [0, 1) against the fractions."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not 0.999 <= sum(fractions) <= 1.001:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    u = _stable_hash(key) / 2.0**64
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
    _require_dir(
        inputs, f"DAPS input folder; data.root should be the unpacked daps/ folder with {input_dir}/ and {target_dir}/"
    )
    _require_dir(
        targets,
        f"DAPS target folder; data.root should be the unpacked daps/ folder with {input_dir}/ and {target_dir}/",
    )
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
            raise DataError(
                f"{path}: missing target {targets / f'{key}_{target_dir}.wav'} (DAPS pairs by speaker_script)"
            )
        speaker = key.split("_", 1)[0].lower()
        split = "val" if speaker in val else "test" if speaker in test else "train"
        pairs.append(PairSpec(path, target, key, split))
    return pairs


# --------------------------------------------------------------------------------------------------- glob pairs


def _key_of(pattern: re.Pattern, path: Path) -> str | None:
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
                raise DataError(
                    f"{path}: pair key {key!r} also matches {found[key]} (make data.pair_key more specific)"
                )
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


# --------------------------------------------------------------------------------------------------- folders


def _named_pairs(folder: Path, input_dir: str, target_dir: str, where: str) -> list[tuple[Path, Path]]:
    """``folder/<input_dir>/X`` ↔ ``folder/<target_dir>/X`` for every audio file X of the input folder."""
    inputs, targets = folder / input_dir, folder / target_dir
    for sub in (inputs, targets):
        if not sub.is_dir():
            raise DataError(f"{sub} does not exist (data.root needs {where})")
    files = _audio_files(inputs)
    if not files:
        raise DataError(f"{inputs}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    pairs = []
    for path in files:
        target = targets / path.name
        if not target.is_file():
            raise DataError(f"{target}: missing target for input {path} (pairs are matched by file name)")
        pairs.append((path, target))
    return pairs


def folder_layout(root: str | Path) -> str:
    """``split`` when ``root`` holds train/ (or val/, test/) folders, else ``flat`` (just input/ and target/)."""
    root = Path(root).expanduser()
    return "split" if any((root / s).is_dir() for s in SPLITS) else "flat"


def folder_pairs(
    root: str | Path,
    input_dir: str = "input",
    target_dir: str = "target",
    fractions: Sequence[float] | None = None,
) -> list[PairSpec]:
    """A user's paired folder: ``root/{train,val,test}/{input,target}/`` as split, or ``root/{input,target}/``
    split by :func:`split_files` with ``fractions`` (default 0.8/0.1/0.1). Pairs by file name."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root} does not exist or is not a folder")
    if folder_layout(root) == "split":
        if fractions is not None:
            warnings.warn(f"data.split_fractions is ignored: {root} is already split into train/val/test", stacklevel=2)
        pairs = []
        for split in SPLITS:
            if (root / split).is_dir():
                where = f"{input_dir}/ and {target_dir}/ in each of train/, val/ (and test/)"
                pairs += [
                    PairSpec(i, t, i.stem, split) for i, t in _named_pairs(root / split, input_dir, target_dir, where)
                ]
        return pairs
    if not (root / input_dir).is_dir() and not (root / target_dir).is_dir():
        raise DataError(
            f"data.root {root} has neither {input_dir}/ and {target_dir}/ nor train/{input_dir}/ and train/{target_dir}/ "
            "(audio pairs matched by file name)"
        )
    named = _named_pairs(root, input_dir, target_dir, f"{input_dir}/ and {target_dir}/, or train/ and val/ with both")
    splits = split_files([i.name for i, _ in named], FOLDER_FRACTIONS if fractions is None else fractions)
    return [PairSpec(i, t, i.stem, splits[i.name]) for i, t in named]


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
            clips.append(Clip(pair.name, result.input, result.target))
        if not clips:
            raise DataError(f"{self.name}: every input clip is silent")
        return clips


def corpus_pairs(
    dataset: str,
    root: str | Path,
    input_dir: str | None = None,
    target_dir: str | None = None,
    input_glob: str | None = None,
    target_glob: str | None = None,
    pair_key: str | None = None,
    split_fractions: Sequence[float] | None = None,
) -> list[PairSpec]:
    """All pairs of a corpus (``daps``, ``idmt``, ``mixes``) or paired ``folder``, with their splits (through its
    :mod:`.sources` class, which holds the dataset's defaults)."""
    from .sources import FileSource, SourceOptions, make_source

    if root is None:
        raise DataError(f"data.root is not set: point it at the unpacked {dataset} corpus")
    options = SourceOptions(
        root=str(root),
        input_dir=input_dir,
        target_dir=target_dir,
        input_glob=input_glob,
        target_glob=target_glob,
        pair_key=pair_key,
        split_fractions=split_fractions,
    )
    source = make_source(dataset, options)
    if not isinstance(source, FileSource):
        raise DataError(f"unknown corpus {dataset!r} (folder, daps, idmt or mixes)")
    return source.pairs()


def missing_corpus(
    dataset: str,
    root: str | Path,
    input_dir: str | None = None,
    target_dir: str | None = None,
    input_glob: str | None = None,
) -> str:
    """One line for a corpus folder that is not there: where to put it and what its download is called."""
    given = Path(root).expanduser()
    at = f"{root} does not exist" + ("" if given.is_absolute() else f" (under {Path.cwd()})")
    elsewhere = "or point data.root at where it is"
    if dataset == "daps":
        inp, tgt = input_dir or DEFAULT_DIRS["daps"][0], target_dir or DEFAULT_DIRS["daps"][1]
        unpack = f" (tar xzf daps.tar.gz -C {given.parent})" if given.name == "daps" else ""
        return (
            f"{at}: download the DAPS (Device and Produced Speech) dataset, daps.tar.gz from Zenodo, and unpack it so "
            f"that {root}/{inp}/ and {root}/{tgt}/ exist{unpack}, {elsewhere}"
        )
    if dataset == "idmt":
        part = Path(input_glob).parts[0] if input_glob and len(Path(input_glob).parts) > 1 else None
        inner = f", then the '{part}.zip' inside it," if part else ""
        return (
            f"{at}: download the IDMT-SMT-Audio-Effects dataset, IDMT-SMT-AUDIO-EFFECTS.zip from Zenodo, and unzip it"
            f"{inner} into {root}" + (f" so that {root}/{part}/ exists" if part else "") + f", {elsewhere}"
        )
    inp, tgt = input_dir or DEFAULT_DIRS["mixes"][0], target_dir or DEFAULT_DIRS["mixes"][1]
    return (
        f"{at}: put unmastered and mastered versions of songs from The 'Mixing Secrets' Free Multitrack Download "
        f"Library (cambridge-mt.com, one download per song) in {root}/{inp}/ and {root}/{tgt}/, {elsewhere}"
    )


def default_cache_dir(root: str | Path) -> Path:
    return Path(root).expanduser() / ".afx_cache"
