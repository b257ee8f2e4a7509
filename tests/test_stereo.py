"""Stereo and multichannel (issue 10, defect 7): θ predicted once per frame from the downmix, every channel rendered
with it (linked), the input's channels kept; training on stereo pairs with a mono chain refused in one line."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from afx_lightning.blackbox import FxConfig
from afx_lightning.cli import main as afx_main
from afx_lightning.encoders import SmallEncoder
from afx_lightning.inference import InferenceError, Processor, _array_source
from afx_lightning.module import DeepAFx

SR = 22050


def _model(chain="pb_mb_compressor") -> DeepAFx:
    torch.manual_seed(0)
    return DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain=chain, workers=1),
        num_slots=1,
        num_eval_slots=1,
    )


def _music(seconds: float, sr: int, freq: float, seed: int) -> np.ndarray:
    """A tone with a moving level and some noise, so a compressor has something to do."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = 0.05 + 0.5 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) ** 2
    return (env * (np.sin(2 * np.pi * freq * t) + 0.1 * rng.standard_normal(len(t)))).astype(np.float32)


def _db(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        20
        * np.log10((np.sqrt(np.mean(a.astype(np.float64) ** 2)) + 1e-30) / np.sqrt(np.mean(b.astype(np.float64) ** 2)))
    )


def test_a_hard_panned_stereo_file_stays_hard_panned_through_afx_process(tmp_path):
    model = _model()
    ckpt = tmp_path / "model.ckpt"
    legacy_hparams = {**dict(model.hparams), "chain": "pb_mb_compressor"}  # from before afx_model: flat
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": legacy_hparams,
            "afx_encoder": model.encoder.get_config(),
            "datamodule_hyper_parameters": {"context_size": 4096},
        },
        ckpt,
    )
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
        ref = np.concatenate(
            [
                chain.process(
                    padded[None, j * n : (j + 1) * n], automation.normalized[min(j, len(automation.normalized) - 1)]
                )[0]
                for j in range(frames)
            ]
        )
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
    and averaged out; no guess for anything else. One rule (ChannelLayout) for afx process and training."""
    from afx_lightning.blackbox.channels import ChannelLayout

    def layout(chain_channels: int, input_channels: int):
        stub = SimpleNamespace(fx=SimpleNamespace(channels=1, info=SimpleNamespace(name="st", channels=chain_channels)))
        stub._layout = lambda c: Processor._layout(stub, c)
        return Processor.render_layout(stub, input_channels)

    assert [layout(1, c) for c in (1, 2, 6)] == [(1, 1), (2, 1), (6, 1)]
    assert layout(2, 2) == (1, 2) and layout(2, 1) == (1, 2)
    with pytest.raises(InferenceError, match=r"chain 'st' processes 2 channels and the input has 6") as err:
        layout(2, 6)
    assert "\n" not in str(err.value)
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # [M, C, N]
    mono = ChannelLayout.of(1, 3, "m")
    assert mono.slots([0, 5]) == [0, 1, 2, 15, 16, 17] and mono.rows([True, False]) == [True] * 3 + [False] * 3
    pool_rows = mono.split(x)
    assert pool_rows.shape == (6, 1, 4)
    np.testing.assert_array_equal(
        mono.merge(np.stack([pool_rows, 2 * pool_rows], axis=1)), np.stack([x, 2 * x], axis=1)
    )
    np.testing.assert_array_equal(mono.channel_failed(np.array([0, 1, 0, 0, 0, 0], bool)), [[0, 1, 0], [0, 0, 0]])
    dup = ChannelLayout.of(2, 1, "s")
    np.testing.assert_array_equal(dup.split(x[:, :1]), np.repeat(x[:, :1], 2, axis=1))
    np.testing.assert_array_equal(dup.merge(np.stack([x[:, :2]], axis=1)), x[:, :2].mean(1, keepdims=True)[:, None])


def _stereo_folder(root, seconds: float = 0.5):
    t = np.arange(int(seconds * SR)) / SR
    for split in ("train", "val"):
        for name in ("a.wav", "b.wav"):
            x = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 500 * t)], axis=1)
            for kind, gain in (("input", 1.0), ("target", 0.5)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                sf.write(root / split / kind / name, (gain * x).astype(np.float32), SR, subtype="FLOAT")
    return root


def test_stereo_pairs_train_a_mono_chain_per_channel_and_a_mismatched_model_fails_naming_data_channels(tmp_path):
    """channels: 2 on stereo pairs trains (before: refused in one line); a model built in code for mono data meets
    the stereo clips with a one-line error naming data.channels instead of failing in the plugin pool."""
    from lightning.pytorch import Trainer

    from afx_lightning.data import AudioFxDataModule, DataError

    root = _stereo_folder(tmp_path)

    def fit(model):
        dm = AudioFxDataModule(
            dataset="folder",
            root=str(root),
            channels=2,
            context_size=2048,
            batch_size=2,
            val_batch_size=1,
            steps_per_epoch=2,
        )
        trainer = Trainer(
            max_steps=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=1,
        )
        trainer.fit(model, datamodule=dm)
        return trainer

    with pytest.raises(DataError) as err:
        fit(_model())
    message = str(err.value)
    assert "data.channels is 2" in message and "pb_mb_compressor" in message and "\n" not in message
    torch.manual_seed(0)
    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain="pb_mb_compressor", workers=1),
        channels=2,
        num_slots=2,
        num_eval_slots=1,
    )
    trainer = fit(model)
    assert trainer.global_step == 2 and np.isfinite(float(trainer.callback_metrics["val/loss"]))
    clip = next(iter(model.evaluated_clips().values()))
    assert clip["output"].shape[0] == 2  # both channels rendered and scored
    assert model.get_config()["channels"] == 2


def test_a_two_channel_chain_refuses_three_channels_and_duplicates_mono_in():
    from afx_lightning.blackbox import BlackBoxLayer
    from afx_lightning.testing import stereo_chain

    with pytest.raises(ValueError) as err:
        BlackBoxLayer(stereo_chain, block_size=256, channels=3, num_slots=1, num_eval_slots=1, num_workers=1)
    assert "data.channels is 3" in str(err.value) and "'cross_feed' processes 2 channels" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="data.channels is 3"):  # and the same through the model's constructor
        DeepAFx(
            encoder=functools.partial(SmallEncoder, width=4),
            fx=FxConfig(chain=stereo_chain),
            channels=3,
            num_slots=1,
        )
    layer = BlackBoxLayer(stereo_chain, block_size=256, channels=1, num_slots=1, num_eval_slots=1, num_workers=1).eval()
    try:
        x = torch.randn(1, 1, 256)
        y = layer(x, torch.tensor([[0.3]]), torch.tensor([0]), torch.tensor([True]))
    finally:
        layer.close()
    torch.testing.assert_close(y, x)  # duplicated in, cross-fed, averaged back: a mono signal is its own mix


def test_state_is_carried_per_channel_across_blocks():
    """A mono chain on stereo rows: each channel's instance keeps its own state from block to block (training's
    forward render and evaluation), equal to that channel rendered alone through a fresh instance."""
    from afx_lightning.blackbox import BlackBoxLayer
    from afx_lightning.testing import delay_chain, reference_chain

    n, blocks = 256, 4
    x = np.random.default_rng(6).standard_normal((2, 2, blocks * n)).astype(np.float32)
    theta = torch.tensor([[0.3, 0.6, 0.5], [0.8, 0.2, 0.4]])
    for chain, th in ((reference_chain, theta), (delay_chain, theta[:, :1])):
        layer = BlackBoxLayer(chain, block_size=n, channels=2, num_slots=2, num_eval_slots=2, num_workers=2)
        try:
            for mode in ("train", "eval"):
                layer.train(mode == "train")
                y = torch.cat(
                    [
                        layer(
                            torch.from_numpy(x[..., j * n : (j + 1) * n]),
                            th,
                            torch.tensor([0, 1]),
                            torch.tensor([j == 0] * 2),
                        ).detach()
                        for j in range(blocks)
                    ],
                    dim=-1,
                ).numpy()
                for m in range(2):
                    for c in range(2):
                        alone = chain(sample_rate=SR, block_size=n)
                        ref = np.concatenate(
                            [
                                alone.process(x[m, c : c + 1, j * n : (j + 1) * n], th[m].numpy())[0]
                                for j in range(blocks)
                            ]
                        )
                        alone.close()
                        np.testing.assert_allclose(y[m, c], ref, atol=1e-6, err_msg=f"{chain.__name__} {mode} {m} {c}")
        finally:
            layer.close()


def test_spsa_perturbs_the_channels_of_a_slot_with_one_direction():
    """θ is one vector per row: both channels' instances get the same θ ± εΔ, so a channel-symmetric input gives
    identical renders on both channels, perturbed ones included (the gradient sums both channels' projections)."""
    from afx_lightning.blackbox import BlackBoxLayer
    from afx_lightning.testing import reference_chain

    layer = BlackBoxLayer(
        reference_chain, block_size=256, channels=2, num_slots=3, num_eval_slots=1, num_workers=2, num_perturbations=2
    )
    try:
        x = torch.randn(3, 1, 256).expand(3, 2, 256).contiguous()
        theta = torch.rand(3, 3, requires_grad=True)
        out = layer(x, theta, torch.arange(3), torch.ones(3, dtype=torch.bool))
        rendered = layer.last_result.out  # [M, 1 + 2K, C, N]
        assert rendered.shape == (3, 5, 2, 256)
        np.testing.assert_array_equal(rendered[:, :, 0], rendered[:, :, 1])
        assert np.abs(rendered[:, 1] - rendered[:, 0]).max() > 0  # the perturbed instances did render θ + εΔ
        out.sum().backward()
        assert torch.isfinite(theta.grad).all() and theta.grad.abs().sum() > 0
    finally:
        layer.close()


def test_a_stereo_known_answer_pair_trains_with_linked_parameters():
    """Left and right are independent noise, both rendered at the same hidden settings: the loss over both channels
    drops and the settings are found from stereo audio (one θ per frame driving both channels)."""
    from afx_lightning.testing import fit_known_answer, reference_chain

    truth = {"smoothing": 0.8, "drive": 2.5, "gain": -6.0}
    fit = fit_known_answer(
        reference_chain, truth, steps=120, batch=4, lr=1e-2, channels=2, clip_frames=4, block_size=512
    )
    print(
        f"\n[stereo] known answer: loss {fit.first_loss:.3f} -> {fit.last_loss:.3f}, found {fit.found} in {fit.seconds:.1f} s"
    )
    assert fit.last_loss < 0.5 * fit.first_loss
    assert abs(fit.found["smoothing"] - truth["smoothing"]) < 0.05
    # at these levels tanh is nearly linear: drive and gain trade off, their product is what the audio fixes
    product = lambda p: p["drive"] * 10 ** (p["gain"] / 20)  # noqa: E731
    assert abs(product(fit.found) / product(truth) - 1) < 0.2


def test_a_model_trained_on_stereo_keeps_a_hard_panned_file_hard_panned(tmp_path):
    """The description records channels: 2; afx process rebuilds the model with it and a left-only source stays left."""
    from afx_lightning.inference import load_model

    torch.manual_seed(0)
    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain="pb_mb_compressor", workers=1),
        channels=2,
        num_slots=1,
        num_eval_slots=1,
    )
    ckpt = tmp_path / "stereo.ckpt"
    model.context_size = 4096
    torch.save({"state_dict": model.state_dict(), "afx_model": model.get_config()}, ckpt)
    assert load_model(ckpt).fx.channels == 2
    left = _music(1.5, 44100, 220.0, seed=7)
    src, out = tmp_path / "left_only.wav", tmp_path / "out.wav"
    sf.write(src, np.stack([left, np.zeros_like(left)], axis=1), 44100, subtype="FLOAT")
    assert afx_main(["process", "--ckpt", str(ckpt), str(src), str(out), "--no-progress"]) == 0
    y, _ = sf.read(out, dtype="float32", always_2d=True)
    assert y.shape == (len(left), 2) and _db(y[:, 1], y[:, 0]) < -40.0


@pytest.mark.slow
def test_afx_fit_quickstart_on_stereo_folders_then_afx_process_keeps_the_image(tmp_path):
    """The user's path: the real CLI trains recipes/quickstart.yaml on a tiny stereo folder set with
    --data.channels 2, and afx process on its checkpoint rebuilds the stereo model and keeps a left-only file left."""
    import subprocess

    from test_training import QUICKSTART, TINY_RUN, run_cli

    root = _stereo_folder(tmp_path / "pairs", seconds=1.0)
    result = run_cli(
        "fit",
        "--config",
        QUICKSTART,
        *TINY_RUN,
        "--trainer.max_steps",
        "3",
        "--data.steps_per_epoch",
        "3",
        "--data.dataset",
        "folder",
        "--data.root",
        str(root),
        "--data.channels",
        "2",
        "--data.context_size",
        "4096",
        "--trainer.logger",
        "false",
        cwd=tmp_path,
        script="afx",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = sorted(tmp_path.rglob("last.ckpt"))[0]
    config = torch.load(ckpt, map_location="cpu", weights_only=False)["afx_model"]
    assert config["channels"] == 2
    left = _music(1.0, SR, 220.0, seed=8)
    sf.write(tmp_path / "left.wav", np.stack([left, np.zeros_like(left)], axis=1), SR, subtype="FLOAT")
    afx = result.args[0]
    done = subprocess.run(
        [afx, "process", "--ckpt", str(ckpt), "left.wav", "out.wav", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert y.shape == (len(left), 2) and _db(y[:, 1], y[:, 0]) < -40.0
