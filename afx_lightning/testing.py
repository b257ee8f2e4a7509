"""Effects for tests and examples: a differentiable reference and a deliberately faulty plugin.

They are module-level factories so worker processes can build them. The product's real chains live in
``effects_registry``; these exist to check the machinery against ground truth.
"""

from __future__ import annotations

import ctypes
import functools
import time
from typing import Any, Dict

import numpy as np
from scipy.signal import lfilter

from .effects import Chain, FunctionEffect, ParamSpec, Scale

REFERENCE_PARAMS = (
    ParamSpec("smoothing", 0.05, 0.95, 0.5, description="one-pole low-pass pole"),
    ParamSpec("drive", 0.5, 4.0, 1.0, Scale.LOG, description="tanh drive"),
    ParamSpec("gain", -12.0, 12.0, 0.0, unit="dB"),
)


def _reference_numpy(audio: np.ndarray, values: Dict[str, float], state: Dict[str, Any]) -> np.ndarray:
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


def _faulty(audio: np.ndarray, values: Dict[str, float], state: Dict[str, Any]) -> np.ndarray:
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


def _previous_block(audio: np.ndarray, values: Dict[str, float], state: Dict[str, Any]) -> np.ndarray:
    out = state.get("previous", np.zeros_like(audio)) * values["gain"]
    state["previous"] = audio.copy()
    return out.astype(np.float32)


def delay_chain(sample_rate: int, block_size: int) -> Chain:
    """Outputs the previous block times a gain: its state is exactly the last input it saw."""
    params = (ParamSpec("gain", 0.5, 1.5, 1.0),)
    effect = FunctionEffect("block_delay", _previous_block, params, sample_rate, latency=block_size)
    return Chain([effect], name="block_delay")


def _delayed(latency: int, audio: np.ndarray, state: Dict[str, Any]) -> np.ndarray:
    line = np.concatenate([state.get("line", np.zeros((audio.shape[0], latency), np.float32)), audio], axis=1)
    state["line"] = line[:, audio.shape[1] :]
    return line[:, : audio.shape[1]]


def _faulty_then_delayed(latency: int, audio: np.ndarray, values: Dict[str, float], state: Dict[str, Any]) -> np.ndarray:
    return _delayed(latency, _faulty(audio, values, state), state)


def _pure_delay(latency: int, audio: np.ndarray, values: Dict[str, float], state: Dict[str, Any]) -> np.ndarray:
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
    effect = FunctionEffect("faulty_delay", functools.partial(_faulty_then_delayed, latency), params, sample_rate,
                            latency=latency)
    return Chain([effect], name="faulty_delay")


def slow_to_build_chain(sample_rate: int, block_size: int, build_s: float = 0.5) -> Chain:
    """:func:`faulty_chain` whose construction takes ``build_s`` seconds, like a real plugin loading its library."""
    time.sleep(build_s)
    return faulty_chain(sample_rate, block_size)
