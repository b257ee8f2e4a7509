"""Stereo and multichannel (issue 10, defect 7): θ predicted once per frame from the downmix, every channel rendered
with it (linked), the input's channels kept; training on stereo pairs with a mono chain refused in one line."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from afx_lightning.cli import main as afx_main
from afx_lightning.encoders import SmallEncoder
from afx_lightning.inference import InferenceError, Processor, _array_source
from afx_lightning.module import DeepAFx

SR = 22050


def _model(chain="pb_mb_compressor") -> DeepAFx:
    torch.manual_seed(0)
    return DeepAFx(chain=chain, encoder=functools.partial(SmallEncoder, width=8), num_slots=1, num_eval_slots=1,
                   fx_workers=1)


def _music(seconds: float, sr: int, freq: float, seed: int) -> np.ndarray:
    """A tone with a moving level and some noise, so a compressor has something to do."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = 0.05 + 0.5 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) ** 2
    return (env * (np.sin(2 * np.pi * freq * t) + 0.1 * rng.standard_normal(len(t)))).astype(np.float32)


def _db(a: np.ndarray, b: np.ndarray) -> float:
    return float(20 * np.log10((np.sqrt(np.mean(a.astype(np.float64) ** 2)) + 1e-30) / np.sqrt(np.mean(b.astype(np.float64) ** 2))))


def test_a_hard_panned_stereo_file_stays_hard_panned_through_afx_process(tmp_path):
    model = _model()
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "afx_encoder": model.encoder_spec, "datamodule_hyper_parameters": {"context_size": 4096}}, ckpt)
    left = _music(2.0, 44100, 220.0, seed=1)
    src, out = tmp_path / "left_only.wav", tmp_path / "out.wav"
    sf.write(src, np.stack([left, np.zeros_like(left)], axis=1), 44100, subtype="FLOAT")
    assert afx_main(["process", "--ckpt", str(ckpt), str(src), str(out), "--no-progress"]) == 0
    y, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 44100 and y.shape == (len(left), 2)
    assert np.sqrt(np.mean(y[:, 0] ** 2)) > 1e-3
    right_below_left = _db(y[:, 1], y[:, 0])
    print(f"\n[stereo] left-only input: right channel {right_below_left:.1f} dB re left (before: 0.0 dB, a copy)")
    assert right_below_left < -40.0


def test_each_channel_is_rendered_with_the_frames_parameters_as_if_alone():
    """Linked: output channel c is channel c rendered by itself with the θ predicted from the downmix."""
    processor = Processor(_model(), context_size=4096, smoothing_hz=2.0)
    a, b = _music(1.5, 44100, 220.0, seed=2), 0.3 * _music(1.5, 44100, 330.0, seed=3)
    stereo = _array_source(np.stack([a, b]), 44100)
    automation = processor.predict(stereo)
    chunks: list = []
    processor.render(stereo, automation, chunks.append)
    y = np.concatenate(chunks, axis=1)
    assert y.shape == (2, len(a))
    assert _db(y[0] - y[1], y[0]) > -10.0  # the two output channels differ as the inputs do
    for c, x in enumerate((a, b)):
        alone: list = []
        processor.render(_array_source(x[None], 44100), automation, alone.append)
        np.testing.assert_allclose(y[c], np.concatenate(alone, axis=1)[0], atol=1e-6)


def test_a_mono_input_renders_as_the_chain_does_frame_by_frame():
    """The mono path is unchanged: equal to the chain run in-process on the frames, latency removed."""
    model = _model("pb_mb_compressor")
    processor = Processor(model, context_size=4096, smoothing_hz=2.0)
    x = _music(1.3, SR, 200.0, seed=4)
    y, automation = processor.process_array(x[None], SR)
    n, lat = processor.frame_size, processor.latency
    frames = -(-(len(x) + lat) // n)
    padded = np.zeros(frames * n, dtype=np.float32)
    padded[: len(x)] = x
    chain = model.fx.chain_factory(sample_rate=SR, block_size=n)
    try:
        ref = np.concatenate([chain.process(padded[None, j * n : (j + 1) * n],
                                            automation.normalized[min(j, len(automation.normalized) - 1)])[0]
                              for j in range(frames)])
    finally:
        chain.close()
    np.testing.assert_allclose(y[0], ref[lat : lat + len(x)], atol=1e-6)


def test_a_frame_that_fails_on_one_channel_is_dry_on_that_channel_only():
    from afx_lightning.testing import TRIGGER_EXCEPTION, faulty_chain

    model = _model(faulty_chain)
    with torch.no_grad():
        model.encoder.init_output_bias(torch.tensor([0.75]))  # gain 1.5: wet and dry differ
    x = (0.1 * np.random.default_rng(5).standard_normal((2, 6 * 1024))).astype(np.float32)
    x[0, 3 * 1024] = TRIGGER_EXCEPTION
    processor = Processor(model, context_size=2048, smoothing_hz=0)
    y, _ = processor.process_array(x, SR)
    assert processor.last_stats.dropped_frames == 1
    dry = np.zeros(x.shape[1], dtype=bool)
    dry[3 * 1024 : 4 * 1024] = True
    np.testing.assert_array_equal(y[0, dry], x[0, dry])
    np.testing.assert_allclose(y[0, ~dry], 1.5 * x[0, ~dry], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y[1], 1.5 * x[1], rtol=1e-5, atol=1e-7)


def test_how_a_chains_channel_count_meets_the_inputs():
    """Mono chain: an instance per channel; a C-channel chain: the C-channel block, or a mono input duplicated in
    and averaged out; no guess for anything else."""
    def layout(chain_channels: int, input_channels: int):
        stub = SimpleNamespace(fx=SimpleNamespace(channels=chain_channels, info=SimpleNamespace(name="st")))
        return Processor.render_layout(stub, input_channels)

    assert [layout(1, c) for c in (1, 2, 6)] == [(1, 1), (2, 1), (6, 1)]
    assert layout(2, 2) == (1, 2) and layout(2, 1) == (1, 2)
    with pytest.raises(InferenceError, match=r"chain 'st' processes 2 channels and the input has 6") as err:
        layout(2, 6)
    assert "\n" not in str(err.value)


def test_training_on_stereo_pairs_with_a_mono_chain_fails_in_one_line_naming_data_channels(tmp_path):
    from lightning.pytorch import Trainer

    from afx_lightning.data import AudioFxDataModule, DataError

    t = np.arange(SR // 2) / SR
    for split in ("train", "val"):
        for name in ("a.wav", "b.wav"):
            x = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 500 * t)], axis=1)
            for kind, gain in (("input", 1.0), ("target", 0.5)):
                (tmp_path / split / kind).mkdir(parents=True, exist_ok=True)
                sf.write(tmp_path / split / kind / name, (gain * x).astype(np.float32), SR, subtype="FLOAT")
    dm = AudioFxDataModule(dataset="folder", root=str(tmp_path), channels=2, context_size=2048, batch_size=1,
                           val_batch_size=1, steps_per_epoch=1)
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)
    with pytest.raises(DataError) as err:
        trainer.fit(_model(), datamodule=dm)
    message = str(err.value)
    assert "data.channels is 2" in message and "pb_mb_compressor" in message and "\n" not in message
