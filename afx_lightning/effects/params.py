"""Named, ranged, scaled plugin parameters.

The encoder speaks in normalised values u in [0, 1]; plugins speak in their own units (dB, Hz, ms, ratio).
A :class:`ParamSpec` is the one place that converts between the two, so no code elsewhere needs to know a
plugin's ranges, and a parameter is always referred to by name, never by an index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Optional, Sequence

import numpy as np


class Scale(str, Enum):
    """How u in [0, 1] spreads over the plugin range.

    - ``linear``: value = min + u (max - min).
    - ``log``: value = min (max / min)^u, for frequencies, times and ratios (min, max > 0).
    - ``db``: the range is written in dB and spread linearly in dB, but the plugin receives a linear amplitude
      10^(dB / 20) (e.g. Calf's ``level_in``).
    """

    LINEAR = "linear"
    LOG = "log"
    DB = "db"


@dataclass(frozen=True)
class ParamSpec:
    """One plugin parameter: name, range (in the units the range is written in), default, scale, unit.

    ``fixed`` pins the parameter to a plugin value; fixed parameters are applied to the plugin but are not
    predicted by the encoder (they do not count in P).
    """

    name: str
    min: float
    max: float
    default: float
    scale: Scale = Scale.LINEAR
    unit: str = ""
    fixed: Optional[float] = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", Scale(self.scale))
        if not self.name or not all(c.isalnum() or c in "_." for c in self.name):
            raise ValueError(f"parameter name {self.name!r} must be non-empty and use only letters, digits, '_' and '.'")
        if not self.max > self.min:
            raise ValueError(f"parameter {self.name!r}: max ({self.max}) must be greater than min ({self.min})")
        if self.scale is Scale.LOG and self.min <= 0:
            raise ValueError(f"parameter {self.name!r}: a log scale needs min > 0, got {self.min}")
        if not self.min <= self.default <= self.max:
            raise ValueError(
                f"parameter {self.name!r}: default {self.default} lies outside [{self.min}, {self.max}]"
            )

    @property
    def trainable(self) -> bool:
        return self.fixed is None

    def to_plugin(self, u: float) -> float:
        """Normalised u in [0, 1] (clipped) -> the value the plugin receives."""
        u = min(max(float(u), 0.0), 1.0)
        if self.scale is Scale.LOG:
            return self.min * (self.max / self.min) ** u
        value = self.min + u * (self.max - self.min)
        if self.scale is Scale.DB:
            return 10.0 ** (value / 20.0)
        return value

    def to_display(self, u: float) -> float:
        """Normalised u -> the value in the units the range is written in (dB stays dB)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.scale is Scale.LOG:
            return self.min * (self.max / self.min) ** u
        return self.min + u * (self.max - self.min)

    def normalize(self, value: float) -> float:
        """A value in range units (dB for ``db``) -> u in [0, 1]."""
        value = min(max(float(value), self.min), self.max)
        if self.scale is Scale.LOG:
            return math.log(value / self.min) / math.log(self.max / self.min)
        return (value - self.min) / (self.max - self.min)

    @property
    def default_normalized(self) -> float:
        return self.normalize(self.default)

    @property
    def fixed_plugin_value(self) -> float:
        """The plugin value of a fixed parameter (``fixed`` is written in range units)."""
        assert self.fixed is not None
        return self.to_plugin(self.normalize(self.fixed)) if self.scale is Scale.DB else float(self.fixed)


def defaults_normalized(specs: Sequence[ParamSpec]) -> np.ndarray:
    """The normalised defaults of the trainable parameters, in order (the target of default pre-training)."""
    return np.array([p.default_normalized for p in specs if p.trainable], dtype=np.float32)
