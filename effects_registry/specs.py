"""The parameter shorthands the shipped chains are declared with (one place for the three registry modules)."""

from __future__ import annotations

from afx_lightning.effects.params import ParamSpec, Scale


def db(
    name: str, lo: float, hi: float, default: float = 0.0, description: str = "", fixed: float | None = None
) -> ParamSpec:
    """A dB-valued parameter that the plugin takes in dB, so it is spread linearly in dB."""
    return ParamSpec(name, lo, hi, default, Scale.LINEAR, unit="dB", fixed=fixed, description=description)


def log(
    name: str, lo: float, hi: float, default: float, unit: str, description: str = "", fixed: float | None = None
) -> ParamSpec:
    """A positive gain, ratio, frequency or time, spread evenly in dB / octaves."""
    return ParamSpec(name, lo, hi, default, Scale.LOG, unit=unit, fixed=fixed, description=description)


def fixed(name: str, value: float, lo: float, hi: float, unit: str, description: str) -> ParamSpec:
    """A control held at ``value``: applied to the plugin, not predicted."""
    return ParamSpec(name, lo, hi, value, Scale.LINEAR, unit=unit, fixed=value, description=description)
