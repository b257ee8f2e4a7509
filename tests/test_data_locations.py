"""Where the data lives: recipes that find their corpus in data/<name> (or say in one line where to put it), and
paired folders as users have them (just input/ and target/, any rate and channel count: split, converted, cached)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from afx_lightning.data import AudioFxDataModule, DataError
from afx_lightning.data import preprocess as pre
from afx_lightning.data.corpora import folder_pairs, split_files

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if p.stem != "quickstart")
RATE_IN = 44100  # what users' files are at ...
RATE = 22050  # ... and what the model runs at
N = 256
CONTEXT = 1024

# per corpus: the conventional folder and words of its download's name the missing-data line must contain
EXPECTED = {
    "daps": ("data/daps", ("DAPS (Device and Produced Speech)", "daps.tar.gz", "Zenodo")),
    "idmt": ("data/idmt", ("IDMT-SMT-Audio-Effects", "IDMT-SMT-AUDIO-EFFECTS.zip", "Zenodo")),
    "mixes": ("data/mixes", ("Mixing Secrets", "unmastered", "mastered")),
}


def recipe_data(path: Path) -> dict:
    return dict(yaml.safe_load(path.read_text())["data"])


def write(path: Path, audio: np.ndarray, rate: int = RATE_IN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype="FLOAT")
    return path


def tones(freqs: tuple[float, ...], samples: int, rate: int = RATE_IN, level: float = 0.4) -> np.ndarray:
    """(samples, channels): one sine per channel."""
    t = np.arange(samples) / rate
    return np.stack([level * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def flat_folder(root: Path, count: int, channels: int = 2) -> list[str]:
    """``root/input`` and ``root/target`` with ``count`` pairs at 44.1 kHz, odd lengths, no split folders."""
    names = []
    for i in range(count):
        name = f"take_{i:02d}.wav"
        x = tones((300.0 + 40 * i, 500.0 + 40 * i)[:channels], 3 * N * 2 + 2 * i + 1)
        write(root / "input" / name, x)
        write(root / "target" / name, 0.5 * x)
        names.append(name)
    return names


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.argmax(spectrum) * rate / audio.size)


def folder_module(root: Path, **kwargs) -> AudioFxDataModule:
    kwargs = {
        "sample_rate": RATE,
        "frame_size": N,
        "context_size": CONTEXT,
        "batch_size": 2,
        "val_batch_size": 1,
        "steps_per_epoch": 2,
        **kwargs,
    }
    return AudioFxDataModule(dataset="folder", root=str(root), **kwargs)


# ------------------------------------------------------------------------------------------------ 6. paired folders


def test_a_flat_folder_is_split_by_file_deterministically_disjointly_and_completely(tmp_path):
    names = flat_folder(tmp_path / "a", 20, channels=1)
    pairs = folder_pairs(tmp_path / "a")
    splits = {p.input.name: p.split for p in pairs}
    assert sorted(splits) == sorted(names)  # every file in exactly one split (a dict: no file twice)
    assert all(p.target == tmp_path / "a" / "target" / p.input.name for p in pairs)
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 16, "val": 2, "test": 2}  # 0.8/0.1/0.1 of 20 files
    # the same names elsewhere, written in another order: the same split (a hash of the name, not of the path/order)
    for name in reversed(names):
        for sub in ("input", "target"):
            write(tmp_path / "b" / sub / name, np.full((300, 1), 0.1, np.float32))
    assert {p.input.name: p.split for p in folder_pairs(tmp_path / "b")} == splits
    assert {p.input.name: p.split for p in folder_pairs(tmp_path / "a")} == splits  # and again
    # the fractions are respected
    other = {p.input.name: p.split for p in folder_pairs(tmp_path / "a", fractions=[0.5, 0.25, 0.25])}
    assert [sum(v == s for v in other.values()) for s in ("train", "val", "test")] == [10, 5, 5]
    # the data module plays exactly these files per split, as whole clips
    dm = folder_module(tmp_path / "a", split_fractions=[0.5, 0.25, 0.25], channels=1)
    dm.setup("fit")
    dm.setup("test")
    for split, clips in (("train", dm.train_clips), ("val", dm.val_clips), ("test", dm.test_clips)):
        assert sorted(c.name + ".wav" for c in clips) == sorted(n for n, s in other.items() if s == split)


def test_small_folders_still_get_a_val_file_and_one_file_is_refused_in_one_line(tmp_path):
    def counts(n):
        return [list(split_files([f"{i}.wav" for i in range(n)]).values()).count(s) for s in ("train", "val", "test")]

    assert counts(2) == [1, 1, 0]
    assert counts(3) == [1, 1, 1]
    assert counts(5) == [3, 1, 1]
    assert counts(1) == [1, 0, 0]
    flat_folder(tmp_path, 1)
    dm = folder_module(tmp_path)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "\n" not in message and "no val files" in message and "data.split_fractions" in message


@pytest.mark.parametrize("bad", [[0.8, 0.1], [0.5, 0.2, 0.1], [0.9, 0.0, 0.1], [1.2, -0.1, -0.1], ["x", 0.5, 0.5]])
def test_bad_split_fractions_are_one_line_naming_the_option(tmp_path, bad):
    flat_folder(tmp_path, 3)
    with pytest.raises(DataError) as err:
        folder_module(tmp_path, split_fractions=bad)
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.split_fractions must be") and str(bad) in message


def test_a_flat_folder_at_44k_stereo_is_resampled_and_kept_or_downmixed_per_data_channels(tmp_path):
    samples = RATE_IN // 2 + 1  # 0.5 s and an odd sample: the ceil of the resampled length is checked
    left, right = 1000.0, 1500.0
    for name in ("a.wav", "b.wav", "c.wav"):
        x = tones((left, right), samples)
        write(tmp_path / "input" / name, x)
        write(tmp_path / "target" / name, 0.5 * x)
    write(tmp_path / "input" / "mono.wav", tones((left,), samples))  # a mono pair among stereo ones
    write(tmp_path / "target" / "mono.wav", tones((left,), samples, level=0.2))
    expected_len = -(-samples * RATE // RATE_IN)

    stereo = folder_module(tmp_path, channels=2, split_fractions=[0.5, 0.5, 0.0])
    stereo.setup("fit")
    clips = [*stereo.train_clips, *stereo.val_clips]
    assert sorted(c.name for c in clips) == ["a", "b", "c", "mono"]
    assert stereo.num_channels == 2 and stereo.train_clips.sample_rate == RATE
    for clip in clips:
        assert clip.input.shape == clip.target.shape == (2, expected_len)
        assert clip.input.dtype == np.float32
        tail = slice(RATE // 10, -RATE // 10)  # away from the resampler's edges
        if clip.name == "mono":  # copied to both channels
            np.testing.assert_array_equal(clip.input[0], clip.input[1])
            assert abs(dominant_hz(clip.input[0, tail], RATE) - left) < 5
        else:  # each channel keeps its own tone at its frequency: resampled, not reinterpreted at the new rate
            assert abs(dominant_hz(clip.input[0, tail], RATE) - left) < 5
            assert abs(dominant_hz(clip.input[1, tail], RATE) - right) < 5
            assert abs(np.sqrt(2) * np.std(clip.input[0, tail]) - 0.4) < 0.01  # the level survives too
        np.testing.assert_allclose(clip.target, 0.5 * clip.input, atol=1e-5)

    mono = folder_module(tmp_path, channels=1, split_fractions=[0.5, 0.5, 0.0], cache_dir=str(tmp_path / "mono_cache"))
    mono.setup("fit")
    a = next(c for c in [*mono.train_clips, *mono.val_clips] if c.name == "a")
    assert a.input.shape == (1, expected_len)
    spectrum = np.abs(np.fft.rfft(a.input[0, RATE // 10 : RATE // 10 + RATE // 4]))  # 4 Hz bins
    peaks = sorted(np.argsort(spectrum)[-2:] * 4.0)
    assert abs(peaks[0] - left) <= 4 and abs(peaks[1] - right) <= 4  # the downmix holds both tones


def test_converted_folder_audio_is_cached_like_the_corpora_and_reused(tmp_path, monkeypatch):
    calls = []
    compute = pre._compute
    monkeypatch.setattr(pre, "_compute", lambda *a: calls.append(Path(a[0]).name) or compute(*a))
    names = flat_folder(tmp_path, 4)
    dm = folder_module(tmp_path, channels=2)
    dm.setup("fit")
    dm.setup("test")
    assert sorted(calls) == sorted(names)  # each pair converted once
    cache = sorted((tmp_path / ".afx_cache").glob("*.npz"))
    assert len(cache) == 4
    stamps = [p.stat().st_mtime_ns for p in cache]
    again = folder_module(tmp_path, channels=2)
    again.setup("fit")
    again.setup("test")
    assert len(calls) == 4  # a second run reads the cache ...
    assert [p.stat().st_mtime_ns for p in cache] == stamps  # ... and leaves it as it was
    np.testing.assert_array_equal(again.train_clips[0].input, dm.train_clips[0].input)
    folder_module(tmp_path, channels=1).setup("fit")  # another conversion: recomputed, cached beside
    assert len(calls) == 4 + len(dm.train_clips) + len(dm.val_clips)


def test_the_train_val_test_layout_keeps_working_and_ignores_split_fractions(tmp_path):
    for split in ("train", "val"):
        write(tmp_path / split / "input" / f"{split}.wav", tones((440.0,), 4 * N + 1, rate=RATE))
        write(tmp_path / split / "target" / f"{split}.wav", tones((440.0,), 4 * N + 1, rate=RATE, level=0.2))
    with pytest.warns(UserWarning, match="split_fractions"):
        dm = folder_module(tmp_path, split_fractions=[0.5, 0.5, 0.0])
    dm.setup("fit")
    assert [c.name for c in dm.train_clips] == ["train"] and [c.name for c in dm.val_clips] == ["val"]
    with pytest.raises(DataError, match="no test split"):
        dm.setup("test")


def test_a_folder_without_input_and_target_is_named(tmp_path):
    (tmp_path / "recordings").mkdir()
    with pytest.raises(DataError) as err:
        folder_module(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "input/" in message and "target/" in message


# ------------------------------------------------------------------------------------------------ 5. recipe data


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_corpus_recipe_names_its_folder_and_download_when_missing(recipe, tmp_path, monkeypatch):
    data = recipe_data(recipe)
    folder, words = EXPECTED[data["dataset"]]
    assert data["root"] == folder
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        AudioFxDataModule(**data)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{folder} does not exist (under {tmp_path})")
    for word in words:
        assert word in message, message
    assert not any(tmp_path.iterdir())  # nothing written while checking


def test_mastering_recipes_use_the_papers_preprocessing():
    for recipe in RECIPES:
        data = recipe_data(recipe)
        if data["dataset"] == "mixes":
            assert data["align"] is True and data["loudness_lufs"] == -25, recipe.name


def test_breath_recipe_via_the_cli_fails_in_one_line_before_any_run_folder(tmp_path):
    afx = Path(sys.executable).with_name("afx")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("AFX_DEBUG", None)
    result = subprocess.run(
        [str(afx), "fit", "--config", str(ROOT / "recipes" / "breath.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Seed set to")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "data/daps does not exist" in lines[0] and "DAPS" in lines[0] and "daps.tar.gz" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists() and not any(tmp_path.iterdir())  # no run folder, no logger files


def make_fake_daps(root: Path, speakers: tuple[str, ...] = ("f1", "m1", "f3", "f9", "m9", "f10", "m10")) -> None:
    """DAPS as it unpacks (cleanraw/ and clean/, the speakers the loader's splits use, macOS junk), at 44.1 kHz."""
    rng = np.random.default_rng(0)
    for speaker in speakers:
        x = (0.2 * rng.standard_normal(RATE_IN // 4 + 3)).astype(np.float32)
        write(root / "cleanraw" / f"{speaker}_script1_cleanraw.wav", x)
        write(root / "clean" / f"{speaker}_script1_clean.wav", 0.5 * x)
    (root / "clean" / "._f1_script1_clean.wav").write_bytes(b"\x00\x05\x16\x07")


def test_breath_recipe_finds_daps_in_data_daps(tmp_path, monkeypatch):
    make_fake_daps(tmp_path / "data" / "daps")
    monkeypatch.chdir(tmp_path)
    data = recipe_data(ROOT / "recipes" / "breath.yaml")
    dm = AudioFxDataModule(**data)  # exactly the recipe's data section, no flags
    dm.setup("fit")
    dm.setup("test")
    assert sorted(c.name for c in dm.val_clips) == ["f10_script1", "m10_script1"]
    assert sorted(c.name for c in dm.test_clips) == ["f9_script1", "m9_script1"]
    assert sorted(c.name for c in dm.train_clips) == ["f1_script1", "f3_script1", "m1_script1"]
    assert dm.train_clips[0].num_samples == -(-(RATE_IN // 4 + 3) * RATE // RATE_IN)  # resampled to 22 050 Hz
    assert len(list((tmp_path / "data" / "daps" / ".afx_cache").glob("*.npz"))) == 7
    # the same layout somewhere else is found with data.root
    shutil.move(tmp_path / "data" / "daps", tmp_path / "corpus")
    with pytest.raises(DataError, match="data/daps does not exist"):
        AudioFxDataModule(**data)
    assert AudioFxDataModule(**{**data, "root": str(tmp_path / "corpus")}).describe().startswith("data: daps")


def test_amp_and_mastering_recipes_find_their_corpus_in_its_folder(tmp_path, monkeypatch):
    """Listing only (at construction): the recipes' globs and pairing rules against the corpora's real file names."""
    monkeypatch.chdir(tmp_path)
    x = np.full((2 * N, 1), 0.1, np.float32)
    samples = tmp_path / "data" / "idmt" / "Gitarre monophon" / "Samples"
    for i, note in enumerate(("40100", "45502")):  # IDMT names: instrument-note-effect/setting-id
        write(samples / "NoFX" / f"G61-{note}-1111-{20000 + i}.wav", x)
        for setting in (1, 2, 3):  # three settings per effect: the recipe takes setting 1
            write(samples / "Distortion" / f"G61-{note}-441{setting}-{30000 + 3 * i + setting}.wav", x)
    amp = AudioFxDataModule(**recipe_data(ROOT / "recipes" / "amp.yaml"))
    assert sorted((p.input.name, p.target.name) for p in amp.source.pairs()) == [
        ("G61-40100-1111-20000.wav", "G61-40100-4411-30001.wav"),
        ("G61-45502-1111-20001.wav", "G61-45502-4411-30004.wav"),
    ]
    for raw, master in (("Song A.wav", "Song A_master.wav"), ("Other Song_mix.wav", "other song mastered.wav")):
        write(tmp_path / "data" / "mixes" / "unmastered" / raw, x)
        write(tmp_path / "data" / "mixes" / "mastered" / master, x)
    mastering = AudioFxDataModule(**recipe_data(ROOT / "recipes" / "mastering.yaml"))
    assert sorted(p.target.name for p in mastering.source.pairs()) == ["Song A_master.wav", "other song mastered.wav"]
