"""Discrete parameters: the kinds, the encoder-output codec, the estimator against enumeration, inference's argmax,
and a known-answer training run where a choice and a toggle decide the result."""

import functools
import itertools
import json

import numpy as np
import pytest
import torch

from afx_lightning.blackbox import BlackBoxLayer, PerturbationStream
from afx_lightning.effects import ParamSpec, Scale
from afx_lightning.effects.base import _ParamTable
from afx_lightning.effects.discrete import ParamCodec
from afx_lightning.effects.params import Kind
from afx_lightning.testing import (
    FILTER_TYPES,
    discrete_toy_chain,
    fit_known_answer,
    reference_chain,
    switched_filter_chain,
)

TYPE = ParamSpec.choice("type", FILTER_TYPES, "highpass", description="filter type")
DRIVE = ParamSpec.toggle("drive", True)
ORDER = ParamSpec.integer("order", 1, 4, 2)
GAIN = ParamSpec("gain", -12.0, 12.0, 0.0, unit="dB")


# ------------------------------------------------------------------ kinds
def test_kinds_round_trip_through_plain_data():
    specs = [
        GAIN,
        TYPE,
        DRIVE,
        ORDER,
        ParamSpec.choice("mode", ["a", "b"], "b", values=[-1.0, 5.0], fixed="a"),
        ParamSpec.toggle("enabled", values=(1.0, 0.0)),
        ParamSpec("f", 20.0, 2e4, 1e3, Scale.LOG, "Hz"),
    ]
    for spec in specs:
        data = json.loads(json.dumps(spec.to_dict()))
        assert ParamSpec.from_dict(data) == spec
    assert TYPE.to_dict()["kind"] == "choice" and TYPE.to_dict()["choices"] == list(FILTER_TYPES)
    old = {"name": "gain", "min": -12.0, "max": 12.0, "default": 0.0, "scale": "linear"}  # written before kinds
    assert ParamSpec.from_dict(old).kind is Kind.CONTINUOUS and ParamSpec.from_dict(old) == ParamSpec(
        "gain", -12.0, 12.0, 0.0
    )


def test_discrete_values_snap_to_the_grid_and_carry_labels():
    assert (TYPE.num_values, TYPE.width, TYPE.default) == (3, 3, 1)
    assert [TYPE.label(u) for u in (0.0, 0.2, 0.3, 0.74, 0.76, 1.0)] == [
        "lowpass",
        "lowpass",
        "highpass",
        "highpass",
        "bandpass",
        "bandpass",
    ]
    assert TYPE.normalize("bandpass") == 1.0 and TYPE.to_plugin(0.5) == 1.0 and TYPE.to_display(0.9) == 2.0
    assert (DRIVE.width, DRIVE.default_normalized, DRIVE.label(0.4), DRIVE.to_plugin(0.6)) == (1, 1.0, "off", 1.0)
    assert (
        ORDER.labels == ("1", "2", "3", "4")
        and ORDER.to_plugin(0.5) == 3.0
        and ORDER.normalize(2) == pytest.approx(1 / 3)
    )
    mode = ParamSpec.choice("mode", ["a", "b"], values=[-1.0, 5.0], fixed="b")
    assert mode.fixed == 1 and mode.fixed_plugin_value == 5.0 and not mode.trainable
    assert ParamSpec.toggle("enabled", values=(1.0, 0.0)).to_plugin(1.0) == 0.0  # an "enabled" toggle on a bypass port
    specs = [GAIN, TYPE, DRIVE, ORDER]
    table = _ParamTable(specs)  # the vectorised hot path agrees with the scalar one
    for u in np.random.default_rng(0).uniform(size=(20, 4)):
        np.testing.assert_allclose(table.to_plugin(u), [s.to_plugin(x) for s, x in zip(specs, u)])


def test_bad_discrete_specs_are_refused_by_name():
    with pytest.raises(ValueError, match="'type': needs two or more distinct"):
        ParamSpec.choice("type", ["a", "a"])
    with pytest.raises(ValueError, match="'type': 'notch' is not one of"):
        ParamSpec.choice("type", FILTER_TYPES, "notch")
    with pytest.raises(ValueError, match="'order': max must be a whole number"):
        ParamSpec.integer("order", 1, 4.5)
    with pytest.raises(ValueError, match="'order': the scale must be linear"):
        ParamSpec("order", 1, 8, 2, Scale.LOG, kind="integer")
    with pytest.raises(ValueError, match="'mode': values must hold 2"):
        ParamSpec.choice("mode", ["a", "b"], values=[1.0])
    with pytest.raises(ValueError, match="'gain': choices and values are for choice and toggle"):
        ParamSpec("gain", 0.0, 1.0, 0.5, values=(0.0, 1.0))
    with pytest.raises(ValueError, match="build it with ParamSpec.choice"):
        ParamSpec("type", 0, 3, 0, kind="choice", choices=("a", "b", "c"))
    with pytest.raises(ValueError, match="'type': 'notch' is not one of"):
        TYPE.normalize("notch")


# ------------------------------------------------------------------ the codec: encoder outputs <-> parameters
def test_the_codec_lays_out_columns_decodes_the_most_likely_value_and_samples_its_distribution():
    codec = ParamCodec([GAIN, TYPE, DRIVE, ORDER])
    assert (codec.width, codec.num_params) == (6, 4)
    assert codec.column_names == ["gain", "type=lowpass", "type=highpass", "type=bandpass", "drive", "order"]
    theta = np.array([0.3, 0.2, 0.5, 0.3, 0.7, 0.45])  # order: x = 1.35 -> P(2) = 0.65, P(3) = 0.35 (indices 1, 2)
    np.testing.assert_allclose(codec.decode(theta), [0.3, 0.5, 1.0, 1 / 3], rtol=1e-6)  # argmax, threshold, nearest
    probs = codec.probabilities(theta)
    np.testing.assert_allclose(probs[0], [0.2, 0.5, 0.3])
    np.testing.assert_allclose(probs[1], [0.3, 0.7])
    np.testing.assert_allclose(probs[2], [0.0, 0.65, 0.35, 0.0])
    n = 40000
    u, index = codec.sample(np.broadcast_to(theta, (n, 3, 6)), np.random.default_rng(0).uniform(size=(n, 3)))
    assert (index == index[:, :1]).all()  # a row's renders share its numbers: same θ, same values
    for j in range(3):
        np.testing.assert_allclose(np.bincount(index[:, 0, j], minlength=len(probs[j])) / n, probs[j], atol=0.01)
    assert set(np.unique(u[..., 1])) <= {0.0, 0.5, 1.0}  # the chain gets grid points only
    # the encoder starts at the defaults (most likely) without being sure of them
    assert codec.decode(codec.defaults).tolist() == pytest.approx([0.5, 0.5, 1.0, 1 / 3])
    assert codec.probabilities(codec.defaults)[0].tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert codec.probabilities(codec.defaults)[1].tolist() == pytest.approx([0.4, 0.6])
    plain = ParamCodec([GAIN, ParamSpec("f", 20.0, 2e4, 1e3, Scale.LOG)])  # no discrete parameter: the identity
    u = np.array([0.1, 0.9], np.float32)
    assert plain.width == 2 and np.array_equal(plain.decode(u), u) and np.array_equal(plain.encode(u), u)


def _exact_expected_gradient(theta: np.ndarray, x: np.ndarray, target: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """∂/∂θ of Σ_values P(values | θ) L(chain(values)), by enumerating every value and differencing exactly."""
    chain = discrete_toy_chain(22050, x.shape[-1])
    codec = ParamCodec(chain.params)
    combos = list(itertools.product(range(3), range(2), range(4)))

    def expected(th: np.ndarray) -> float:
        p_shape, p_flag, p_count = codec.probabilities(th)
        total = 0.0
        for s, f, c in combos:
            y = chain.process(x, np.array([s / 2, f, c / 3, th[5]]))
            total += p_shape[s] * p_flag[f] * p_count[c] * float(np.mean((y - target) ** 2))
        return total

    grad = np.zeros_like(theta)
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = h
        grad[i] = (expected(theta + e) - expected(theta - e)) / (2 * h)
    return grad


def test_the_estimator_is_unbiased_for_the_gradient_of_the_expected_loss():
    """Mean of many single-draw estimates (K = 1) vs the exact gradient of the expected loss by enumeration, for
    every kind at once: choice scores, a toggle, an integer and a continuous level."""
    rows, draws = 64, 60
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(1, 1, 256, generator=g)
    truth = np.array([1.0, 1.0, 2 / 3, 0.8], dtype=np.float32)  # shape c, flag on, count 2, level 0.8
    target = torch.from_numpy(discrete_toy_chain(22050, 256).process(x[0].numpy(), truth))[None]
    target = target + 0.1 * torch.randn(target.shape, generator=g)
    theta = np.array([0.6, 0.3, 0.45, 0.4, 0.45, 0.5], dtype=np.float32)  # interior, off the integer's grid
    layer = BlackBoxLayer(discrete_toy_chain, block_size=256, num_slots=rows, num_eval_slots=1, num_workers=2, seed=1)
    estimates = []
    try:
        for _ in range(draws):
            th = torch.from_numpy(theta).expand(rows, -1).clone().requires_grad_()
            per_item = lambda y: ((y - target) ** 2).mean(dim=(1, 2))  # noqa: E731
            out = layer(x.expand(rows, -1, -1), th, torch.arange(rows), torch.full((rows,), not estimates))
            (per_item(out) + layer.discrete_term(per_item)).sum().backward()
            estimates.append(th.grad.numpy().copy())
    finally:
        layer.close()
    estimates = np.concatenate(estimates)
    mean, se = estimates.mean(axis=0), estimates.std(axis=0) / np.sqrt(len(estimates))
    exact = _exact_expected_gradient(theta.astype(np.float64), x[0].numpy(), target[0].numpy())
    assert (np.abs(exact) > 2 * se).all()  # every column has a gradient to find, above the noise
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 0.03 * np.abs(exact))


def test_without_discrete_parameters_the_layer_draws_and_estimates_as_before():
    """Same seed, same perturbation directions and gradient as the plain SPSA formula: no extra draw, one ε."""
    g = torch.Generator().manual_seed(0)
    x, theta = 0.5 * torch.randn(2, 1, 1024, generator=g), (0.2 + 0.6 * torch.rand(2, 3, generator=g)).requires_grad_()
    weight = torch.randn(2, 1, 1024, generator=g)
    layer = BlackBoxLayer(reference_chain, num_slots=2, num_eval_slots=1, num_workers=1, seed=4)
    try:
        assert layer.num_params == 3 and not layer.codec.has_discrete
        (layer(x, theta, torch.arange(2), torch.ones(2, dtype=torch.bool)) * weight).sum().backward()
        assert layer.discrete_term(lambda y: y).shape == ()  # nothing to add
    finally:
        layer.close()
    params, step = layer.estimator.perturb(theta.detach(), PerturbationStream(4, rank=0).next_generator())
    chain = reference_chain(22050, 1024)

    def render(m: int, i: int) -> np.ndarray:
        chain.reset()  # the layer's rows were fresh
        return chain.process(x[m].numpy(), params[m, i].numpy())

    s = torch.tensor([float((weight[m, 0].numpy() * (render(m, 1) - render(m, 2))).sum()) for m in range(2)])
    np.testing.assert_allclose(theta.grad.numpy(), (s[:, None] / step[:, 0]).numpy(), rtol=1e-3)


# ------------------------------------------------------------------ evaluation and inference: the most likely value
def test_evaluation_and_inference_play_the_most_likely_values_and_training_steps_reach_the_discrete_columns():
    """An encoder fixed at θ (zero head weights): the layer's eval forward and ``afx process``'s Processor render
    the argmax values, and the automation holds them, not the scores. A training step of the LightningModule's
    loss sends gradient to every column, the discrete scores' included (through ``fx.discrete_term``)."""
    from afx_lightning.blackbox import FxConfig
    from afx_lightning.encoders import SmallEncoder
    from afx_lightning.inference import Processor
    from afx_lightning.module import DeepAFx

    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4),
        fx=FxConfig(chain=switched_filter_chain, workers=1),
        num_slots=8,
        num_eval_slots=1,
        frame_size=1024,
    )
    theta = torch.tensor([0.3, 0.2, 0.6, 0.4, 0.7, 0.45])  # bandpass (argmax), cutoff, gain, drive off (0.45 < 0.5)
    assert model.fx.num_params == 6 and model.defaults.shape == (6,)
    model.encoder.init_output_bias(theta, weight_scale=0.0)
    decoded = np.array([1.0, 0.4, 0.7, 0.0], dtype=np.float32)
    audio = 0.3 * np.random.default_rng(0).standard_normal((1, 4096)).astype(np.float32)
    chain = switched_filter_chain(22050, 1024)
    expected = np.concatenate([chain.process(audio[:, i : i + 1024], decoded) for i in range(0, 4096, 1024)], axis=1)
    try:
        model.eval()
        frames = torch.from_numpy(audio.reshape(1, 4, 1024).transpose(1, 0, 2).copy())
        out = torch.cat(
            [
                model.fx(frames[i : i + 1], theta[None], torch.zeros(1, dtype=torch.long), torch.tensor([i == 0]))
                for i in range(4)
            ],
            dim=-1,
        )
        np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
        rendered, automation = Processor(model, smoothing_hz=0.0, context_size=1024).process_array(audio, 22050)
        assert automation.normalized.shape == (4, 4) and automation.raw.shape == (4, 6)
        np.testing.assert_allclose(automation.normalized, np.broadcast_to(decoded, (4, 4)), atol=1e-6)
        assert [p.label(u) for p, u in zip(automation.params, automation.normalized[0])][::3] == ["bandpass", "off"]
        np.testing.assert_allclose(rendered, expected, atol=1e-5)

        model.train()
        x = torch.from_numpy(0.3 * np.random.default_rng(1).standard_normal((8, 1, 1024)).astype(np.float32))
        batch = {
            "context": x,
            "frame": x,
            "target": 0.5 * x,
            "slot": torch.arange(8),
            "fresh": torch.ones(8, dtype=torch.bool),
        }
        bias = model.encoder.head.bias
        for _ in range(4):  # a pair's renders drew different discrete values somewhere (p ≈ 0.2 per row and value)
            model.encoder.zero_grad()
            out, _ = model.render(batch)
            model._loss(out, batch["target"]).backward()
            batch["fresh"] = torch.zeros(8, dtype=torch.bool)
            if (bias.grad != 0).all():
                break
        assert (bias.grad != 0).all(), bias.grad
    finally:
        model.fx.close()


# ------------------------------------------------------------------ known answer
def test_training_from_audio_finds_the_filter_type_and_the_toggle_and_the_continuous_parameters_converge():
    """Hidden truth: band-pass at 2 kHz, +6 dB, saturation on; the encoder starts at the chain's defaults
    (low-pass at 1 kHz, 0 dB, off). 300 steps, batch 8: 10 s on two idle cores (40 s with the cores shared).
    ``benchmarks/discrete.py`` runs every truth over seeds, beside the rounded-continuous baseline."""
    truth = {"type": "bandpass", "cutoff": 2000.0, "gain": 6.0, "drive": "on"}
    fit = fit_known_answer(switched_filter_chain, truth, steps=300, lr=3e-3, seed=0)
    assert fit.found["type"] == "bandpass" and fit.found["drive"] == "on", fit
    assert abs(np.log2(fit.found["cutoff"] / 2000.0)) < 0.15, fit  # within about a tenth of an octave
    assert abs(fit.found["gain"] - 6.0) < 1.0, fit
    assert fit.last_loss < 0.3 * fit.first_loss, fit
