"""The effect contract and chains of effects.

An :class:`Effect` is a stateful block processor driven by normalised parameters. It never sees torch: effects
live inside worker processes that import only NumPy and the plugin backend. A :class:`Chain` runs effects in
series and is itself an effect, so the black-box layer only ever deals with one object per instance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from ..errors import AfxError
from .params import ParamSpec, Scale, nearest_index


class PluginUnavailable(AfxError, RuntimeError):
    """A chain's plugin is not installed on this machine (the message names what to install)."""


class _ParamTable:
    """Vectorised u -> plugin-value conversion for the trainable parameters (hot path: once per block)."""

    def __init__(self, specs: Sequence[ParamSpec]):
        trainable = [p for p in specs if p.trainable]
        self.lo = np.array([p.min for p in trainable], dtype=np.float64)
        self.hi = np.array([p.max for p in trainable], dtype=np.float64)
        self.is_log = np.array([p.scale is Scale.LOG for p in trainable], dtype=bool)  # bool also when empty
        self.is_db = np.array([p.scale is Scale.DB for p in trainable], dtype=bool)
        # log(hi/lo) only where it is defined (ParamSpec guarantees lo > 0 there); 0 elsewhere, never used.
        ratio = np.ones_like(self.lo)
        np.divide(self.hi, self.lo, out=ratio, where=self.is_log)
        self.log_ratio = np.log(ratio)
        self.any_log, self.any_db = bool(self.is_log.any()), bool(self.is_db.any())
        # discrete parameters: u snaps to the nearest of their values, then a table lookup
        self.discrete = [
            (i, np.array(p.plugin_values, dtype=np.float64)) for i, p in enumerate(trainable) if p.discrete
        ]

    def to_plugin(self, theta: np.ndarray) -> np.ndarray:
        u = np.clip(np.asarray(theta, dtype=np.float64), 0.0, 1.0)
        values = self.lo + u * (self.hi - self.lo)
        if self.any_log:
            values[self.is_log] = self.lo[self.is_log] * np.exp(u[self.is_log] * self.log_ratio[self.is_log])
        if self.any_db:
            values[self.is_db] = 10.0 ** (values[self.is_db] / 20.0)
        for i, table in self.discrete:
            values[i] = table[nearest_index(u[i], len(table))]
        return values


class ParamLayout:
    """The trainable-parameter view of anything with ``params`` (an effect, a chain, a chain's description)."""

    name: str
    params: tuple[ParamSpec, ...]

    @property
    def trainable_params(self) -> tuple[ParamSpec, ...]:
        return tuple(p for p in self.params if p.trainable)

    @property
    def num_params(self) -> int:
        """P: how many values the encoder predicts."""
        return len(self.trainable_params)

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.trainable_params]

    def normalized(self, values: Mapping[str, float] | None = None) -> np.ndarray:
        """θ in [0, 1] from values by name, in range units (dB for dB ranges); the rest at their defaults."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.param_names))
        if unknown:
            raise KeyError(f"{self.name!r} has no trainable parameters {unknown}; it has {self.param_names}")
        return np.array(
            [p.normalize(values[p.name]) if p.name in values else p.default_normalized for p in self.trainable_params],
            dtype=np.float32,
        )


class Effect(ParamLayout, ABC):
    """A stateful audio effect: ``process`` renders one block of float32 audio shaped (channels, samples).

    Subclasses implement :meth:`reset` (truly fresh state), :meth:`_set_values` (trainable plugin values in
    parameter order) and :meth:`_render`. The block size is fixed for the life of an instance because some
    plugins change their output, or silently drop their state, when it changes.
    """

    def __init__(
        self,
        name: str,
        params: Sequence[ParamSpec],
        sample_rate: int,
        channels: int = 1,
        latency: int = 0,
    ):
        names = [p.name for p in params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"effect {name!r}: duplicate parameter names {duplicates}")
        self.name = name
        self.params: tuple[ParamSpec, ...] = tuple(params)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.latency = int(latency)
        self._table = _ParamTable(self.params)

    def process(self, audio: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Render one block. ``theta``: the P normalised parameters in [0, 1] (clipped)."""
        if audio.ndim != 2 or audio.shape[0] != self.channels:
            raise ValueError(
                f"effect {self.name!r} expects audio shaped ({self.channels}, samples), got {tuple(audio.shape)}"
            )
        theta = np.asarray(theta)
        if theta.shape != (self.num_params,):
            raise ValueError(f"effect {self.name!r} takes {self.num_params} parameters, got shape {theta.shape}")
        self._set_values(self._table.to_plugin(theta))
        out = self._render(np.ascontiguousarray(audio, dtype=np.float32))
        return np.asarray(out, dtype=np.float32)

    @abstractmethod
    def reset(self) -> None:
        """Forget all state, as if the effect had just been created."""

    @abstractmethod
    def _set_values(self, values: np.ndarray) -> None:
        """Apply trainable parameter values (plugin units, parameter order)."""

    @abstractmethod
    def _render(self, audio: np.ndarray) -> np.ndarray:
        """Process one block with the current parameter values."""

    def close(self) -> None:
        """Release native resources (plugin instances); the default has none."""


class Chain(Effect):
    """Effects in series. Parameter names are qualified by the effect name when the chain has several."""

    def __init__(self, effects: Sequence[Effect], name: str = ""):
        if not effects:
            raise ValueError("a chain needs at least one effect")
        first = effects[0]
        for e in effects[1:]:
            if e.sample_rate != first.sample_rate:
                raise ValueError(
                    f"chain {name!r}: {e.name!r} runs at {e.sample_rate} Hz, {first.name!r} at {first.sample_rate} Hz"
                )
            if e.channels != first.channels:
                raise ValueError(
                    f"chain {name!r}: {e.name!r} has {e.channels} channels, {first.name!r} has {first.channels}"
                )
        effect_names = [e.name for e in effects]
        if len(set(effect_names)) != len(effect_names):
            raise ValueError(f"chain {name!r}: effect names must be unique, got {effect_names}")
        qualify = len(effects) > 1
        params = [replace(p, name=f"{e.name}.{p.name}") if qualify else p for e in effects for p in e.params]
        super().__init__(
            name or "+".join(effect_names),
            params,
            first.sample_rate,
            first.channels,
            latency=sum(e.latency for e in effects),
        )
        self.effects: tuple[Effect, ...] = tuple(effects)
        bounds = np.cumsum([0] + [e.num_params for e in effects])
        self._slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def process(self, audio: np.ndarray, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta)
        if theta.shape != (self.num_params,):
            raise ValueError(f"chain {self.name!r} takes {self.num_params} parameters, got shape {theta.shape}")
        for effect, part in zip(self.effects, self._slices):
            audio = effect.process(audio, theta[part])
        return audio

    def reset(self) -> None:
        for e in self.effects:
            e.reset()

    def close(self) -> None:
        for e in self.effects:
            e.close()

    def _set_values(self, values: np.ndarray) -> None:  # pragma: no cover - process() is overridden
        raise NotImplementedError

    def _render(self, audio: np.ndarray) -> np.ndarray:  # pragma: no cover - process() is overridden
        raise NotImplementedError


class ChainFactory(Protocol):
    """What the registry holds: builds a fresh chain for a sample rate and block size.

    Factories run inside worker processes (plugins cannot be pickled), so a factory must be importable there:
    a module-level function or a ``functools.partial`` of one.
    """

    def __call__(self, sample_rate: int, block_size: int) -> Chain: ...
