"""Public-corpus loaders and the cached preprocessing: pairing, splits, resampling, alignment, loudness, errors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from afx_lightning.data import AudioFxDataModule, DataError
from afx_lightning.data import preprocess as pre
from afx_lightning.data.corpora import (
    CorpusClips,
    PairSpec,
    corpus_pairs,
    daps_pairs,
    glob_pairs,
    hash_split,
    mix_pairs,
    mix_stem,
)
from afx_lightning.data.preprocess import PreprocessOptions, augment_input, prepare_pair, read_mono

SR = 8000
N = 16
CONTEXT = 64


def noise(seconds: float, rate: int = SR, seed: int = 0, level: float = 0.3) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * rate))).clip(-1, 1).astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int = SR, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype="PCM_16" if path.suffix == ".flac" else subtype)
    return path


def opts(**kwargs) -> PreprocessOptions:
    kwargs.setdefault("sample_rate", SR)
    return PreprocessOptions(**kwargs)


def one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# --------------------------------------------------------------------------------------------------- DAPS


DAPS_SPEAKERS = ("f1", "m1", "f3", "f9", "m9", "f10", "m10")


def make_daps(root: Path, seconds: float = 0.5) -> Path:
    daps = root / "daps"
    for i, speaker in enumerate(DAPS_SPEAKERS):
        for script in (1, 2):
            x = noise(seconds, seed=10 * i + script)
            write(daps / "cleanraw" / f"{speaker}_script{script}_cleanraw.wav", x)
            write(daps / "clean" / f"{speaker}_script{script}_clean.wav", 0.5 * x)
            write(daps / "ipad_office1" / f"{speaker}_script{script}_ipad_office1.wav", 0.25 * x)
    (daps / "clean" / "._f1_script1_clean.wav").write_bytes(
        b"\x00\x05\x16\x07 AppleDouble"
    )  # macOS junk in the archive
    (daps / "cleanraw" / "._f1_script1_cleanraw.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    return daps


def test_daps_pairs_and_speaker_splits(tmp_path):
    daps = make_daps(tmp_path)
    pairs = daps_pairs(daps)
    assert len(pairs) == 2 * len(DAPS_SPEAKERS)
    for p in pairs:
        assert p.input.name == f"{p.name}_cleanraw.wav" and p.target.name == f"{p.name}_clean.wav"
    splits = {p.name: p.split for p in pairs}
    assert splits["f10_script1"] == splits["m10_script2"] == "val"
    assert splits["f9_script1"] == splits["m9_script2"] == "test"
    assert {splits[f"{s}_script1"] for s in ("f1", "m1", "f3")} == {"train"}
    # device folders pair by the name without their "_<folder>" suffix
    device = daps_pairs(daps, input_dir="ipad_office1", target_dir="clean")
    assert {p.name for p in device} == {p.name for p in pairs}


def test_daps_missing_target_names_the_file(tmp_path):
    daps = make_daps(tmp_path)
    (daps / "clean" / "m1_script2_clean.wav").unlink()
    with pytest.raises(DataError) as err:
        daps_pairs(daps)
    one_line_naming(err, daps / "cleanraw" / "m1_script2_cleanraw.wav")


def test_daps_datamodule_end_to_end_with_cache(tmp_path):
    daps = make_daps(tmp_path)
    dm = AudioFxDataModule(
        dataset="daps",
        root=str(daps),
        sample_rate=SR,
        batch_size=2,
        val_batch_size=2,
        frame_size=N,
        context_size=CONTEXT,
        steps_per_epoch=2,
        highpass_hz=60.0,
    )
    assert (dm.input_dir, dm.target_dir) == ("cleanraw", "clean")
    dm.setup("fit")
    assert sorted(c.name for c in dm.val_clips) == ["f10_script1", "f10_script2", "m10_script1", "m10_script2"]
    assert len(dm.train_clips) == 6 and dm.num_channels == 1
    assert len(dm.test_clips) == 4
    assert len(list((daps / ".afx_cache").glob("*.npz"))) == 14
    batch = next(iter(dm.train_dataloader()))
    assert batch["frame"].shape == (2, 1, N)


def test_corpus_datamodule_option_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/daps here: the conventional folder is named with its download
    with pytest.raises(DataError, match=r"^data/daps does not exist .*daps\.tar\.gz"):
        AudioFxDataModule(dataset="daps")
    with pytest.raises(DataError, match=r"channels"):
        AudioFxDataModule(dataset="mixes", root=str(tmp_path), channels=2)
    with pytest.raises(DataError, match=r"input_glob"):
        corpus_pairs("idmt", tmp_path)


# --------------------------------------------------------------------------------------------------- mixes, globs


def test_mixes_pair_by_stem_and_split_by_hash(tmp_path):
    names = [
        ("Song A.wav", "song a_master.wav"),
        ("Track-2_mix.wav", "TRACK 2 MASTERED.wav"),
        ("remix.wav", "Remix_Master.wav"),
        ("Blue.flac", "blue.wav"),
    ]
    for i, (raw, master) in enumerate(names):
        x = noise(0.3, seed=i)
        write(tmp_path / "unmastered" / raw, x)
        write(tmp_path / "mastered" / master, 2 * x)
    pairs = mix_pairs(tmp_path)
    assert {(p.input.name, p.target.name) for p in pairs} == set(names)
    assert mix_stem("Track-2_mix.wav") == mix_stem("track 2 MASTERED.wav") == "track2"
    assert mix_stem("song_remix.wav") == "songremix"  # "mix" inside a word is not a tag
    assert [p.split for p in pairs] == [p.split for p in mix_pairs(tmp_path)]  # deterministic
    for p in pairs:
        assert p.split == hash_split(mix_stem(p.input), (0.81, 0.095, 0.095))
    # the hash split follows the fractions
    splits = [hash_split(f"song{i}", (0.81, 0.095, 0.095)) for i in range(4000)]
    assert abs(splits.count("train") / 4000 - 0.81) < 0.03
    assert abs(splits.count("val") / 4000 - 0.095) < 0.02
    (tmp_path / "mastered" / "blue.wav").unlink()
    with pytest.raises(DataError) as err:
        mix_pairs(tmp_path)
    one_line_naming(err, tmp_path / "unmastered" / "Blue.flac")


def test_idmt_style_glob_pairs(tmp_path):
    base = tmp_path / "Gitarre monophon" / "Samples"
    for i, note in enumerate(("40100", "40200", "40300")):
        x = noise(0.2, seed=i)
        write(base / "NoFX" / f"G61-{note}-1111-{20000 + i}.wav", x)
        write(base / "Distortion" / f"G61-{note}-4411-{30000 + i}.wav", np.tanh(4 * x))
    pairs = glob_pairs(
        tmp_path,
        "Gitarre monophon/Samples/NoFX/*.wav",
        "Gitarre monophon/Samples/Distortion/*.wav",
        r"^(?P<key>[A-Z]\d+-\d+)-",
    )
    assert [p.name for p in pairs] == ["G61-40100", "G61-40200", "G61-40300"]
    assert all(p.target.parent.name == "Distortion" and p.split in ("train", "val", "test") for p in pairs)
    assert [p.split for p in pairs] == [hash_split(p.name, (0.8, 0.1, 0.1)) for p in pairs]
    with pytest.raises(DataError, match="also matches"):  # a key that is not unique
        glob_pairs(
            tmp_path, "Gitarre monophon/Samples/NoFX/*.wav", "Gitarre monophon/Samples/Distortion/*.wav", r"^G61"
        )


# --------------------------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("lag", [300, -120])
def test_alignment_finds_and_removes_a_known_lag(tmp_path, lag):
    x = noise(1.0, seed=3)
    if lag > 0:
        y = np.concatenate([np.zeros(lag, np.float32), 0.5 * x])[: x.size]
    else:
        y = np.concatenate([0.5 * x[-lag:], np.zeros(-lag, np.float32)])
    result = prepare_pair(write(tmp_path / "in.wav", x), write(tmp_path / "out.wav", y), opts())
    assert result.lag == lag
    n = x.size - abs(lag)
    assert result.input.size == result.target.size == n
    np.testing.assert_allclose(result.target, 0.5 * result.input, atol=1e-6)
    off = prepare_pair(tmp_path / "in.wav", tmp_path / "out.wav", opts(align=False))
    assert off.lag == 0 and off.input.size == x.size


@pytest.mark.parametrize("rate", [44100, 8000, 96000])
def test_resampling_to_the_model_rate(tmp_path, rate):
    n = rate + 37
    x = noise(n / rate, rate=rate, seed=rate)
    path = write(tmp_path / "in.wav", x, rate)
    result = prepare_pair(path, path, opts(sample_rate=22050, align=False))
    assert result.input.size == int(np.ceil(n * 22050 / rate))
    assert pre.resample(x, rate, 22050).size == result.input.size


def test_stereo_downmix_and_sample_formats(tmp_path):
    t = np.arange(SR) / SR
    left, right = 0.5 * np.sin(2 * np.pi * 220 * t), 0.25 * np.sin(2 * np.pi * 330 * t)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    mono, rate = read_mono(write(tmp_path / "stereo.wav", stereo))
    assert rate == SR and mono.shape == (SR,)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)
    as_int, _ = read_mono(write(tmp_path / "int16.wav", stereo[:, 0], subtype="PCM_16"))
    as_float, _ = read_mono(write(tmp_path / "float.wav", stereo[:, 0], subtype="FLOAT"))
    assert as_int.dtype == as_float.dtype == np.float32
    np.testing.assert_allclose(as_int, as_float, atol=1.0 / 32768 + 1e-7)


def test_loudness_normalises_the_input_only(tmp_path):
    import pyloudnorm

    rate = 22050
    x = noise(5.0, rate=rate, seed=5, level=0.05)
    y = np.tanh(8 * x).astype(np.float32)
    result = prepare_pair(
        write(tmp_path / "in.wav", x, rate),
        write(tmp_path / "out.wav", y, rate),
        opts(sample_rate=rate, loudness_lufs=-25.0),
    )
    meter = pyloudnorm.Meter(rate)
    assert result.input.shape[0] == 1  # (channels, samples)
    assert abs(meter.integrated_loudness(result.input[0].astype(np.float64)) + 25.0) < 0.5
    assert result.gain_db != 0.0
    np.testing.assert_allclose(result.target[0], y, atol=1e-6)  # the master keeps its loudness


def test_highpass_applies_to_both(tmp_path):
    t = np.arange(2 * SR) / SR
    x = (0.4 + 0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)  # DC offset + tone
    result = prepare_pair(
        write(tmp_path / "in.wav", x), write(tmp_path / "out.wav", x), opts(highpass_hz=60.0, align=False)
    )
    tail = slice(SR, None)  # after the filter settled
    for audio in (result.input[0], result.target[0]):
        assert abs(float(np.mean(audio[tail]))) < 0.01
        assert 0.25 < float(np.max(np.abs(audio[tail]))) < 0.35


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    calls = []
    compute = pre._compute
    monkeypatch.setattr(pre, "_compute", lambda *a: calls.append(a[0]) or compute(*a))
    x = noise(1.0, seed=1)
    inp, tgt = write(tmp_path / "in.wav", x), write(tmp_path / "out.wav", 0.5 * x)
    cache = tmp_path / "cache"
    first = prepare_pair(inp, tgt, opts(), cache)
    second = prepare_pair(inp, tgt, opts(), cache)
    assert len(calls) == 1 and not first.cached and second.cached
    np.testing.assert_array_equal(first.input, second.input)
    np.testing.assert_array_equal(first.target, second.target)
    prepare_pair(inp, tgt, opts(highpass_hz=80.0), cache)  # another option: recomputed
    assert len(calls) == 2
    write(inp, 0.9 * x)  # the file changed: recomputed
    os.utime(inp, ns=(inp.stat().st_atime_ns, inp.stat().st_mtime_ns + 10**9))
    third = prepare_pair(inp, tgt, opts(), cache)
    assert len(calls) == 3 and not third.cached
    assert not np.array_equal(third.input, first.input)
    # the data module's corpora go through the same cache
    clips = CorpusClips([PairSpec(inp, tgt, "one", "train")], opts(), cache)
    assert len(clips) == 1 and len(calls) == 3


def test_augmentation_is_input_only_and_deterministic():
    x = noise(1.0, seed=9)
    a = augment_input(x, (0, 1, 2), noise_snr_db=(10.0, 20.0), gain_db=(-6.0, 6.0))
    b = augment_input(x, (0, 1, 2), noise_snr_db=(10.0, 20.0), gain_db=(-6.0, 6.0))
    c = augment_input(x, (0, 1, 3), noise_snr_db=(10.0, 20.0), gain_db=(-6.0, 6.0))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, x)
    np.testing.assert_array_equal(augment_input(x, 0), x)


# --------------------------------------------------------------------------------------------------- errors


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = noise(1.0, seed=4)
    bad = {}
    empty = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    bad["empty"] = (empty, "no samples")
    truncated = write(tmp_path / "truncated.wav", good, subtype="PCM_16")
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size // 2)
    bad["truncated"] = (truncated, "truncated")
    header_only = write(tmp_path / "cut_header.wav", good)
    with open(header_only, "r+b") as f:
        f.truncate(20)
    bad["cut header"] = (header_only, "")
    text = tmp_path / "notes.wav"
    text.write_text("these are my notes, not audio\n" * 20)
    bad["not audio"] = (text, "not a readable audio file")
    bad["nan"] = (
        write(tmp_path / "nan.wav", np.where(np.arange(good.size) == 99, np.nan, good).astype(np.float32)),
        "NaN",
    )
    bad["inf"] = (
        write(tmp_path / "inf.wav", np.where(np.arange(good.size) == 7, np.inf, good).astype(np.float32)),
        "Inf",
    )
    return bad


@pytest.mark.parametrize("problem", ["empty", "truncated", "cut header", "not audio", "nan", "inf"])
@pytest.mark.parametrize("role", ["input", "target"])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, problem, role):
    path, words = _bad_files(tmp_path)[problem]
    good = write(tmp_path / "good.wav", noise(1.0, seed=4))
    args = (path, good) if role == "input" else (good, path)
    with pytest.raises(DataError) as err:
        prepare_pair(*args, opts(), tmp_path / "cache")
    assert words in one_line_naming(err, path)
    assert not list((tmp_path / "cache").glob("*.npz")) if (tmp_path / "cache").exists() else True


def test_length_mismatch_and_missing_target(tmp_path):
    x = noise(2.0, seed=6)
    inp = write(tmp_path / "in.wav", x)
    short = write(tmp_path / "short.wav", x[: x.size // 2])
    with pytest.raises(DataError) as err:
        prepare_pair(inp, short, opts())
    assert "overlap" in one_line_naming(err, inp)
    assert str(short) in str(err.value)
    # a small export tail is fine: cut to the overlap
    ok = prepare_pair(inp, write(tmp_path / "tail.wav", x[: x.size - 50]), opts())
    assert ok.input.size == x.size - 50
    with pytest.raises(DataError) as err:
        prepare_pair(inp, tmp_path / "missing.wav", opts())
    assert "missing target" in one_line_naming(err, tmp_path / "missing.wav")


def test_silent_input_is_skipped_with_a_warning(tmp_path):
    x = noise(0.5, seed=7)
    pairs = [
        PairSpec(write(tmp_path / "a.wav", x), write(tmp_path / "a_t.wav", x), "a", "train"),
        PairSpec(write(tmp_path / "quiet.wav", np.zeros_like(x)), write(tmp_path / "quiet_t.wav", x), "quiet", "train"),
    ]
    clips = CorpusClips(pairs, opts(loudness_lufs=-25.0), tmp_path / "cache")
    with pytest.warns(UserWarning, match="quiet.wav: input is silent"):
        assert [c.name for c in clips] == ["a"]
    again = CorpusClips(pairs, opts(loudness_lufs=-25.0), tmp_path / "cache")  # cached as silent: still warns
    with pytest.warns(UserWarning, match="silent"):
        assert len(again) == 1
    with warnings.catch_warnings(), pytest.raises(DataError, match="every input clip is silent"):
        warnings.simplefilter("ignore")
        len(CorpusClips(pairs[1:], opts(), tmp_path / "cache"))


@pytest.mark.parametrize("rate,channels", [(22050, 1), (44100, 2)])
def test_the_streamed_loudness_meter_and_high_pass_equal_their_whole_signal_references(rate, channels):
    """Inference measures and filters a file block by block with the same LoudnessMeter and Highpass the data
    pipeline uses on a whole clip: fed in random chunks they give pyloudnorm's integrated loudness and the
    one-shot filter (which matches torchaudio's highpass_biquad, the implementation before them)."""
    import pyloudnorm
    import torch
    import torchaudio.functional as AF

    rng = np.random.default_rng(rate)
    n = int(2.7 * rate) + 11
    x = (0.2 * rng.standard_normal((channels, n)) * np.linspace(0, 1, n) ** 3).astype(np.float32)
    x[:, n // 3 : n // 2] = 0  # silence for the gates
    chunks = np.cumsum(rng.integers(1, 5000, 200))
    parts = np.split(x, chunks[chunks < n], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = pyloudnorm.Meter(rate).integrated_loudness(
            x[0].astype(np.float64) if channels == 1 else x.T.astype(np.float64)
        )
    meter = pre.LoudnessMeter(rate, channels)
    for part in parts:
        meter.push(part)
    assert meter.integrated() == pytest.approx(reference, abs=1e-9)
    assert meter._power.shape[1] < 0.5 * rate + 5000  # about one block held, not the signal

    whole = pre.highpass(x, rate, 60.0)
    stream = pre.Highpass(rate, 60.0)
    np.testing.assert_allclose(np.concatenate([stream(p) for p in parts], axis=1), whole, atol=1e-7)
    scale = 0.5 / np.abs(x).max()
    old = AF.highpass_biquad(torch.from_numpy(x * scale), rate, 60.0).numpy() / scale
    np.testing.assert_allclose(whole, old, atol=1e-4 * np.abs(x).max())
