"""Chains declared as data: any installed plugin becomes a trainable layer from a YAML file or a recipe, no code.

::

    name: my_chain
    plugins:
      - pedalboard: Gain
        train: {gain_db: [-12, 12]}          # name -> [min, max] in the plugin's units
      - vst3: /usr/lib/vst3/ZamComp.vst3
        train: [Threshold, Ratio]            # the plugin's own names; ranges from the plugin
        fixed: {Attack: 10}
      - lv2: http://lsp-plug.in/plugins/lv2/limiter_mono
        train: {th: {range: [-48, 0], scale: db}}

Names are the plugin's own (``afx effects inspect TARGET`` lists them). Ranges, defaults and units come from the
plugin (:mod:`.inspect`) unless given; scales are inferred (:func:`~.inspect.inferred_scale`: log for Hz, ms and
ratios, linear in dB for dB) unless given; ``scale: db`` takes a range in dB for a plugin that wants a linear gain.
A train entry is a name (list form), ``name: [min, max]`` or ``name: {range, scale, default}``; ``fixed`` pins
values (a choice by its label, a toggle by true/false). Each plugin may have a ``name`` (default: from its class,
file or URI; a chain of several qualifies parameter names with it: ``zamcomp.Threshold``). Latency is what the
plugins report (LV2: measured at the initial values; VST3: once prepared) and is compensated as for shipped chains.

The factory, :class:`DeclaredChain`, holds only the declaration (plain data), so it pickles into worker processes,
which resolve it against their own plugins once per process. A checkpoint stores :meth:`DeclaredChain.resolved`:
the same declaration with every range, scale and default written out, so the model rebuilds with the parameter
mapping it was trained with, without the YAML file, and a declaration (data) is never code to import.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..constants import FRAME_SIZE
from ..errors import AfxError, MissingFileError
from .base import Chain, Effect
from .inspect import (
    PluginInfo,
    PluginParam,
    builtin_classes,
    describe,
    inferred_scale,
    lv2_install_hint,
    resolve_plugin_file,
    stream_delay,
)
from .params import ParamSpec, Scale

YAML_SUFFIXES = (".yaml", ".yml")
BACKEND_KEYS = {"pedalboard": "pedalboard", "vst3": "vst3", "au": "vst3", "lv2": "lv2"}
PLUGIN_KEYS = ("name", "train", "fixed", "plugin_name")
TOP_KEYS = ("name", "plugins", "description")
TRAIN_KEYS = ("range", "scale", "default")
_RANGE_TOLERANCE = 1e-4  # relative: plugins round their bounds
_FREQUENCY_LIMIT = 0.45  # suggested (built-in) frequency ranges stop below Nyquist
_TRUE, _FALSE = ("true", "on", "yes", "1", "1.0"), ("false", "off", "no", "0", "0.0")


class DeclarationError(AfxError, ValueError):
    """A declaration that cannot become a chain: one line naming the file (or chain), the plugin and the parameter."""


def is_declaration_path(chain: object) -> bool:
    """Whether a chain argument names a declaration file rather than a registered chain."""
    return isinstance(chain, (str, os.PathLike)) and str(chain).lower().endswith(YAML_SUFFIXES)


@dataclass(frozen=True)
class _Train:
    name: str
    range: tuple[float, float] | None
    scale: str | None
    default: float | None


@dataclass(frozen=True)
class _PluginDecl:
    backend: str  # "pedalboard", "vst3" (VST3/AU files), "lv2"
    key: str  # the key the declaration used (vst3, au, lv2, pedalboard)
    target: str
    effect_name: str
    train: tuple[_Train, ...]
    fixed: tuple[tuple[str, Any], ...]
    plugin_name: str | None
    where: str  # "chain.yaml, plugin 2 (vst3 ZamComp.vst3)"


@dataclass(frozen=True)
class _Resolved:
    spec: ParamSpec
    key: str  # the backend's address (pedalboard key, LV2 symbol)
    choices: tuple = ()  # labels, for a fixed choice set by index (VST3 text choices, pedalboard enums)


# ---------------------------------------------------------------------------------------------- parsing


def _plain(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise DeclarationError(f"{where}: keys must be text, got {k!r}")
            _plain(v, where)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _plain(v, where)
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise DeclarationError(
            f"{where}: {value!r} ({type(value).__name__}) is not plain data (text, number, list, mapping)"
        )


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise DeclarationError(f"{where}: {what} must be a number, got {value!r}")
    return float(value)


def _range(value: Any, where: str, name: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise DeclarationError(f"{where}: the range of {name!r} must be [min, max], got {value!r}")
    lo, hi = (_number(v, where, f"the range of {name!r}") for v in value)
    if not hi > lo:
        raise DeclarationError(f"{where}: the range of {name!r} must have max > min, got [{lo:g}, {hi:g}]")
    return lo, hi


def _train_entries(value: Any, where: str) -> tuple[_Train, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise DeclarationError(
                f"{where}: train as a list takes parameter names, got {bad[0]!r} "
                "(ranges go in the mapping form: train: {name: [min, max]})"
            )
        return tuple(_Train(v, None, None, None) for v in value)
    if not isinstance(value, Mapping):
        raise DeclarationError(f"{where}: train must be a list of names or a mapping name -> range, got {value!r}")
    out = []
    for name, spec in value.items():
        if spec is None:
            out.append(_Train(name, None, None, None))
        elif isinstance(spec, (list, tuple)):
            out.append(_Train(name, _range(spec, where, name), None, None))
        elif isinstance(spec, Mapping):
            unknown = sorted(set(spec) - set(TRAIN_KEYS))
            if unknown:
                raise DeclarationError(
                    f"{where}: parameter {name!r}: unknown keys {unknown}; allowed: {', '.join(TRAIN_KEYS)}"
                )
            scale = spec.get("scale")
            if scale is not None:
                try:
                    scale = Scale(str(scale).lower()).value
                except ValueError:
                    raise DeclarationError(
                        f"{where}: parameter {name!r}: scale {scale!r} is not one of "
                        f"{', '.join(s.value for s in Scale)}"
                    ) from None
            rng = _range(spec["range"], where, name) if spec.get("range") is not None else None
            default = (
                _number(spec["default"], where, f"the default of {name!r}") if spec.get("default") is not None else None
            )
            out.append(_Train(name, rng, scale, default))
        else:
            raise DeclarationError(
                f"{where}: parameter {name!r}: expected [min, max] or {{range, scale, default}}, got {spec!r}"
            )
    return tuple(out)


def _default_effect_name(backend: str, target: str) -> str:
    if backend == "pedalboard":
        base = target
    elif backend == "vst3":
        base = Path(target).stem
    else:
        base = re.split(r"[/#:]", target.rstrip("/#"))[-1]
    return re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_") or "plugin"


def _parse(declaration: Mapping[str, Any], source: str) -> tuple[str, tuple[_PluginDecl, ...]]:
    """Structure only (no plugin is loaded): the chain name and one :class:`_PluginDecl` per plugin."""
    if not isinstance(declaration, Mapping):
        raise DeclarationError(
            f"{source}: a chain declaration must be a mapping with 'plugins', got {type(declaration).__name__}"
        )
    _plain(declaration, source)
    unknown = sorted(set(declaration) - set(TOP_KEYS))
    if unknown:
        raise DeclarationError(f"{source}: unknown keys {unknown}; a chain declaration has {', '.join(TOP_KEYS)}")
    name = declaration.get("name") or "declared_chain"
    if not isinstance(name, str):
        raise DeclarationError(f"{source}: name must be text, got {name!r}")
    plugins = declaration.get("plugins")
    if not isinstance(plugins, (list, tuple)) or not plugins:
        raise DeclarationError(f"{source}: 'plugins' must be a non-empty list (each item: pedalboard:, vst3: or lv2:)")
    out: list[_PluginDecl] = []
    used: set[str] = set()
    for i, entry in enumerate(plugins, 1):
        here = f"{source}, plugin {i}"
        if not isinstance(entry, Mapping):
            raise DeclarationError(f"{here}: expected a mapping like {{vst3: PATH, train: [...]}}, got {entry!r}")
        keys = [k for k in entry if k in BACKEND_KEYS]
        if len(keys) != 1:
            raise DeclarationError(f"{here}: name exactly one of {', '.join(BACKEND_KEYS)} (got {keys or 'none'})")
        key = keys[0]
        unknown = sorted(set(entry) - set(PLUGIN_KEYS) - {key})
        if unknown:
            raise DeclarationError(f"{here}: unknown keys {unknown}; allowed: {key}, {', '.join(PLUGIN_KEYS)}")
        backend, target = BACKEND_KEYS[key], entry[key]
        if not isinstance(target, str) or not target:
            raise DeclarationError(f"{here}: {key} must name the plugin, got {target!r}")
        here = f"{source}, plugin {i} ({key} {target})"
        effect_name = entry.get("name") or _default_effect_name(backend, target)
        if not isinstance(effect_name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", effect_name):
            raise DeclarationError(f"{here}: name {effect_name!r} must use only letters, digits and '_'")
        if effect_name in used:
            if "name" in entry:
                raise DeclarationError(f"{here}: two plugins are named {effect_name!r}")
            effect_name = next(f"{effect_name}_{k}" for k in range(2, 1000) if f"{effect_name}_{k}" not in used)
        used.add(effect_name)
        fixed = entry.get("fixed") or {}
        if not isinstance(fixed, Mapping) or any(isinstance(v, (list, tuple, Mapping)) for v in fixed.values()):
            raise DeclarationError(f"{here}: fixed must map names to single values, got {fixed!r}")
        plugin_name = entry.get("plugin_name")
        if plugin_name is not None and (backend != "vst3" or not isinstance(plugin_name, str)):
            raise DeclarationError(f"{here}: plugin_name (text) picks one plugin of a VST3/AU file; only for vst3/au")
        train = _train_entries(entry.get("train"), here)
        names = [t.name for t in train] + list(fixed)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DeclarationError(f"{here}: {twice} both trained and fixed (or listed twice)")
        out.append(_PluginDecl(backend, key, target, effect_name, train, tuple(fixed.items()), plugin_name, here))
    return name, tuple(out)


# ---------------------------------------------------------------------------------------------- resolving


def _spec_name(name: str) -> str:
    """A parameter name as a ParamSpec takes it (letters, digits, '_'): "Output Ceiling" -> "Output_Ceiling"."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "param"


def _find(info: PluginInfo, pd: _PluginDecl, name: str) -> PluginParam:
    p = info.find(name)
    if p is None:
        raise DeclarationError(f"{pd.where}: no parameter {name!r}; its parameters: {', '.join(info.names())}")
    return p


def _label(p: PluginParam) -> str:
    """ "Threshold (threshold_db)": what the plugin shows, and what the backend addresses."""
    shown = p.description if p.name == p.key and p.description else p.name
    return shown if shown == p.key else f"{shown} ({p.key})"


def _inside(lo: float, hi: float, p: PluginParam) -> bool:
    if not p.has_range or p.range_source != "plugin":
        return True
    tol = _RANGE_TOLERANCE * max(abs(p.min), abs(p.max), 1e-9)
    return lo >= p.min - tol and hi <= p.max + tol


def _train_spec(t: _Train, p: PluginParam, pd: _PluginDecl, sample_rate: int) -> ParamSpec:
    if p.discrete:
        raise DeclarationError(
            f"{pd.where}: {t.name!r} is a {p.kind} ({', '.join(map(str, p.values))}); discrete parameters are not "
            "trainable here yet: pin it under fixed:"
        )
    scale = t.scale
    if t.range is not None:
        lo, hi = t.range
    elif p.has_range:
        lo, hi = float(p.min), float(p.max)
        if scale == Scale.DB.value:
            if lo <= 0:
                raise DeclarationError(
                    f"{pd.where}: {t.name!r} spans [{lo:g}, {hi:g}]: give its range in dB for scale db"
                )
            lo, hi = 20 * math.log10(lo), 20 * math.log10(hi)
        if p.range_source == "suggested" and p.unit == "Hz":
            hi = min(hi, _FREQUENCY_LIMIT * sample_rate)
    else:
        raise DeclarationError(
            f"{pd.where}: {t.name!r} has no range from the plugin; give one: train: {{{t.name}: [min, max]}}"
        )
    scale = scale or inferred_scale(p, lo, hi)
    to_plugin = (lambda v: 10.0 ** (v / 20.0)) if scale == Scale.DB.value else (lambda v: v)
    if not _inside(to_plugin(lo), to_plugin(hi), p):
        raise DeclarationError(
            f"{pd.where}: {t.name!r}: range [{lo:g}, {hi:g}]{' dB' if scale == 'db' else ''} lies outside the "
            f"plugin's [{p.min:g}, {p.max:g}]"
        )
    if t.default is not None:
        default = t.default
    elif isinstance(p.default, (int, float)):
        default = float(p.default)
        if scale == Scale.DB.value:
            default = 20 * math.log10(default) if default > 0 else lo
    else:
        default = lo
    default = min(max(default, lo), hi)
    source = "given" if t.range is not None else f"{p.range_source} range"
    try:
        return ParamSpec(
            _spec_name(t.name),
            lo,
            hi,
            default,
            scale,
            unit="dB" if scale == Scale.DB.value else p.unit,
            description=f"{_label(p)}; {p.kind}, {source}",
        )
    except ValueError as exc:
        raise DeclarationError(f"{pd.where}: {exc}") from None


def _choice_index(value: Any, p: PluginParam, pd: _PluginDecl, name: str) -> int:
    labels = [str(v) for v in p.values]
    text = str(value)
    if text in labels:
        return labels.index(text)
    folded = [re.sub(r"\W", "", v.lower()) for v in labels]
    if re.sub(r"\W", "", text.lower()) in folded:
        return folded.index(re.sub(r"\W", "", text.lower()))
    raise DeclarationError(f"{pd.where}: {name!r} is a choice of {', '.join(labels)}; got {value!r}")


def _fixed_value(name: str, value: Any, p: PluginParam, pd: _PluginDecl) -> tuple[float, tuple]:
    """(plugin value, choice labels when the backend sets it by index) of a fixed entry."""
    if p.kind == "toggle":
        text = str(value).strip().lower()
        if text not in _TRUE + _FALSE:
            raise DeclarationError(f"{pd.where}: {name!r} is a toggle: use true/false (or 1/0), got {value!r}")
        return (float(p.max) if text in _TRUE else float(p.min)), ()
    if p.kind == "choice":
        if pd.backend == "lv2":  # scale points "value=label": by value or by label
            pairs = [str(v).split("=", 1) for v in p.values]
            for v, label in pairs:
                if str(value) == label or (isinstance(value, (int, float)) and float(v) == float(value)):
                    return float(v), ()
            raise DeclarationError(
                f"{pd.where}: {name!r} is a choice of {', '.join(map(str, p.values))}; got {value!r}"
            )
        return float(_choice_index(value, p, pd, name)), tuple(str(v) for v in p.values)
    number = _number(value, pd.where, f"fixed {name!r}")
    if not _inside(number, number, p):
        raise DeclarationError(
            f"{pd.where}: fixed {name!r} = {number:g} lies outside the plugin's [{p.min:g}, {p.max:g}]"
        )
    return number, ()


@functools.lru_cache(maxsize=128)
def _resolve(pd: _PluginDecl, sample_rate: int, block_size: int) -> tuple[PluginInfo, tuple[_Resolved, ...]]:
    """The plugin's description and one spec per declared parameter (once per process: a VST3 loads to say)."""
    info = describe(pd.target, sample_rate, pd.backend, pd.plugin_name, block_size)
    out: list[_Resolved] = []
    for t in pd.train:
        p = _find(info, pd, t.name)
        out.append(_Resolved(_train_spec(t, p, pd, sample_rate), p.key))
    for name, value in pd.fixed:
        p = _find(info, pd, name)
        number, choices = _fixed_value(name, value, p, pd)
        lo, hi = (float(p.min), float(p.max)) if p.has_range and p.min <= number <= p.max else (number, number + 1.0)
        spec = ParamSpec(
            _spec_name(name),
            lo,
            hi,
            number,
            Scale.LINEAR,
            unit=p.unit,
            fixed=number,
            description=f"{_label(p)}; {p.kind}" + (f" = {value}" if p.discrete else ""),
        )
        out.append(_Resolved(spec, p.key, choices))
    names = [r.spec.name for r in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DeclarationError(f"{pd.where}: parameter names {twice} collide once made identifiers; name each once")
    return info, tuple(out)


# ---------------------------------------------------------------------------------------------- building


def _builtin_effect(pd: _PluginDecl, resolved: Sequence[_Resolved], sample_rate: int, block_size: int) -> Effect:
    from .pedalboard_backend import PedalboardEffect, PedalboardGraph, attribute_setter

    cls = builtin_classes()[pd.target]

    def build() -> PedalboardGraph:
        plugin = cls()
        setters: dict[str, Callable[[float], None]] = {}
        for r in resolved:
            if r.choices:
                members = list(type(getattr(plugin, r.key)).__members__.values())
                setters[r.spec.name] = functools.partial(_set_member, plugin, r.key, members)
            else:
                setters[r.spec.name] = attribute_setter(plugin, r.key)
        return PedalboardGraph(plugin, setters)

    effect = PedalboardEffect(pd.effect_name, build, [r.spec for r in resolved], sample_rate, block_size)
    # built-ins report no latency: measure the delay pedalboard streams with, at the declared initial values
    probe = build()
    for r in resolved:
        spec = r.spec
        probe.setters[spec.name](
            spec.fixed_plugin_value if spec.fixed is not None else spec.to_plugin(spec.default_normalized)
        )
    effect.latency = stream_delay(probe.plugin, sample_rate, block_size)
    return effect


def _set_member(plugin: object, key: str, members: list, value: float) -> None:
    setattr(plugin, key, members[int(round(value))])


def _set_raw(param: object, raws: list, value: float) -> None:
    param.raw_value = raws[int(round(value))]


def _file_effect(
    pd: _PluginDecl, info: PluginInfo, resolved: Sequence[_Resolved], sample_rate: int, block_size: int
) -> Effect:
    import pedalboard

    from .pedalboard_backend import (
        PedalboardEffect,
        PedalboardGraph,
        plugin_teardown_silenced,
        raw_value_setter,
        silence_plugin_teardown,
    )

    path = resolve_plugin_file(pd.target)
    cache_key = (str(path.resolve()), pd.plugin_name)

    def build() -> PedalboardGraph:
        silence_plugin_teardown()
        with plugin_teardown_silenced():
            plugin = pedalboard.load_plugin(str(path), plugin_name=pd.plugin_name)
            gc.collect()  # pedalboard's factory leaves a second wrapper in a cycle (see plugin_file_effect)
        setters: dict[str, Callable[[float], None]] = {}
        for r in resolved:
            if r.choices:  # a text choice: its raw values, by index
                param = plugin.parameters[r.key]
                setters[r.spec.name] = functools.partial(
                    _set_raw, param, [param.get_raw_value_for(c) for c in r.choices]
                )
            else:
                setters[r.spec.name] = raw_value_setter(plugin, r.key, cache_key=cache_key)
        return PedalboardGraph(plugin, setters)

    if info.inputs != info.outputs:
        raise DeclarationError(
            f"{pd.where}: the plugin has {info.inputs} inputs and {info.outputs} outputs; "
            "only equal counts can run in a mono chain"
        )
    plugin_channels = info.inputs if info.inputs and info.inputs > 1 else None
    effect = PedalboardEffect(
        pd.effect_name, build, [r.spec for r in resolved], sample_rate, block_size, plugin_channels=plugin_channels
    )
    # the delay the stream comes out with, as reported once prepared with the declared values (see PedalboardEffect)
    effect.latency = int(getattr(effect._graph.plugin, "reported_latency_samples", 0) or 0)
    return effect


def _lv2_effect(pd: _PluginDecl, resolved: Sequence[_Resolved], sample_rate: int, block_size: int) -> Effect:
    from .lv2 import LV2Effect

    try:
        return LV2Effect(
            pd.target,
            pd.effect_name,
            sample_rate,
            block_size,
            [r.spec for r in resolved],
            port_symbols={r.spec.name: r.key for r in resolved},
            install_hint=lv2_install_hint(pd.target),
        )
    except ValueError as exc:
        raise DeclarationError(f"{pd.where}: {exc}") from None


class DeclaredChain:
    """A chain factory built from a declaration (plain data); picklable by its declaration.

    ``DeclaredChain(declaration)(sample_rate, block_size)`` builds the chain. ``source`` (the YAML file, if any)
    only names the declaration in error messages.
    """

    def __init__(self, declaration: Mapping[str, Any], source: str = ""):
        self.declaration: dict[str, Any] = dict(declaration)
        self.source = source or f"chain {self.declaration.get('name', 'declared_chain')!r}"
        self.name, self._plugins = _parse(self.declaration, self.source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> DeclaredChain:
        """A declaration file; relative plugin file paths are taken from the file's folder."""
        import yaml

        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingFileError(f"chain declaration {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DeclarationError(f"{path}: not valid YAML ({first})") from None
        if not isinstance(data, Mapping):
            raise DeclarationError(f"{path}: a chain declaration must be a mapping with 'plugins'")
        data = dict(data)
        data.setdefault("name", re.sub(r"[^A-Za-z0-9_]+", "_", path.stem))
        plugins = data.get("plugins")
        if isinstance(plugins, list):
            data["plugins"] = [_absolute(entry, path.parent) for entry in plugins]
        return cls(data, source=str(path))

    def files_outside_plugin_folders(self) -> list[str]:
        """VST3/AU files not in the standard plugin folders (:func:`~.inspect.vst3_search_paths`): a checkpoint's
        declaration may load only plugins installed there, as it may build only registered chains."""
        from .inspect import vst3_search_paths

        folders = [p.resolve() for p in vst3_search_paths()]
        out = []
        for pd in self._plugins:
            if pd.backend != "vst3":
                continue
            path = Path(pd.target).expanduser()
            if os.sep not in pd.target:
                continue  # a bundle name: only ever looked up in the standard folders
            resolved = path.resolve()
            if not any(resolved.is_relative_to(folder) for folder in folders):
                out.append(str(path))
        return out

    def __reduce__(self) -> tuple:
        return (DeclaredChain, (self.declaration, self.source))

    def __repr__(self) -> str:
        return f"DeclaredChain({self.name!r}, {len(self._plugins)} plugins)"

    def __call__(self, sample_rate: int, block_size: int) -> Chain:
        effects: list[Effect] = []
        try:
            for pd in self._plugins:
                info, resolved = _resolve(pd, int(sample_rate), int(block_size))
                if pd.backend == "pedalboard":
                    effects.append(_builtin_effect(pd, resolved, sample_rate, block_size))
                elif pd.backend == "vst3":
                    effects.append(_file_effect(pd, info, resolved, sample_rate, block_size))
                else:
                    effects.append(_lv2_effect(pd, resolved, sample_rate, block_size))
            chain = Chain(effects, name=self.name)
        except BaseException:
            for e in effects:
                e.close()
            raise
        if chain.num_params == 0:
            chain.close()
            raise DeclarationError(f"{self.source}: the chain trains no parameter (give each plugin a train: list)")
        return chain

    def resolved(self, sample_rate: int, block_size: int = FRAME_SIZE) -> dict[str, Any]:
        """The declaration with every trained range, scale and default written out (what a checkpoint stores)."""
        plugins = []
        for pd in self._plugins:
            info, resolved = _resolve(pd, int(sample_rate), int(block_size))
            by_name = {r.spec.name: r.spec for r in resolved}
            entry: dict[str, Any] = {pd.key: info.target if pd.backend == "vst3" else pd.target, "name": pd.effect_name}
            if pd.plugin_name is not None:
                entry["plugin_name"] = pd.plugin_name
            entry["train"] = {
                t.name: {
                    "range": [by_name[_spec_name(t.name)].min, by_name[_spec_name(t.name)].max],
                    "scale": by_name[_spec_name(t.name)].scale.value,
                    "default": by_name[_spec_name(t.name)].default,
                }
                for t in pd.train
            }
            if pd.fixed:
                entry["fixed"] = dict(pd.fixed)
            plugins.append(entry)
        out: dict[str, Any] = {"name": self.name, "plugins": plugins}
        if self.declaration.get("description"):
            out["description"] = self.declaration["description"]
        return out


def _absolute(entry: Any, folder: Path) -> Any:
    """A plugin entry whose relative VST3/AU path is made absolute against the declaration's folder."""
    if not isinstance(entry, Mapping):
        return entry
    entry = dict(entry)
    for key in ("vst3", "au"):
        target = entry.get(key)
        if isinstance(target, str) and os.sep in target and not os.path.isabs(os.path.expanduser(target)):
            entry[key] = str((folder / target).resolve())
    return entry
