"""Named, ranged, scaled plugin parameters: continuous, integer, choice and toggle.

The encoder speaks in normalised values u in [0, 1]; plugins speak in their own units (dB, Hz, ms, ratio).
A :class:`ParamSpec` is the one place that converts between the two, so no code elsewhere needs to know a
plugin's ranges, and a parameter is always referred to by name, never by an index.

A discrete parameter (:class:`Kind` ``integer``, ``choice`` or ``toggle``) takes one of ``n`` values; its u
sits on the grid ``k / (n - 1)`` and :meth:`ParamSpec.to_plugin` snaps any u to the nearest grid point::

    ParamSpec.choice("type", ["lowpass", "highpass", "bandpass"], default="lowpass")  # plugin gets 0, 1, 2
    ParamSpec.choice("mode", ["clean", "warm"], values=[0.0, 0.25])  # e.g. a VST3 parameter's raw values
    ParamSpec.toggle("enabled", default=True, values=(1.0, 0.0))  # drives a bypass port: on -> 0
    ParamSpec.integer("order", 1, 8, default=2)

How the encoder's outputs become a distribution over those values (a choice takes one output per option),
sampled in training and decided by the most likely value in evaluation and inference, lives in
:mod:`afx_lightning.effects.discrete`; how the black-box layer estimates their gradient, in
:mod:`afx_lightning.blackbox.layer`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

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


class Kind(str, Enum):
    """What values a parameter takes.

    - ``continuous`` (the default): any value in [min, max].
    - ``integer``: the whole numbers min..max (a filter order, a number of stages).
    - ``choice``: one of named options (a filter type), held as the index 0..C-1; the plugin receives the
      option's entry in ``values`` (default: the index).
    - ``toggle``: off/on, held as 0/1; the plugin receives ``values[0]`` / ``values[1]`` (default 0.0 / 1.0).
    """

    CONTINUOUS = "continuous"
    INTEGER = "integer"
    CHOICE = "choice"
    TOGGLE = "toggle"


def nearest_index(u: float, num_values: int) -> int:
    """The grid point k / (n - 1) nearest to u (clipped; halves round up). The one rounding rule of discrete
    parameters: :class:`ParamSpec`, the vectorised table in ``effects.base`` and the codec all use it."""
    u = min(max(float(u), 0.0), 1.0)
    return min(int(math.floor(u * (num_values - 1) + 0.5)), num_values - 1)


@dataclass(frozen=True)
class ParamSpec:
    """One plugin parameter: name, range (in the units the range is written in), default, scale, unit, kind.

    ``fixed`` pins the parameter to a value (in range units; for a choice its index, or its name through
    :meth:`choice`); fixed parameters are applied to the plugin but are not predicted by the encoder (they do
    not count in P). Continuous parameters are built directly; discrete ones most simply with
    :meth:`integer`, :meth:`choice` and :meth:`toggle`, which fill in the index range. The fields are plain data:
    :meth:`to_dict` / :meth:`from_dict` round-trip a spec through JSON or YAML.
    """

    name: str
    min: float
    max: float
    default: float
    scale: Scale = Scale.LINEAR
    unit: str = ""
    fixed: float | None = None
    description: str = ""
    kind: Kind = Kind.CONTINUOUS
    choices: tuple[str, ...] = ()  # option names of a choice
    values: tuple[float, ...] = ()  # plugin value of each option of a choice or toggle (default: the index)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", Scale(self.scale))
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "choices", tuple(str(c) for c in self.choices))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if not self.name or not all(c.isalnum() or c in "_." for c in self.name):
            raise ValueError(
                f"parameter name {self.name!r} must be non-empty and use only letters, digits, '_' and '.'"
            )
        if not self.max > self.min:
            raise ValueError(f"parameter {self.name!r}: max ({self.max}) must be greater than min ({self.min})")
        if self.scale is Scale.LOG and self.min <= 0:
            raise ValueError(f"parameter {self.name!r}: a log scale needs min > 0, got {self.min}")
        if not self.min <= self.default <= self.max:
            raise ValueError(f"parameter {self.name!r}: default {self.default} lies outside [{self.min}, {self.max}]")
        if self.discrete:
            self._check_discrete()
        elif self.choices or self.values:
            raise ValueError(f"parameter {self.name!r}: choices and values are for choice and toggle parameters")

    def _check_discrete(self) -> None:
        what = f"{self.kind.value} parameter {self.name!r}"
        if self.scale is not Scale.LINEAR:
            raise ValueError(f"{what}: the scale must be linear, got {self.scale.value}")
        for label, x in (("min", self.min), ("max", self.max), ("default", self.default), ("fixed", self.fixed)):
            if x is not None and not float(x).is_integer():
                raise ValueError(f"{what}: {label} must be a whole number, got {x}")
        if self.fixed is not None and not self.min <= self.fixed <= self.max:
            raise ValueError(f"{what}: fixed {self.fixed} lies outside [{self.min:g}, {self.max:g}]")
        if self.kind is Kind.CHOICE:
            if len(self.choices) < 2 or len(set(self.choices)) != len(self.choices) or not all(self.choices):
                raise ValueError(
                    f"{what}: needs two or more distinct, non-empty option names, got {list(self.choices)}"
                )
            if (self.min, self.max) != (0, len(self.choices) - 1):
                raise ValueError(
                    f"{what}: its range is the option index 0..{len(self.choices) - 1}, "
                    f"got [{self.min:g}, {self.max:g}] (build it with ParamSpec.choice)"
                )
        elif self.choices:
            raise ValueError(f"{what}: only a choice parameter names its options")
        if self.kind is Kind.TOGGLE and (self.min, self.max) != (0, 1):
            raise ValueError(f"{what}: its range is 0 (off) .. 1 (on), got [{self.min:g}, {self.max:g}]")
        if self.values:
            if self.kind is Kind.INTEGER:
                raise ValueError(
                    f"{what}: an integer parameter's plugin values are its numbers; values are for "
                    "choice and toggle parameters"
                )
            if len(self.values) != self.num_values or not all(math.isfinite(v) for v in self.values):
                raise ValueError(
                    f"{what}: values must hold {self.num_values} finite plugin values, got {list(self.values)}"
                )

    # ------------------------------------------------------------------ constructors of the discrete kinds
    @classmethod
    def integer(
        cls,
        name: str,
        min: int,
        max: int,
        default: int | None = None,
        *,
        unit: str = "",
        fixed: int | None = None,
        description: str = "",
    ) -> ParamSpec:
        """The whole numbers ``min..max`` (default: ``min``)."""
        return cls(
            name,
            min,
            max,
            min if default is None else default,
            unit=unit,
            fixed=fixed,
            description=description,
            kind=Kind.INTEGER,
        )

    @classmethod
    def choice(
        cls,
        name: str,
        options: Sequence[str],
        default: str | int | None = None,
        *,
        values: Sequence[float] | None = None,
        fixed: str | int | None = None,
        unit: str = "",
        description: str = "",
    ) -> ParamSpec:
        """One of ``options`` (names), default the first. The plugin receives ``values[k]`` for option k
        (default: k itself; e.g. an LV2 enumeration's scale-point values or a VST3 parameter's raw values)."""
        options = tuple(options)

        def index(option: str | int) -> int:
            if isinstance(option, str):
                if option not in options:
                    raise ValueError(f"choice parameter {name!r}: {option!r} is not one of {list(options)}")
                return options.index(option)
            return int(option)

        return cls(
            name,
            0,
            len(options) - 1,
            0 if default is None else index(default),
            unit=unit,
            fixed=None if fixed is None else index(fixed),
            description=description,
            kind=Kind.CHOICE,
            choices=options,
            values=tuple(values or ()),
        )

    @classmethod
    def toggle(
        cls,
        name: str,
        default: bool = False,
        *,
        values: Sequence[float] | None = None,
        fixed: bool | None = None,
        description: str = "",
    ) -> ParamSpec:
        """Off or on. The plugin receives ``values[0]`` off and ``values[1]`` on (default 0.0 / 1.0; e.g.
        ``values=(1, 0)`` drives a bypass port from an "enabled" toggle)."""
        return cls(
            name,
            0,
            1,
            float(bool(default)),
            fixed=None if fixed is None else float(bool(fixed)),
            description=description,
            kind=Kind.TOGGLE,
            values=tuple(values or ()),
        )

    # ------------------------------------------------------------------ what a parameter is
    @property
    def trainable(self) -> bool:
        return self.fixed is None

    @property
    def discrete(self) -> bool:
        return self.kind is not Kind.CONTINUOUS

    @property
    def num_values(self) -> int:
        """How many values a discrete parameter takes (0 for a continuous one)."""
        return int(self.max - self.min) + 1 if self.discrete else 0

    @property
    def width(self) -> int:
        """How many encoder outputs drive it: one score per option for a choice, else one."""
        return len(self.choices) if self.kind is Kind.CHOICE else 1

    @property
    def labels(self) -> tuple[str, ...]:
        """The names of a discrete parameter's values, in index order."""
        if self.kind is Kind.CHOICE:
            return self.choices
        if self.kind is Kind.TOGGLE:
            return ("off", "on")
        if self.kind is Kind.INTEGER:
            return tuple(str(int(self.min) + k) for k in range(self.num_values))
        return ()

    @property
    def plugin_values(self) -> tuple[float, ...]:
        """What the plugin receives for each value of a discrete parameter, in index order."""
        if not self.discrete:
            return ()
        return self.values or tuple(float(self.min + k) for k in range(self.num_values))

    def index(self, u: float) -> int:
        """The value index a normalised u selects (nearest grid point)."""
        if not self.discrete:
            raise TypeError(f"parameter {self.name!r} is continuous; it has no value index")
        return nearest_index(u, self.num_values)

    def label(self, u: float) -> str:
        """The name of the value u selects (``"bandpass"``, ``"on"``, ``"3"``); continuous: the display value."""
        return self.labels[self.index(u)] if self.discrete else f"{self.to_display(u):g}"

    # ------------------------------------------------------------------ conversions
    def to_plugin(self, u: float) -> float:
        """Normalised u in [0, 1] (clipped) -> the value the plugin receives."""
        if self.discrete:
            return self.plugin_values[self.index(u)]
        u = min(max(float(u), 0.0), 1.0)
        if self.scale is Scale.LOG:
            return self.min * (self.max / self.min) ** u
        value = self.min + u * (self.max - self.min)
        if self.scale is Scale.DB:
            return 10.0 ** (value / 20.0)
        return value

    def to_display(self, u: float) -> float:
        """Normalised u -> the value in the units the range is written in (dB stays dB; a discrete parameter:
        its number, option index, or 0/1)."""
        if self.discrete:
            return float(self.min + self.index(u))
        u = min(max(float(u), 0.0), 1.0)
        if self.scale is Scale.LOG:
            return self.min * (self.max / self.min) ** u
        return self.min + u * (self.max - self.min)

    def normalize(self, value: float | str | bool) -> float:
        """A value in range units (dB for ``db``) -> u in [0, 1]. A discrete parameter also takes a label
        (``"bandpass"``, ``"on"``) and lands on its grid point."""
        if self.discrete:
            if isinstance(value, str):
                if value not in self.labels:
                    raise ValueError(f"parameter {self.name!r}: {value!r} is not one of {list(self.labels)}")
                k = self.labels.index(value)
            else:
                k = int(round(min(max(float(value), self.min), self.max) - self.min))
            return k / (self.num_values - 1)
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
        if self.discrete or self.scale is Scale.DB:
            return self.to_plugin(self.normalize(self.fixed))
        return float(self.fixed)

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, float, lists): JSON/YAML-ready; :meth:`from_dict` rebuilds the spec."""
        data = asdict(self)
        data.update(scale=self.scale.value, kind=self.kind.value, choices=list(self.choices), values=list(self.values))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParamSpec:
        """The inverse of :meth:`to_dict`; a dict without ``kind`` (written before kinds existed) is continuous."""
        return cls(**dict(data))


def defaults_normalized(specs: Sequence[ParamSpec]) -> np.ndarray:
    """The normalised defaults of the trainable parameters, in order (the plugin-side view, one value per
    parameter; the encoder-side defaults, one per encoder output, are ``ParamCodec.defaults``)."""
    return np.array([p.default_normalized for p in specs if p.trainable], dtype=np.float32)
