"""``afx process`` / :mod:`afx_lightning.inference`: safe loading, streaming two-pass processing, automation export.

A model is fitted for two steps in-process (SmallEncoder, 8192-sample context) and saved with
``trainer.save_checkpoint``; every test reuses that checkpoint.
"""

from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from afx_lightning.blackbox import FxConfig
from afx_lightning.cli import main as afx_main
from afx_lightning.encoders import SmallEncoder
from afx_lightning.inference import (
    InferenceError,
    Processor,
    StreamingResampler,
    load_model,
    max_step,
    smooth_automation,
)
from afx_lightning.inference.audio_io import _array_source
from afx_lightning.module import DeepAFx
from afx_lightning.testing import delay_chain

MAX_STEP = 0.3  # normalised units per frame after smoothing at 2 Hz (frame rate 21.5 Hz)


class Evil:
    """Stands for any object a checkpoint should not be able to smuggle in."""

    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from afx_lightning.testing import fit_tiny_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    return path, fit_tiny_checkpoint(path)


def _tone(seconds: float, sr: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """[T, C] music-like test signal whose level moves, so a compressor has something to do."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = 0.05 + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.2 * t)) ** 2
    chans = [
        env * (np.sin(2 * np.pi * (180 + 40 * c) * t) + 0.1 * rng.standard_normal(len(t))) for c in range(channels)
    ]
    return np.stack(chans, axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("orig,new", [(44100, 22050), (22050, 44100), (48000, 22050)])
def test_streamed_resampling_matches_resampling_at_once(orig, new):
    import torchaudio.functional as AF

    t = np.arange(int(1.3 * orig)) / orig
    x = (0.5 * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    whole = AF.resample(torch.from_numpy(x), orig, new).numpy()
    rs = StreamingResampler(orig, new, step=3000)
    rng = np.random.default_rng(0)
    parts, i = [], 0
    while i < len(x):
        k = int(rng.integers(1, 5000))
        parts.append(rs.push(x[i : i + k]))
        i += k
    parts.append(rs.flush())
    streamed = np.concatenate(parts)
    assert len(streamed) == len(whole) == rs.output_length(len(x))
    assert np.abs(streamed - whole).max() < 1e-4  # no clicks at chunk joints (and the ends match too)


def test_smoothing_bounds_frame_to_frame_jumps_and_guards_short_inputs():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, size=(500, 3)).astype(np.float32)
    smooth = smooth_automation(raw, 22050 / 1024, 2.0)
    assert max_step(raw) > 0.8 and max_step(smooth) < MAX_STEP
    assert smooth.min() >= 0 and smooth.max() <= 1
    for frames in (1, 2, 5):  # fewer frames than filtfilt's default padlen
        assert smooth_automation(raw[:frames], 21.5, 2.0).shape == (frames, 3)
    np.testing.assert_allclose(smooth_automation(raw, 21.5, 0.0), raw)


# ------------------------------------------------------------------------------------------- whole files


def test_three_minute_stereo_file_keeps_length_rate_channels_and_exports_automation(trained, tmp_path):
    ckpt, original = trained
    model = load_model(ckpt)
    assert model.context_size == 8192
    probe = torch.randn(3, 1, 8192)
    with torch.no_grad():  # the encoder was rebuilt from the checkpoint's plain-data spec
        torch.testing.assert_close(model.encoder(probe), original.encoder(probe))

    sr, x = 44100, _tone(180.0, 44100)
    src, out = tmp_path / "song.wav", tmp_path / "song_fx.wav"
    sf.write(src, x, sr, subtype="PCM_16")
    processor = Processor(model, smoothing_hz=2.0)
    stats = processor.process_file(
        src, out, automation=tmp_path / "auto.csv", plot=tmp_path / "auto.png", progress=False
    )

    info = sf.info(out)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (sr, 2, len(x), "PCM_16")
    y, _ = sf.read(out, dtype="float32")
    assert np.isfinite(y).all() and np.abs(y).max() > 1e-3
    assert np.abs(y[:, 0] - y[:, 1]).max() > 0.05  # each channel rendered (linked θ), not one copied to both
    assert stats.frames == -(-len(x) // 2 // 1024) and stats.dropped_frames == 0

    rows = list(csv.reader(open(tmp_path / "auto.csv")))
    names = model.param_names
    units = [f"{p.name}[{p.unit}]" for p in model.fx.info.trainable_params]
    assert rows[0] == ["time_s", *names, *units]
    table = np.array(rows[1:], dtype=np.float64)
    assert len(table) == stats.frames
    theta = table[:, 1 : 1 + len(names)]
    assert theta.min() >= 0 and theta.max() <= 1 and max_step(theta) < MAX_STEP
    spec = model.fx.info.trainable_params[0]
    np.testing.assert_allclose(
        table[:, 1 + len(names)], [spec.to_display(u) for u in theta[:, 0]], rtol=1e-4, atol=1e-4
    )
    assert (tmp_path / "auto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(
        f"\n[process] 180 s 44.1 kHz stereo: {stats.wall_s:.1f} s wall (predict {stats.predict_s:.1f} s, "
        f"render {stats.render_s:.1f} s), real-time factor {stats.real_time_factor:.3f}"
    )


@pytest.mark.parametrize("sr,channels", [(22050, 1), (44100, 2)])
def test_latency_is_compensated_and_output_is_aligned(sr, channels, tmp_path):
    """delay_chain outputs the previous 1024-sample block (latency 1024): output must line up with the input."""
    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain=delay_chain, workers=1),
        num_slots=1,
        num_eval_slots=1,
    )
    assert model.fx.latency == 1024
    # also through a checkpoint: a chain factory from afx_lightning.testing is an allowed global
    ckpt = tmp_path / "delay.ckpt"
    # a checkpoint from before the afx_model description: flat hyper-parameters (the chain among them)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {**dict(model.hparams), "chain": delay_chain},
            "afx_encoder": model.encoder.get_config(),
        },
        ckpt,
    )
    model = load_model(ckpt)
    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal((channels, int(2.5 * sr)))).astype(np.float32)
    y, automation = Processor(model, context_size=4096).process_array(x, sr)
    assert y.shape == x.shape
    gain = automation.values[:, 0]
    assert np.all(np.abs(gain - 1.0) < 0.2)
    for c in range(channels):  # every channel rendered and aligned on its own
        ref = x[c]
        lags = np.arange(-2048, 2049)
        mid = slice(4096, len(ref) - 4096)
        corr = [np.dot(ref[mid], np.roll(y[c], -lag)[mid]) for lag in lags]
        assert lags[int(np.argmax(corr))] == 0
        if sr != model.hparams.sample_rate:  # the model runs at 22.05 kHz: compare with the band it can keep
            import torchaudio.functional as AF

            ref = AF.resample(AF.resample(torch.from_numpy(ref), sr, 22050), 22050, sr).numpy()
        np.testing.assert_allclose(y[c, 2048:-2048] / gain.mean(), ref[2048:-2048], atol=0.02)


def test_silent_file_and_cli(trained, tmp_path, capsys):
    ckpt, _ = trained
    src, out = tmp_path / "silence.wav", tmp_path / "out.wav"
    sf.write(src, np.zeros((22050 * 2, 1), np.float32), 22050, subtype="FLOAT")
    args = [
        "process",
        "--ckpt",
        str(ckpt),
        str(src),
        str(out),
        "--no-progress",
        "--automation",
        str(tmp_path / "a.json"),
    ]
    assert afx_main(args) == 0
    y, rate = sf.read(out, dtype="float32")
    assert rate == 22050 and len(y) == 44100 and np.isfinite(y).all() and sf.info(out).subtype == "FLOAT"
    data = json.loads((tmp_path / "a.json").read_text())
    assert set(data) == {"frame_rate", "params", "normalized", "values"}
    assert len(data["normalized"]) == len(data["values"]) == 44 and len(data["params"][0]) == 5

    capsys.readouterr()
    assert afx_main(args) == 2  # the output exists now
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("afx process:") and str(out) in err and "--overwrite" in err
    assert afx_main([*args, "--overwrite"]) == 0


# ------------------------------------------------------------------------------------------- errors


def test_bad_inputs_and_outputs_fail_with_one_clear_line(trained, tmp_path):
    ckpt, _ = trained
    processor = Processor(load_model(ckpt))
    good = tmp_path / "good.wav"
    sf.write(good, _tone(0.5, 22050, 1), 22050)
    cases = []
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    cases.append((text, tmp_path / "o1.wav", "notes.wav"))
    cases.append((tmp_path / "missing.wav", tmp_path / "o2.wav", "missing.wav"))
    nan = tmp_path / "nan.wav"
    bad = _tone(1.0, 22050, 1)
    bad[15000] = np.nan
    sf.write(nan, bad, 22050, subtype="FLOAT")
    cases.append((nan, tmp_path / "o3.wav", "NaN"))
    cases.append((good, tmp_path / "no_such_dir" / "o4.wav", "no_such_dir"))
    cases.append((good, good, "is the input"))
    for src, out, needle in cases:
        with pytest.raises(InferenceError) as err:
            processor.process_file(src, out, progress=False)
        message = str(err.value)
        assert needle in message and "\n" not in message, message
        assert not out.exists() or out == good
    assert not list(tmp_path.glob(".o3.wav.*"))  # the partial output of the NaN file was removed


def test_safe_loading_refuses_pickled_objects_and_foreign_classes(trained, tmp_path):
    ckpt, model = trained
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {}, "payload": Evil()}, evil)
    with pytest.raises(InferenceError, match="needs unsafe unpickling") as err:
        load_model(evil)
    assert "print" in str(err.value)

    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["afx_model"]["encoder"] = {"class_path": "torch.nn.Linear", "init_args": {"in_features": 1}}
    foreign = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, foreign)
    with pytest.raises(InferenceError, match="'torch.nn.Linear' is not a declared encoder"):
        load_model(foreign)


def test_a_chain_whose_parameter_count_changed_is_refused(trained, tmp_path):
    ckpt, model = trained
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    p = model.fx.num_params
    state = checkpoint["state_dict"]
    state["encoder.head.weight"] = torch.zeros(p + 1, state["encoder.head.weight"].shape[1])
    state["encoder.head.bias"] = torch.zeros(p + 1)
    checkpoint["afx_encoder"]["init_args"]["num_params"] = p + 1
    changed = tmp_path / "changed.ckpt"
    torch.save(checkpoint, changed)
    with pytest.raises(InferenceError) as err:
        load_model(changed)
    assert f"P={p + 1}" in str(err.value) and f"P={p}" in str(err.value) and "pb_mb_compressor" in str(err.value)


def test_a_failing_plugin_frame_is_passed_through_dry_and_counted():
    """Frames whose first sample is a trigger make the plugin raise / segfault (in its worker process)."""
    from afx_lightning.testing import TRIGGER_CRASH, TRIGGER_EXCEPTION, faulty_chain

    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain=faulty_chain, workers=1),
        num_slots=1,
        num_eval_slots=1,
    )
    x = (0.1 * np.random.default_rng(2).standard_normal((1, 8 * 1024))).astype(np.float32)
    x[0, 3 * 1024], x[0, 5 * 1024] = TRIGGER_EXCEPTION, TRIGGER_CRASH
    processor = Processor(model, context_size=2048)
    y, automation = processor.process_array(x, 22050)
    assert processor.last_stats.dropped_frames == 2
    for k in (3, 5):
        np.testing.assert_array_equal(y[0, k * 1024 : (k + 1) * 1024], x[0, k * 1024 : (k + 1) * 1024])
    gain = automation.values[:, 0]
    np.testing.assert_allclose(y[0, :1024], gain[0] * x[0, :1024], rtol=1e-4, atol=1e-6)


def test_a_dropped_frame_in_a_chain_with_latency_lands_where_the_wet_one_would_have():
    """Gain 1.5 then a 300-sample delay that raises on frame 3. Compensated, the failed call's output spans input
    samples 2772..3795: it comes out as the dry input of exactly those samples; the next frame's first 300 (the
    rest of frame 3, which its fresh instance never saw) are dry too. Every other sample is wet: 1.5 x."""
    from afx_lightning.testing import TRIGGER_EXCEPTION, faulty_delay_chain

    n, latency = 1024, 300
    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain=faulty_delay_chain, workers=1),
        num_slots=1,
        num_eval_slots=1,
    )
    assert model.fx.latency == latency
    with torch.no_grad():
        model.encoder.init_output_bias(torch.tensor([0.75]))  # gain 1.5 for any input: wet and dry differ
    x = (0.1 * np.random.default_rng(3).standard_normal((1, 8 * n))).astype(np.float32)
    x[0, 3 * n] = TRIGGER_EXCEPTION
    processor = Processor(model, context_size=2048, smoothing_hz=0)
    y, _ = processor.process_array(x, 22050)
    assert processor.last_stats.dropped_frames == 1
    dry = np.zeros(x.shape[1], dtype=bool)
    dry[3 * n - latency : 4 * n] = True
    np.testing.assert_array_equal(y[0, dry], x[0, dry])
    np.testing.assert_allclose(y[0, ~dry], 1.5 * x[0, ~dry], rtol=1e-5, atol=1e-7)


def test_predicting_every_nth_frame_interpolates_the_rest(trained):
    ckpt, _ = trained
    model = load_model(ckpt)
    x = _tone(4.0, 22050, channels=1).T.astype(np.float32)
    full = Processor(model, smoothing_hz=0).process_array(x, 22050)[1].raw
    hop = Processor(model, smoothing_hz=0, predict_hop=4).process_array(x, 22050)[1].raw
    frames = full.shape[0]
    predicted = [i for i in range(frames) if i % 4 == 0] + [frames - 1]
    np.testing.assert_allclose(hop[predicted], full[predicted], atol=1e-5)  # same encoder outputs there
    np.testing.assert_allclose(hop[2], (hop[0] + hop[4]) / 2, atol=1e-6)  # linear in between
    with pytest.raises(ValueError, match="predict_hop must be at least 1"):
        Processor(model, predict_hop=0)


# ------------------------------------------------------------------------------------------- preprocessing (issue 10, 1)


def _delay_model(preprocessing=None) -> DeepAFx:
    """A model whose chain only delays (latency 480, compensated): what it renders is exactly what it was fed."""
    from afx_lightning.testing import pure_delay_chain

    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4),
        fx=FxConfig(chain=pure_delay_chain, workers=1),
        num_slots=1,
        num_eval_slots=1,
    )
    model.preprocessing = preprocessing
    return model


def _checkpoint(model: DeepAFx, path, drop_preprocessing: bool = False, legacy: bool = False):
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    if drop_preprocessing:  # a description written before it carried the preprocessing
        checkpoint["afx_model"].pop("preprocessing", None)
    if legacy:  # a checkpoint from before the description (its hyper-parameters were flat, the chain among them)
        del checkpoint["afx_model"]
        checkpoint["hyper_parameters"]["chain"] = model.fx_config.chain
    torch.save(checkpoint, path)
    return path


def _music(seconds: float, level_db: float, seed: int = 0, rumble: float = 0.0) -> np.ndarray:
    from afx_lightning.data import synthesize

    x = synthesize(np.random.default_rng(seed), int(seconds * 22050), 22050)
    x = x / np.abs(x).max() * 10 ** (level_db / 20)
    x = x + rumble * np.sin(2 * np.pi * 30.0 * np.arange(len(x)) / 22050)
    return x[None].astype(np.float32)


def _contexts(model: DeepAFx) -> list:
    seen: list = []
    model.encoder.register_forward_pre_hook(lambda module, args: seen.extend(args[0][:, 0].numpy().copy()))
    return seen


def test_a_model_trained_at_minus_25_lufs_sees_a_quiet_file_at_minus_25_lufs(tmp_path):
    """Checkpoint preprocessing: input loudness -25 LUFS. A file at about -52 LUFS is measured whole (pass 0) and
    raised by the gain training's own function computes: the encoder's contexts and what the chain renders
    are at -25 LUFS, and the output says what gain was applied. Before: no gain, the model met -52 LUFS."""
    import pyloudnorm

    from afx_lightning.data.preprocess import Preprocessing

    prep = Preprocessing(loudness_lufs=-25.0)
    model = load_model(_checkpoint(_delay_model(prep), tmp_path / "m.ckpt"))
    assert model.preprocessing == prep
    x = _music(3.0, -38.0)
    src, out = tmp_path / "quiet.wav", tmp_path / "out.wav"
    sf.write(src, x[0], 22050, subtype="FLOAT")
    meter = pyloudnorm.Meter(22050)
    before = meter.integrated_loudness(x[0].astype(np.float64))
    assert before < -40
    expected, gain = prep.apply(x, 22050)  # what the data pipeline does to a training input
    seen = _contexts(model)
    processor = Processor(model, context_size=2048, share_log_mel=False)  # the contexts themselves, seen by a hook
    stats = processor.process_file(src, out, progress=False)
    y, _ = sf.read(out, dtype="float32")
    print(
        f"\n[preprocessing] input {before:.1f} LUFS, gain {stats.input_gain_db:+.2f} dB, "
        f"output {meter.integrated_loudness(y.astype(np.float64)):.2f} LUFS"
    )
    assert stats.input_gain_db == pytest.approx(gain, abs=1e-6) and gain > 15
    assert meter.integrated_loudness(y.astype(np.float64)) == pytest.approx(-25.0, abs=0.01)  # what the chain got
    np.testing.assert_allclose(y, expected[0], atol=1e-6)
    before_frame = (2048 - 1024) // 2
    padded = np.pad(expected[0], (before_frame, 2048))
    assert len(seen) == -(-x.shape[1] // 1024)
    for i in (0, 7, len(seen) - 1):  # the encoder's context of frame i, zero-padded at the ends as in training
        np.testing.assert_allclose(seen[i], padded[i * 1024 : i * 1024 + 2048], atol=1e-6)
    assert f"normalised to -25 LUFS ({gain:+.1f} dB gain)" in stats.preprocessing


def test_high_pass_and_loudness_at_inference_equal_the_training_pipeline_across_read_blocks(tmp_path):
    """High-pass 100 Hz and -25 LUFS: a 4 s file (two read blocks) with 30 Hz rumble comes out of the pure delay
    exactly as ``prepare_pair`` prepares the same file as a training input, rumble removed."""
    from afx_lightning.data.preprocess import (
        Preprocessing,
        PreprocessOptions,
        prepare_pair,
    )

    prep = Preprocessing(highpass_hz=100.0, loudness_lufs=-25.0)
    model = load_model(_checkpoint(_delay_model(prep), tmp_path / "m.ckpt"))
    x = _music(4.0, -20.0, seed=2, rumble=0.05)
    assert x.shape[1] > 65536
    src = tmp_path / "in.wav"
    sf.write(src, x[0], 22050, subtype="FLOAT")
    y, _ = Processor(model, context_size=2048).process_array(x, 22050)
    trained = prepare_pair(src, src, PreprocessOptions(align=False, highpass_hz=100.0, loudness_lufs=-25.0))
    np.testing.assert_allclose(y, trained.input, atol=2e-6)

    def rumble_db(a):  # the 30 Hz line relative to the music above 200 Hz
        spectrum, hz = np.abs(np.fft.rfft(a[0])), np.fft.rfftfreq(a.shape[1], 1 / 22050)
        return 20 * np.log10(spectrum[np.argmin(np.abs(hz - 30))] / np.sqrt(np.mean(spectrum[hz > 200] ** 2)))

    assert rumble_db(y) < rumble_db(x) - 15


@pytest.mark.parametrize("kind", ["description without preprocessing", "legacy"])
def test_a_checkpoint_that_records_no_preprocessing_processes_as_before(kind, tmp_path):
    path = _checkpoint(_delay_model(), tmp_path / "m.ckpt", drop_preprocessing=True, legacy=kind == "legacy")
    model = load_model(path)
    assert not model.preprocessing.active
    x = _music(2.0, -38.0)
    processor = Processor(model, context_size=2048)
    y, automation = processor.process_array(x, 22050)
    assert automation.input_gain_db is None and processor.last_stats.preprocessing == ""
    np.testing.assert_allclose(y, x, atol=1e-7)  # the pure delay, compensated: the input untouched


def test_the_data_modules_preprocessing_is_saved_and_used_by_predict(tmp_path):
    """fit writes the data module's Preprocessing into afx_model; load_model and a LightningCLI-restored model
    (on_load_checkpoint, as afx predict/validate build it) read it back; predict_step applies it."""
    import types

    from afx_lightning.data import AudioFxDataModule
    from afx_lightning.data.preprocess import Preprocessing
    from afx_lightning.data.writer import PredictionFileWriter

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("input", "target"):
            (tmp_path / "d" / split / sub).mkdir(parents=True)
            sf.write(tmp_path / "d" / split / sub / "a.wav", 0.1 * rng.standard_normal(22050), 22050)
    dm = AudioFxDataModule(dataset="folder", root=str(tmp_path / "d"), highpass_hz=60.0, loudness_lufs=-25.0)
    assert dm.preprocessing == Preprocessing(60.0, -25.0) == dm.preprocess_options().preprocessing
    writer = _delay_model()
    writer._trainer = types.SimpleNamespace(datamodule=dm)
    path = _checkpoint(writer, tmp_path / "m.ckpt")
    checkpoint = torch.load(path, weights_only=False)  # hyper_parameters hold the chain function
    assert checkpoint["afx_model"]["preprocessing"] == {"highpass_hz": 60.0, "loudness_lufs": -25.0}
    assert load_model(path).preprocessing == dm.preprocessing

    restored = _delay_model()
    restored.on_load_checkpoint(checkpoint)
    assert restored.preprocessing == dm.preprocessing
    (tmp_path / "out").mkdir()
    restored._trainer = types.SimpleNamespace(datamodule=AudioFxDataModule(predict_output_dir=str(tmp_path / "out")))
    x = _music(2.0, -38.0)
    sf.write(tmp_path / "song.wav", x[0], 22050, subtype="FLOAT")
    result = restored.predict_step(str(tmp_path / "song.wav"), 0)
    PredictionFileWriter().write_on_batch_end(restored._trainer, restored, result, None, None, 0)
    assert result.audio is None and result.output == str(tmp_path / "out" / "song.wav")  # written, then released
    y, _ = sf.read(result.output, dtype="float32")
    np.testing.assert_allclose(y, dm.preprocessing.apply(x, 22050)[0][0], atol=2e-6)
    assert result.input_gain_db > 10 and "high-passed at 60 Hz" in result.preprocessing


# ------------------------------------------------------------------------------------------- shared log-mel (issue 14)


@pytest.mark.parametrize("context,seconds,hop", [(40960, 2.3, 1), (8192, 3.0001, 3), (1024, 0.7, 1)])
def test_the_file_log_mel_gives_the_theta_of_per_context_encoding(context, seconds, hop):
    """The log-mel computed once per file and sliced per frame gives every frame's θ as encoding its own
    zero-padded context does: files whose length is no multiple of the frame (nor of the mel hop), contexts
    longer than the file (every frame at an edge), one FFT window, and every 3rd frame. Tolerance 1e-5 (float
    rounding of the batched FFT / mel projection; θ in (0, 1))."""
    torch.manual_seed(0)
    model = DeepAFx(
        fx=FxConfig(chain="pb_mb_compressor", workers=1),
        encoder=functools.partial(SmallEncoder, width=4),
        num_slots=1,
        num_eval_slots=1,
    )
    try:
        with torch.no_grad():  # a non-trivial front-end norm, as after training
            model.encoder.frontend.norm.running_mean.fill_(-3.0)
            model.encoder.frontend.norm.running_var.fill_(2.0)
            model.encoder.head.weight.normal_(0.0, 30.0)  # DeepAFx starts at the defaults whatever the input
        x = _tone(seconds, 22050, channels=1).T
        x = x * np.geomspace(0.01, 1.0, x.shape[1], dtype=np.float32)  # a level that moves
        x[:, -300:] *= 4.0  # something at the end edge
        kwargs = dict(smoothing_hz=0, context_size=context, predict_hop=hop, batch_size=5)
        shared = Processor(model, **kwargs)
        assert shared.shares_log_mel
        source = __import__("afx_lightning.inference", fromlist=["_array_source"])._array_source(x, 22050)
        fast = shared.predict(source).raw
        slow = Processor(model, share_log_mel=False, **kwargs).predict(source).raw
        assert fast.shape == slow.shape == (-(-x.shape[1] // 1024), model.fx.num_params)
        assert np.ptp(slow, axis=0).max() > 0.05  # the frames differ: a shifted slice would be caught
        np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=0)
    finally:
        model.fx.close()


def test_a_centred_front_end_falls_back_to_per_context_encoding():
    model = DeepAFx(
        fx=FxConfig(chain="pb_mb_compressor", workers=1),
        encoder=functools.partial(SmallEncoder, width=4),
        num_slots=1,
        num_eval_slots=1,
    )
    try:
        model.encoder.frontend.mel.spectrogram.center = True
        assert not Processor(model, context_size=4096).shares_log_mel
        model.encoder.frontend.mel.spectrogram.center = False
        assert not Processor(model, context_size=4096, share_log_mel=False).shares_log_mel
        assert Processor(model, context_size=4096).shares_log_mel
    finally:
        model.fx.close()


# ------------------------------------------------------------------------------------ many files


def test_later_files_reuse_the_render_workers_on_fresh_plugin_state(tmp_path):
    """The reference chain's low-pass filter carries its state across blocks: state carried from one file to the
    next would put file A's tail at the start of file B. B through a warm Processor must equal B through a new one."""
    from afx_lightning.testing import reference_chain

    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain=reference_chain, workers=1),
        num_slots=1,
        num_eval_slots=1,
    )
    a, b = _tone(3.0, 22050, 2, seed=1).T[:, : 64 * 1024], _tone(2.0, 22050, 2, seed=2).T  # A ends on a frame
    with pytest.raises(InferenceError, match=r"more channels than samples \(transposed"):
        Processor(model).process_array(a.T, 22050)
    with Processor(model, context_size=4096) as warm:
        warm.process_array(a, 22050)
        pids = [p.pid for p in warm._pool._procs]
        after_a, _ = warm.process_array(b, 22050)
        assert [p.pid for p in warm._pool._procs] == pids  # the same workers rendered both files
        procs = warm._pool._procs
        warm.process_array(b[:1], 22050)  # another channel count: another layout, new workers
        assert all(p.poll() is not None for p in procs)
        mono_pool = warm._pool
    assert warm._pool is None and mono_pool.closed  # close() (leaving the with) stopped them
    with Processor(model, context_size=4096) as cold:
        alone, _ = cold.process_array(b, 22050)
    assert np.abs(b).max() > 0.1 and np.abs(alone[:, :4096]).max() > 0.1
    np.testing.assert_array_equal(after_a, alone)


def test_afx_process_output_dir_processes_every_file_and_reports_the_bad_one(trained, tmp_path, capsys):
    ckpt, _ = trained
    inputs = [tmp_path / "a.wav", tmp_path / "missing.wav", tmp_path / "b.wav"]
    sf.write(inputs[0], _tone(1.0, 22050, 1), 22050)
    sf.write(inputs[2], _tone(1.5, 44100, 2), 44100)
    out = tmp_path / "out"
    code = afx_main(["process", "--ckpt", str(ckpt), "--output-dir", str(out), "--no-progress", *map(str, inputs)])
    err = capsys.readouterr().err
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "b.wav"]
    assert sf.info(out / "b.wav").samplerate == 44100 and sf.info(out / "b.wav").channels == 2
    assert [line for line in err.splitlines() if "missing.wav" in line][0].startswith("afx process:")
    assert "1 of 3 file(s) failed" in err

    def usage_error(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_:
            afx_main(["process", "--ckpt", str(ckpt), *args])
        assert exit_.value.code == 2
        return capsys.readouterr().err

    assert "INPUT OUTPUT (got 3 file(s))" in usage_error(*map(str, inputs))
    assert "--plot names one file" in usage_error("--output-dir", str(out), "--plot", "p.png", str(inputs[0]))
    twin = tmp_path / "sub" / "a.wav"
    assert "same output" in usage_error("--output-dir", str(out), str(inputs[0]), str(twin))
    code = afx_main(["process", "--ckpt", str(ckpt), "--output-dir", str(inputs[0]), str(inputs[2])])  # a file
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("afx process: --output-dir") and "\n" not in err


def test_an_int8_encoder_keeps_the_float_features_and_parameters(tmp_path):
    """int8 (x86 backend) against float32 on the same weights, over a file that fades from loud to 30 dB quieter
    (calibrated on its loud start): the body's features within 2% (relative norm) and θ within 0.01; the module
    really is quantized. The streaming encoder and compile together with quantize are refused by name."""
    from afx_lightning.encoders import InceptionEncoder, TemporalConvEncoder
    from afx_lightning.inference.processor import _quantized

    model = DeepAFx(
        encoder=functools.partial(InceptionEncoder, width=16, num_stages=3),
        fx=FxConfig(chain=delay_chain, workers=1),
        num_slots=1,
        num_eval_slots=1,
    )
    audio = (_tone(8.0, 22050, 1, seed=3).T * np.logspace(0, -1.5, 8 * 22050)).astype(np.float32)
    contexts = torch.from_numpy(np.stack([audio[:, s : s + 40960] for s in range(0, 8 * 22050 - 40960, 11025)]))
    encoder = model.encoder
    with torch.no_grad():  # batch-norm statistics from real contexts
        encoder.train()
        encoder(contexts)
        encoder.eval()
        mel = encoder.frontend(contexts)
        fast = _quantized(encoder)
        fast.body(mel[:4])  # calibrates on the loud first contexts
        features, int8_features = encoder.body(mel), fast.body(mel)
    error = (int8_features - features).norm(dim=1) / features.norm(dim=1)
    assert error.max() < 0.02, error  # measured 0.006
    assert any(".quantized" in type(m).__module__ for m in fast.body.int8.modules())  # int8 convolutions

    quiet = _quantized(encoder)
    with torch.no_grad():
        quiet.body(mel[-4:])  # calibrated on the quietest contexts only: the loud start must still fit its input range
    graph = quiet.body.int8
    node = next(n for n in graph.graph.nodes if n.target is torch.quantize_per_tensor)
    scale, zero = (float(getattr(graph, a.target)) for a in node.args[1:3])
    assert mel[:4].max() <= (127 - zero) * scale * 1.01  # quint8 with reduce_range: 0..127

    float_theta = Processor(model, smoothing_hz=0).predict(_array_source(audio, 22050)).raw
    int8_theta = Processor(model, smoothing_hz=0, quantize=True).predict(_array_source(audio, 22050)).raw
    assert 0 < np.abs(int8_theta - float_theta).max() < 0.01
    with pytest.raises(InferenceError, match="streaming encoder"):  # the CLI prints it as one line
        Processor(DeepAFx(encoder=TemporalConvEncoder, fx=FxConfig(chain=delay_chain)), quantize=True)
    with pytest.raises(ValueError, match="choose one"):
        Processor(model, compile=True, quantize=True)
