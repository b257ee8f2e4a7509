"""Checkpoints describe their model as plain data (``afx_model``) and load weights-only from that alone.

Nothing named in a checkpoint is imported unless it is a registered chain or a declared encoder: the shipped ones
or an installed package's ``afx_lightning.encoders`` entry point. The models here are built, never trained (no
plugin worker starts): loading only needs the description and the weights.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from afx_lightning.blackbox import FxConfig
from afx_lightning.description import CONFIG_KEY
from afx_lightning.encoders import SmallEncoder, TemporalConvEncoder, declared_encoders
from afx_lightning.inference import InferenceError, InferenceModel, load_inference_model, load_model
from afx_lightning.module import DeepAFx

#: both loaders read a checkpoint the same way: the commands' (no Lightning) and the whole training module
LOADERS = pytest.mark.parametrize("load", [load_inference_model, load_model], ids=["inference", "training"])


def _model(encoder=None) -> DeepAFx:
    return DeepAFx(
        encoder=encoder or functools.partial(SmallEncoder, width=4),
        fx=FxConfig(chain="pb_mb_compressor", workers=1, epsilon=0.02),
        num_slots=2,
        num_eval_slots=1,
        lr=3e-3,
    )


def _save(model: DeepAFx, path: Path, **extra) -> dict:
    """What ``trainer.save_checkpoint`` writes, plus ``extra`` keys (e.g. what another tool adds)."""
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    checkpoint.update(extra)
    torch.save(checkpoint, path)
    return checkpoint


def _probe(model: DeepAFx) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().encoder(torch.randn(2, 1, 4096, generator=torch.Generator().manual_seed(0)))


def test_description_is_plain_data_and_is_all_loading_uses(tmp_path):
    model = _model()
    with torch.no_grad():  # weights that differ from a fresh model's, so the comparison below means something
        for p in model.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.context_size = 8192
    path = tmp_path / "m.ckpt"
    # LightningCLI's `_instantiator` and anything else in hyper_parameters must not matter
    checkpoint = _save(model, path)
    checkpoint["hyper_parameters"].update(
        _instantiator="lightning.pytorch.cli.instantiate_module", bogus=1, chain="nope"
    )
    torch.save(checkpoint, path)

    config = checkpoint[CONFIG_KEY]
    assert json.loads(json.dumps(config)) == config  # plain data only
    assert config["chain"] == "pb_mb_compressor" and config["num_params"] == model.fx.num_params
    assert config["encoder"]["class_path"] == "afx_lightning.encoders.small.SmallEncoder"
    assert config["encoder"]["init_args"]["width"] == 4
    assert (config["sample_rate"], config["frame_size"], config["data"]["context_size"]) == (22050, 1024, 8192)
    assert config["options"]["lr"] == 3e-3 and "_instantiator" not in config["options"]

    loaded = load_model(path)
    assert loaded.context_size == 8192 and loaded.fx.estimator.epsilon == 0.02 and loaded.hparams.num_slots == 1
    assert loaded.fx.num_workers == 1 and loaded.hparams.lr == 3e-3
    assert loaded.param_names == model.param_names
    torch.testing.assert_close(_probe(loaded), _probe(model))


def test_the_inference_model_is_the_trained_encoder_and_chain_with_what_processing_needs(tmp_path):
    """What ``afx process`` / ``evaluate`` load (no Lightning) predicts what the training module predicts, with
    the same audio format, automation smoothing, context, preprocessing and plugin-layer options."""
    from afx_lightning.data.preprocess import Preprocessing
    from afx_lightning.inference import Processor, _array_source

    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4),
        fx=FxConfig(chain="pb_mb_compressor", workers=3, epsilon=0.04),
        num_slots=2, num_eval_slots=1, smoothing_hz=0.5,
    )  # fmt: skip
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.context_size, model.preprocessing = 8192, Preprocessing(highpass_hz=40.0, loudness_lufs=-20.0)
    path = tmp_path / "m.ckpt"
    _save(model, path)
    fast, full = load_inference_model(path), load_model(path)
    assert isinstance(fast, InferenceModel) and not isinstance(fast, DeepAFx)
    for name in ("sample_rate", "frame_size", "smoothing_hz", "context_size", "preprocessing", "param_names"):
        assert getattr(fast, name) == getattr(full, name) == getattr(model, name), name
    assert (fast.fx.estimator.epsilon, fast.fx.num_workers, fast.fx.num_slots) == (0.04, 1, 1)
    assert not fast.training
    torch.testing.assert_close(_probe(fast), _probe(model))
    audio = np.random.default_rng(0).normal(0, 0.1, 22050).astype(np.float32)
    thetas = [Processor(m, batch_size=8).predict(_array_source(audio, 22050)) for m in (fast, full)]
    np.testing.assert_array_equal(thetas[0].normalized, thetas[1].normalized)
    assert thetas[0].input_gain_db == thetas[1].input_gain_db is not None  # the loudness pass ran for both
    with pytest.raises(ValueError, match=r"model.smoothing_hz must be >= 0 \(0: no smoothing\), got -1"):
        InferenceModel(fast.encoder, fast.fx, 22050, 1024, smoothing_hz=-1)


def test_afx_process_and_evaluate_never_import_lightning(tmp_path):
    """Lightning (and the torchvision / dynamo imports behind it) took most of a short file's ``afx process``
    wall time; the commands that use a trained model must run without it. Run as a user would, in a subprocess."""
    import soundfile as sf

    _save(_model(), tmp_path / "m.ckpt")
    audio = np.random.default_rng(0).normal(0, 0.1, 22050).astype(np.float32)
    for folder in ("input", "target"):
        (tmp_path / "pairs" / folder).mkdir(parents=True)
        sf.write(tmp_path / "pairs" / folder / "a.wav", audio, 22050)
    commands = {
        "process": ["--ckpt", "m.ckpt", "pairs/input/a.wav", "out.wav"],
        "evaluate": ["--ckpt", "m.ckpt", "--data", "pairs", "--json", "scores.json"],
    }
    for command, args in commands.items():
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "afx_lightning.cli", command, *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert result.returncode == 0, result.stderr[-2000:]
        lightning = sorted(m for m in imported if m.split(".")[0] in ("lightning", "pytorch_lightning", "torchmetrics"))
        assert not lightning, f"afx {command} imported {lightning[:5]}"
        assert "afx_lightning.inference.processor" in imported  # the check reads real import records
    assert sf.info(tmp_path / "out.wav").frames == audio.size
    assert json.loads((tmp_path / "scores.json").read_text())["files"]


@LOADERS
def test_older_checkpoints_with_only_the_encoder_spec_still_load(load, tmp_path):
    """Written before ``afx_model``: the chain and audio format come from the plain hyper-parameters."""
    model = _model()
    path = tmp_path / "old.ckpt"
    checkpoint = _save(model, path, datamodule_hyper_parameters={"context_size": 4096})
    del checkpoint[CONFIG_KEY]
    checkpoint["hyper_parameters"] = {  # flat, as they were then
        "chain": "pb_mb_compressor",
        "sample_rate": 22050,
        "frame_size": 1024,
        "epsilon": 0.02,
        "fx_workers": 1,
        "num_slots": 2,
        "lr": 3e-3,
    }
    checkpoint["hyper_parameters"]["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    torch.save(checkpoint, path)
    loaded = load(path)
    assert loaded.context_size == 4096 and loaded.fx.num_params == model.fx.num_params
    torch.testing.assert_close(_probe(loaded), _probe(model))


@LOADERS
def test_a_checkpoint_written_before_an_encoder_option_existed_rebuilds_with_the_value_it_was_trained_with(
    load, tmp_path
):
    """The streaming encoder's ``feature_scale`` (default 0.1) came after checkpoints trained at 1.0 were written:
    one whose description does not name it must predict what it was trained to predict."""
    tcn = functools.partial(TemporalConvEncoder, channels=8, dilations=(1,), stride=2, feature_scale=1.0)
    model = _model(tcn)
    with torch.no_grad():
        model.encoder.head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "before.ckpt"
    checkpoint = _save(model, path)
    del checkpoint[CONFIG_KEY]["encoder"]["init_args"]["feature_scale"]
    torch.save(checkpoint, path)
    loaded = load(path)
    assert loaded.encoder.pool.scale == 1.0
    torch.testing.assert_close(_probe(loaded), _probe(model))

    model = _model(functools.partial(tcn, feature_scale=0.25))  # a checkpoint that names it keeps its own value
    _save(model, path)
    assert load(path).encoder.pool.scale == 0.25
    assert TemporalConvEncoder(num_params=2).pool.scale == 0.1  # today's default, for new models


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """An importable module whose import would leave a marker file: proof that it was (not) imported."""
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "imported.marker"
    (site / "afx_marker_mod.py").write_text(
        textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("imported")
        from afx_lightning.encoders import SmallEncoder as Evil
        def factory(sample_rate, block_size):
            raise RuntimeError("never")
    """)
    )
    monkeypatch.syspath_prepend(str(site))
    yield marker
    sys.modules.pop("afx_marker_mod", None)


@pytest.mark.parametrize(
    "class_path", ["afx_marker_mod.Evil", "os.system", "posix.system", "torch.nn.Linear", "no_such_module.X"]
)
@LOADERS
def test_an_undeclared_encoder_class_is_refused_without_importing_it(load, class_path, marker_module, tmp_path):
    path = tmp_path / "evil.ckpt"
    checkpoint = _save(_model(), path)
    checkpoint[CONFIG_KEY]["encoder"] = {"class_path": class_path, "init_args": {"command": "touch pwned"}}
    torch.save(checkpoint, path)
    with pytest.raises(InferenceError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and repr(class_path) in message
    assert "not a declared encoder" in message
    assert not marker_module.exists() and "afx_marker_mod" not in sys.modules
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("chain", ["afx_marker_mod:factory", "os:system", "no_such_chain", 42])
@LOADERS
def test_an_unregistered_chain_is_refused_without_importing_it(load, chain, marker_module, tmp_path):
    path = tmp_path / "chain.ckpt"
    checkpoint = _save(_model(), path)
    checkpoint[CONFIG_KEY]["chain"] = chain
    torch.save(checkpoint, path)
    with pytest.raises(InferenceError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and repr(chain) in message
    assert not marker_module.exists() and "afx_marker_mod" not in sys.modules


def _plugin_package(site: Path, name: str, declare: bool) -> None:
    """A package that defines an encoder; with ``declare`` it is installed with an ``afx_lightning.encoders`` entry point."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(
        "from afx_lightning.encoders import SmallEncoder\n\n\nclass TinyEncoder(SmallEncoder):\n    pass\n"
    )
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    if declare:
        (dist / "entry_points.txt").write_text(f"[afx_lightning.encoders]\ntiny = {name}:TinyEncoder\n")


@LOADERS
def test_an_encoder_declared_by_an_installed_package_loads_and_an_undeclared_one_does_not(load, tmp_path, monkeypatch):
    site = tmp_path / "site"
    _plugin_package(site, "afx_declared_enc", declare=True)
    _plugin_package(site, "afx_undeclared_enc", declare=False)
    monkeypatch.syspath_prepend(str(site))
    try:
        assert declared_encoders()["afx_declared_enc.TinyEncoder"] == "afx_declared_enc:TinyEncoder"
        from afx_declared_enc import TinyEncoder
        from afx_undeclared_enc import TinyEncoder as Undeclared

        model = _model(functools.partial(TinyEncoder, width=4))
        path = tmp_path / "plugin.ckpt"
        _save(model, path)
        loaded = load(path)
        assert type(loaded.encoder).__qualname__ == "TinyEncoder"
        torch.testing.assert_close(_probe(loaded), _probe(model))

        path = tmp_path / "undeclared.ckpt"
        _save(_model(functools.partial(Undeclared, width=4)), path)
        with pytest.raises(InferenceError, match="'afx_undeclared_enc.TinyEncoder' is not a declared encoder"):
            load(path)
    finally:
        for name in ("afx_declared_enc", "afx_undeclared_enc"):
            sys.modules.pop(name, None)


def test_resuming_with_encoder_options_other_than_the_checkpoints_warns_by_name(tmp_path):
    """``afx fit --ckpt_path`` builds the model from today's config: an option whose default changed since the
    checkpoint was written (``feature_scale``: 1.0 then, 0.1 now) would load the weights into another model."""
    import warnings

    tcn = functools.partial(TemporalConvEncoder, channels=8, dilations=(1,), stride=2)
    checkpoint = _save(_model(functools.partial(tcn, feature_scale=1.0)), tmp_path / "m.ckpt")
    del checkpoint[CONFIG_KEY]["encoder"]["init_args"]["feature_scale"]  # written before the option existed
    with pytest.warns(UserWarning, match=r"feature_scale: trained with 1\.0, configured 0\.1\)") as caught:
        _model(tcn).on_load_checkpoint(checkpoint)
    assert len([w for w in caught if "feature_scale" in str(w.message)]) == 1
    assert "channels" not in str(caught[0].message) and "dilations" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _model(functools.partial(tcn, feature_scale=1.0)).on_load_checkpoint(checkpoint)  # as trained: silent
        _model().on_load_checkpoint(checkpoint)  # another class: its weights will not load; nothing to compare


@LOADERS
def test_a_description_from_another_format_version_is_refused(load, tmp_path):
    path = tmp_path / "future.ckpt"
    checkpoint = _save(_model(), path)
    checkpoint[CONFIG_KEY]["format"] = 99
    torch.save(checkpoint, path)
    with pytest.raises(InferenceError, match="format 99"):
        load(path)


def test_a_format_1_description_with_flat_options_still_loads(tmp_path):
    """What main wrote before the parts: one flat ``options`` mapping; its fx and loss options land in the parts."""
    model = _model()
    path = tmp_path / "v1.ckpt"
    checkpoint = _save(model, path)
    config = checkpoint[CONFIG_KEY]
    checkpoint[CONFIG_KEY] = {
        **{
            k: config[k]
            for k in ("chain", "num_params", "param_names", "encoder", "sample_rate", "frame_size", "channels", "data")
        },
        "format": 1,
        "options": {
            "num_slots": 2,
            "num_eval_slots": 1,
            "gradient": "spsa",
            "epsilon": 0.03,
            "num_perturbations": 2,
            "fx_workers": 4,
            "fx_timeout_s": 12.0,
            "lr": 3e-3,
            "max_shift": 250,
            "time_weight": 5.0,
            "freq_weight": 1.0,
            "plateau_patience": 20,
            "prior_weight": 0.5,
            "spsa_seed": 7,
        },
    }
    torch.save(checkpoint, path)
    loaded = load_model(path)
    fx = loaded.fx_config
    assert (fx.chain, fx.epsilon, fx.num_perturbations, fx.timeout_s, fx.seed) == ("pb_mb_compressor", 0.03, 2, 12.0, 7)
    assert fx.workers == 1 and loaded.fx.num_workers == 1 and loaded.hparams.num_slots == 1  # inference: one of each
    assert loaded.loss.max_shift == 250 + loaded.fx.latency and loaded.loss.time_weight == 5.0
    assert loaded.hparams.prior_weight == 0.5 and loaded.hparams.lr == 3e-3
    torch.testing.assert_close(_probe(loaded), _probe(model))


def test_each_part_describes_itself_and_the_description_rebuilds_it(tmp_path):
    from afx_lightning.loss import LossConfig

    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4, n_mels=64),
        fx=FxConfig(chain="pb_mb_compressor", workers=1, epsilon=0.05, seed=5, timeout_s=9.0),
        loss=LossConfig(max_shift=200, time_weight=3.0),
        num_slots=2,
        num_eval_slots=1,
        prior_weight=0.25,
        start_spread=0.05,
    )
    config = model.get_config()
    assert config["format"] == 2 and config["chain"] == "pb_mb_compressor" and "chain" not in config["fx"]
    assert config["fx"]["epsilon"] == 0.05 and config["fx"]["seed"] == 5 and config["fx"]["timeout_s"] == 9.0
    assert config["loss"] == LossConfig(max_shift=200, time_weight=3.0).get_config()
    assert config["encoder"]["init_args"] == {
        "sample_rate": 22050,
        "n_mels": 64,
        "dropout": 0.0,
        "width": 4,
        "centre": False,
        "num_params": model.fx.num_params,
    }
    assert config["options"]["prior_weight"] == 0.25 and "num_slots" not in config["options"]
    assert config["options"]["start_spread"] == 0.05
    assert json.loads(json.dumps(config)) == config
    path = tmp_path / "m.ckpt"
    _save(model, path)
    loaded = load_model(path)
    assert loaded.fx_config == FxConfig(chain="pb_mb_compressor", workers=1, epsilon=0.05, seed=5, timeout_s=9.0)
    assert loaded.loss_config == LossConfig(max_shift=200, time_weight=3.0) and loaded.encoder.n_mels == 64
    assert loaded.hparams.prior_weight == 0.25 and loaded.hparams.start_spread == 0.05
    torch.testing.assert_close(_probe(loaded), _probe(model))
    with pytest.raises(ValueError, match="model.fx has no option wokers"):
        FxConfig.from_config({"wokers": 2})


def test_the_recipes_automation_smoothing_travels_in_the_checkpoint_to_inference(tmp_path):
    """``model.smoothing_hz`` is what ``afx process`` / ``evaluate`` smooth with unless told otherwise: breath removal
    keeps every frame's cut (0), a 2 Hz low-pass would smear it into the speech."""
    from afx_lightning.inference import Processor

    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4), fx=FxConfig(chain="pb_mb_compressor", workers=1),
        num_slots=1, num_eval_slots=1, smoothing_hz=0,
    )  # fmt: skip
    path = tmp_path / "m.ckpt"
    _save(model, path)
    loaded = load_model(path)
    try:
        assert model.get_config()["options"]["smoothing_hz"] == 0
        assert Processor(loaded).smoothing_hz == 0.0  # the model's own
        assert Processor(loaded, smoothing_hz=8).smoothing_hz == 8.0  # an explicit --smoothing-hz wins
        assert Processor(DeepAFx(encoder=functools.partial(SmallEncoder, width=4), num_slots=1)).smoothing_hz == 2.0
    finally:
        loaded.fx.close()
    with pytest.raises(ValueError, match=r"model.smoothing_hz must be >= 0 \(0: no smoothing\), got -1"):
        DeepAFx(encoder=functools.partial(SmallEncoder, width=4), num_slots=1, smoothing_hz=-1)


def test_an_encoder_whose_config_args_miss_an_option_is_refused_when_described():
    class Wider(SmallEncoder):
        def __init__(self, num_params: int, sample_rate: int = 22050, width: int = 16, depth: int = 2) -> None:
            super().__init__(num_params, sample_rate=sample_rate, width=width)

    with pytest.raises(TypeError, match=r"Wider.config_args\(\) does not return its option\(s\) depth"):
        Wider(3).get_config()
    assert SmallEncoder(3, width=4).get_config()["init_args"]["width"] == 4


@pytest.mark.parametrize("spread", [0.0, 0.1])
def test_start_spread_sets_how_far_untrained_frames_start_from_the_anchor(spread):
    """In train mode (batch statistics, as SPSA sees the encoder) the default spread starts each frame a few dB
    off the defaults on a 32-band EQ; 0 starts every frame exactly there, the identity."""
    torch.manual_seed(0)
    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4, centre=True),
        fx=FxConfig(chain="pb_graphic_eq", workers=1),
        num_slots=2,
        num_eval_slots=1,
        start_spread=spread,
    ).train()
    with torch.no_grad():
        theta = model(0.3 * torch.randn(8, 1, 8192))
    off = (theta - model.anchor.clamp(0.01, 0.99)).abs()  # the head's bias is logit(clip(anchor))
    if spread == 0.0:
        assert off.max().item() < 1e-6
    else:
        assert off.max().item() > 0.01 and theta.std(dim=0).max().item() > 0.005


def test_start_spread_out_of_range_is_refused_by_name():
    with pytest.raises(ValueError, match="model.start_spread must lie in"):
        DeepAFx(
            encoder=functools.partial(SmallEncoder, width=4),
            fx=FxConfig(chain="pb_graphic_eq", workers=1),
            num_slots=1,
            num_eval_slots=1,
            start_spread=2.0,
        )
