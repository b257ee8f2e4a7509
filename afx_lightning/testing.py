"""Effects for tests and examples: a differentiable reference and a deliberately faulty plugin.

They are module-level factories so worker processes can build them. The product's real chains live in
``effects_registry``; these exist to check the machinery against ground truth.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import lfilter

from .constants import FRAME_SIZE, SAMPLE_RATE
from .effects import Chain, FunctionEffect, ParamSpec, Scale

REFERENCE_PARAMS = (
    ParamSpec("smoothing", 0.05, 0.95, 0.5, description="one-pole low-pass pole"),
    ParamSpec("drive", 0.5, 4.0, 1.0, Scale.LOG, description="tanh drive"),
    ParamSpec("gain", -12.0, 12.0, 0.0, unit="dB"),
)


def _reference_numpy(audio: np.ndarray, values: dict[str, float], state: dict[str, Any]) -> np.ndarray:
    a = values["smoothing"]
    zi = state.get("zi", np.zeros((audio.shape[0], 1)))
    smoothed, state["zi"] = lfilter([1.0 - a], [1.0, -a], audio, axis=-1, zi=zi)
    gain = 10.0 ** (values["gain"] / 20.0)
    return (gain * np.tanh(values["drive"] * smoothed)).astype(np.float32)


def reference_chain(sample_rate: int, block_size: int) -> Chain:
    """Stateful low-pass -> tanh drive -> gain; :func:`reference_torch` computes the same from fresh state."""
    return Chain([FunctionEffect("reference", _reference_numpy, REFERENCE_PARAMS, sample_rate)], name="reference")


def reference_torch(audio, theta):
    """The reference effect in torch (differentiable in theta), for one block from fresh state.

    audio: [M, C, N]; theta: [M, 3] normalised. Returns [M, C, N].
    """
    import torch
    import torchaudio.functional as AF

    def spread(spec: ParamSpec, u):
        if spec.scale is Scale.LOG:
            return spec.min * (spec.max / spec.min) ** u
        return spec.min + u * (spec.max - spec.min)

    a = spread(REFERENCE_PARAMS[0], theta[:, 0])
    drive = spread(REFERENCE_PARAMS[1], theta[:, 1])
    gain = 10.0 ** (spread(REFERENCE_PARAMS[2], theta[:, 2]) / 20.0)
    rows = []
    for m in range(audio.shape[0]):
        b = torch.stack([1.0 - a[m], torch.zeros_like(a[m])])
        den = torch.stack([torch.ones_like(a[m]), -a[m]])
        rows.append(AF.lfilter(audio[m], den, b, clamp=False))
    smoothed = torch.stack(rows)
    return gain[:, None, None] * torch.tanh(drive[:, None, None] * smoothed)


# Fault triggers: the first sample of a block selects the misbehaviour, so a test chooses exactly which
# calls fail, independently of worker restarts.
TRIGGER_EXCEPTION = 5.0
TRIGGER_NAN = 6.0
TRIGGER_CRASH = 7.0
TRIGGER_HANG = 8.0


def _faulty(audio: np.ndarray, values: dict[str, float], state: dict[str, Any]) -> np.ndarray:
    trigger = float(audio[0, 0])
    if trigger == TRIGGER_EXCEPTION:
        raise RuntimeError("plugin raised on purpose")
    if trigger == TRIGGER_NAN:
        return np.full_like(audio, np.nan)
    if trigger == TRIGGER_CRASH:
        ctypes.string_at(0)  # a genuine segmentation fault
    if trigger == TRIGGER_HANG:
        time.sleep(3600)
    state["blocks"] = state.get("blocks", 0) + 1
    return (audio * values["gain"]).astype(np.float32)


def faulty_chain(sample_rate: int, block_size: int) -> Chain:
    """A gain that raises, returns NaN, segfaults or hangs when a block starts with a trigger value."""
    params = (ParamSpec("gain", 0.0, 2.0, 1.0),)
    return Chain([FunctionEffect("faulty", _faulty, params, sample_rate)], name="faulty")


def _previous_block(audio: np.ndarray, values: dict[str, float], state: dict[str, Any]) -> np.ndarray:
    out = state.get("previous", np.zeros_like(audio)) * values["gain"]
    state["previous"] = audio.copy()
    return out.astype(np.float32)


def delay_chain(sample_rate: int, block_size: int) -> Chain:
    """Outputs the previous block times a gain: its state is exactly the last input it saw."""
    params = (ParamSpec("gain", 0.5, 1.5, 1.0),)
    effect = FunctionEffect("block_delay", _previous_block, params, sample_rate, latency=block_size)
    return Chain([effect], name="block_delay")


def _cross_feed(audio: np.ndarray, values: dict[str, float], state: dict[str, Any]) -> np.ndarray:
    mix = values["mix"]
    return ((1.0 - mix) * audio + mix * audio[::-1]).astype(np.float32)


def stereo_chain(sample_rate: int, block_size: int) -> Chain:
    """A stereo-only effect: each output channel mixes in the other channel by ``mix`` (0: as is, 1: swapped)."""
    params = (ParamSpec("mix", 0.0, 1.0, 0.0),)
    return Chain([FunctionEffect("cross_feed", _cross_feed, params, sample_rate, channels=2)], name="cross_feed")


def _gain(audio: np.ndarray, values: dict[str, float], state: dict[str, Any]) -> np.ndarray:
    return (audio * values["gain"]).astype(np.float32)


def two_plugin_chain(sample_rate: int, block_size: int) -> Chain:
    """Two plugins in series, :func:`reference_chain`'s effect then a plain gain: parameters ``reference.*`` and
    ``trim.gain``, for plugin-by-plugin training stages."""
    trim = FunctionEffect("trim", _gain, (ParamSpec("gain", 0.25, 2.0, 1.0, Scale.LOG),), sample_rate)
    return Chain(
        [FunctionEffect("reference", _reference_numpy, REFERENCE_PARAMS, sample_rate), trim], name="two_plugins"
    )


def _delayed(latency: int, audio: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    line = np.concatenate([state.get("line", np.zeros((audio.shape[0], latency), np.float32)), audio], axis=1)
    state["line"] = line[:, audio.shape[1] :]
    return line[:, : audio.shape[1]]


def _faulty_then_delayed(
    latency: int, audio: np.ndarray, values: dict[str, float], state: dict[str, Any]
) -> np.ndarray:
    return _delayed(latency, _faulty(audio, values, state), state)


def _pure_delay(latency: int, audio: np.ndarray, values: dict[str, float], state: dict[str, Any]) -> np.ndarray:
    return _delayed(latency, audio.astype(np.float32), state)


def pure_delay_chain(sample_rate: int, block_size: int, latency: int = 480) -> Chain:
    """The input, ``latency`` samples late (reported as the chain's latency; 480 is ZaMaximX2's lookahead) and
    otherwise untouched: its one parameter does nothing. Scored with its latency compensated it is the identity."""
    params = (ParamSpec("unused", 0.0, 1.0, 0.5, description="ignored: the output is the delayed input"),)
    effect = FunctionEffect("pure_delay", functools.partial(_pure_delay, latency), params, sample_rate, latency=latency)
    return Chain([effect], name="pure_delay")


def faulty_delay_chain(sample_rate: int, block_size: int, latency: int = 300) -> Chain:
    """:func:`faulty_chain` followed by a pure delay of ``latency`` samples (reported as the chain's latency)."""
    params = (ParamSpec("gain", 0.0, 2.0, 1.0),)
    effect = FunctionEffect(
        "faulty_delay", functools.partial(_faulty_then_delayed, latency), params, sample_rate, latency=latency
    )
    return Chain([effect], name="faulty_delay")


def slow_to_build_chain(sample_rate: int, block_size: int, build_s: float = 0.5) -> Chain:
    """:func:`faulty_chain` whose construction takes ``build_s`` seconds, like a real plugin loading its library."""
    time.sleep(build_s)
    return faulty_chain(sample_rate, block_size)


# ------------------------------------------------------------------ discrete parameters: a known-answer chain
FILTER_TYPES = ("lowpass", "highpass", "bandpass")


def _biquad(kind: str, cutoff: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ cookbook 2nd-order sections (Q = 1/√2; the band-pass has 0 dB peak gain)."""
    w = 2.0 * np.pi * cutoff / sample_rate
    alpha, cos = np.sin(w) / np.sqrt(2.0), np.cos(w)
    if kind == "lowpass":
        b = [(1 - cos) / 2, 1 - cos, (1 - cos) / 2]
    elif kind == "highpass":
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
    else:
        b = [alpha, 0.0, -alpha]
    a = np.array([1 + alpha, -2 * cos, 1 - alpha])
    return np.asarray(b) / a[0], a / a[0]


def _switched_filter(
    sample_rate: int, audio: np.ndarray, values: dict[str, float], state: dict[str, Any]
) -> np.ndarray:
    kind = FILTER_TYPES[min(max(int(round(values["type"])), 0), len(FILTER_TYPES) - 1)]
    b, a = _biquad(kind, values["cutoff"], sample_rate)
    zi = state.get("zi", np.zeros((audio.shape[0], 2)))
    y, state["zi"] = lfilter(b, a, audio, axis=-1, zi=zi)
    if values["drive"] >= 0.5:  # unity gain for small signals, so no gain setting imitates it
        y = np.tanh(4.0 * y) / 4.0
    return (10.0 ** (values["gain"] / 20.0) * y).astype(np.float32)


def switched_filter_chain(sample_rate: int, block_size: int, naive: bool = False) -> Chain:
    """A filter whose type is a choice (lowpass / highpass / bandpass) and a saturation toggle, with a continuous
    cutoff and gain: the known-answer chain of discrete parameters (the type decides the result).

    ``naive=True`` declares the type and the toggle as continuous ranges that the DSP rounds, which is how a
    switch had to be written before parameter kinds (the baseline the relaxation is measured against)."""
    if naive:
        discrete = (
            ParamSpec("type", 0.0, 2.0, 0.0, description="rounded: 0 lowpass, 1 highpass, 2 bandpass"),
            ParamSpec("drive", 0.0, 1.0, 0.0, description="rounded: saturation off/on"),
        )
    else:
        discrete = (
            ParamSpec.choice("type", FILTER_TYPES, "lowpass"),
            ParamSpec.toggle("drive", False, description="tanh saturation after the filter"),
        )
    params = (
        discrete[0],
        ParamSpec("cutoff", 200.0, 5000.0, 1000.0, Scale.LOG, "Hz"),
        ParamSpec("gain", -12.0, 12.0, 0.0, unit="dB"),
        discrete[1],
    )
    effect = FunctionEffect("switched_filter", functools.partial(_switched_filter, sample_rate), params, sample_rate)
    return Chain([effect], name="switched_filter_naive" if naive else "switched_filter")


@dataclass
class KnownAnswerFit:
    """What :func:`fit_known_answer` found, per parameter name, next to the hidden truth (display units, or the
    value's label for a discrete parameter), and the evaluation loss (most likely values) before and after."""

    found: dict[str, Any]
    truth: dict[str, Any]
    first_loss: float
    last_loss: float
    seconds: float
    trace: np.ndarray  # the batch-mean encoder outputs θ [steps, W], to watch the discrete scores move


def fit_known_answer(
    chain: Callable[..., Chain],
    truth: Mapping[str, Any],
    steps: int = 300,
    batch: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    discrete_epsilon: float = 0.2,
    clip_frames: int = 8,
    block_size: int = FRAME_SIZE,
    sample_rate: int = SAMPLE_RATE,
    num_workers: int = 2,
    start: np.ndarray | None = None,
    channels: int = 1,
) -> KnownAnswerFit:
    """Train a small encoder through the black-box layer on audio made by ``chain`` at hidden, fixed settings
    ``truth`` (by name, in range units or a discrete value's label; the rest at their defaults), from the
    encoder's default start. Each of ``batch`` slots streams its own white-noise clips of ``clip_frames``
    frames, with the state of both the trained and the reference plugins carried across a clip's frames.
    ``start``: the encoder's initial outputs θ [W] (default ``layer.codec.defaults``). ``channels`` > 1: each clip
    has that many independent noise channels, and the targets render each channel through its own reference
    instance at the same (linked) settings, as the layer renders a mono chain on multichannel audio.

    A check of the machinery against ground truth: with discrete parameters it shows whether training finds
    their values from audio alone. Decoded at the end as inference does (most likely values)."""
    import torch

    from .blackbox import BlackBoxLayer
    from .encoders import SmallEncoder
    from .loss import DelayInvariantLoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only contend with the plugin workers
    layer = BlackBoxLayer(
        chain,
        sample_rate=sample_rate,
        block_size=block_size,
        channels=channels,
        num_slots=batch,
        num_eval_slots=batch,
        num_workers=num_workers,
        seed=seed,
        discrete_epsilon=discrete_epsilon,
    )
    per_channel = channels if layer.info.channels == 1 else 1
    references = [
        [chain(sample_rate=sample_rate, block_size=block_size) for _ in range(per_channel)] for _ in range(batch)
    ]
    goal = references[0][0].normalized(truth)
    encoder = SmallEncoder(layer.num_params, sample_rate=sample_rate, width=4)
    encoder.init_output_bias(
        torch.from_numpy(layer.codec.defaults if start is None else np.asarray(start)), weight_scale=0.1
    )
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
    loss_fn = DelayInvariantLoss(max_shift=100 + layer.latency)
    clips = np.zeros((batch, channels, clip_frames * block_size), dtype=np.float32)
    position = np.full(batch, clip_frames)  # every slot starts a fresh clip
    slots = torch.arange(batch)
    trace: list[np.ndarray] = []
    t0 = time.perf_counter()

    def next_frames(restart: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fresh = (position >= clip_frames) | restart
        for s in np.flatnonzero(fresh):
            clips[s] = rng.uniform(0.2, 0.6) * rng.standard_normal((channels, clip_frames * block_size))
            for r in references[s]:
                r.reset()
            position[s] = 0
        x = np.stack([clips[s, :, position[s] * block_size : (position[s] + 1) * block_size] for s in range(batch)])
        y = np.stack(
            [
                np.concatenate([r.process(part, goal) for r, part in zip(references[s], np.split(x[s], per_channel))])
                for s in range(batch)
            ]
        )
        position[:] += 1
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(fresh)

    def evaluate() -> float:
        """The mean loss over whole fresh clips with the most likely values (the layer's eval slots)."""
        layer.eval()
        encoder.eval()
        total = []
        with torch.no_grad():
            for frame in range(clip_frames):
                x, y, fresh = next_frames(restart=frame == 0)
                total.append(float(loss_fn(layer(x, encoder(x), slots, fresh), y)))
        layer.train()
        encoder.train()
        position[:] = clip_frames  # training restarts on fresh clips (its slots missed these frames)
        return float(np.mean(total))

    try:
        first_loss = evaluate()
        for _ in range(steps):
            x, y, fresh = next_frames()
            per_item = lambda out: loss_fn.per_item(out, y).loss  # noqa: E731
            theta = encoder(x)
            loss = (per_item(layer(x, theta, slots, fresh)) + layer.discrete_term(per_item)).mean()
            trace.append(theta.detach().mean(dim=0).numpy())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        last_loss = evaluate()
        encoder.eval()
        with torch.no_grad():
            theta = torch.cat([encoder(next_frames()[0]) for _ in range(4)]).numpy()
    finally:
        torch.set_num_threads(threads)
        layer.close()
        for slot in references:
            for r in slot:
                r.close()
    votes = layer.codec.decode(theta)  # [rows, P]: each row's most likely values
    found: dict[str, Any] = {}
    for i, spec in enumerate(layer.info.trainable_params):
        if spec.discrete:
            labels = [spec.label(u) for u in votes[:, i]]
            found[spec.name] = max(set(labels), key=labels.count)
        else:
            found[spec.name] = spec.to_display(float(np.median(votes[:, i])))
    shown = {p.name: (p.label(u) if p.discrete else p.to_display(u)) for p, u in zip(layer.info.trainable_params, goal)}
    return KnownAnswerFit(found, shown, first_loss, last_loss, time.perf_counter() - t0, np.stack(trace))


def _discrete_toy(audio: np.ndarray, values: dict[str, float], state: dict[str, Any]) -> np.ndarray:
    basis = np.random.default_rng(7).standard_normal((6, audio.shape[-1])).astype(np.float32) / 2
    shape = basis[int(values["shape"])]
    return (
        values["level"] * shape + values["flag"] * basis[3] + 0.25 * values["count"] * basis[4] + 0.1 * audio
    ).astype(np.float32)


def discrete_toy_chain(sample_rate: int, block_size: int) -> Chain:
    """Stateless: one of three fixed waveforms (a choice) times a continuous level, plus a toggled and an
    integer-weighted waveform. Every kind in one cheap chain, for checking the estimator against enumeration."""
    params = (
        ParamSpec.choice("shape", ("a", "b", "c")),
        ParamSpec.toggle("flag"),
        ParamSpec.integer("count", 0, 3),
        ParamSpec("level", 0.0, 1.0, 0.5),
    )
    return Chain([FunctionEffect("toy", _discrete_toy, params, sample_rate)], name="discrete_toy")


def fit_tiny_checkpoint(path, chain: str = "pb_mb_compressor"):
    """Two in-process training steps of a width-8 SmallEncoder on demo clips of ``chain``, saved to ``path`` with
    ``trainer.save_checkpoint``; returns the model in eval mode (its plugin pool closed). What the inference and
    prediction tests need: a real checkpoint in seconds."""
    import functools

    from lightning.pytorch import Trainer, seed_everything

    from .blackbox import FxConfig
    from .data import AudioFxDataModule
    from .encoders import SmallEncoder
    from .module import DeepAFx

    seed_everything(0)
    dm = AudioFxDataModule(
        dataset="demo",
        demo_chain=chain,
        batch_size=2,
        val_batch_size=1,
        steps_per_epoch=2,
        context_size=8192,
        seed=1,
        demo_clips=2,
        demo_val_clips=1,
        demo_test_clips=0,
        demo_seconds=0.5,
    )
    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain=chain, workers=1),
        num_slots=2,
        num_eval_slots=1,
        plateau_patience=0,
        lr=1e-2,
    )
    trainer = Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        callbacks=[],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    try:
        trainer.fit(model, datamodule=dm)
        trainer.save_checkpoint(path)
    finally:
        model.fx.close()
    return model.eval()
