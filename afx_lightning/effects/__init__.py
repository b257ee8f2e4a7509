"""What a plugin is: named parameters, the effect contract, chains, and the backends."""

from .base import Chain, ChainFactory, Effect, ParamLayout, PluginUnavailable
from .lv2 import LV2Effect, lv2_params_from_ports  # liblilv is loaded only when an LV2 plugin is first used
from .params import ParamSpec, Scale, defaults_normalized
from .pedalboard_backend import PedalboardEffect, PedalboardGraph, attribute_setter, fan_out, plugin_file_effect
from .python_backend import FunctionEffect

__all__ = [
    "Chain",
    "ChainFactory",
    "Effect",
    "FunctionEffect",
    "LV2Effect",
    "ParamLayout",
    "ParamSpec",
    "PedalboardEffect",
    "PedalboardGraph",
    "PluginUnavailable",
    "Scale",
    "attribute_setter",
    "defaults_normalized",
    "fan_out",
    "lv2_params_from_ports",
    "plugin_file_effect",
]
