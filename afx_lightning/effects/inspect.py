"""What an installed plugin offers, read from the plugin itself: ``afx effects inspect`` and chain declarations.

One description (:class:`PluginInfo`) for the three kinds of target: a VST3/AU file (hosted by pedalboard), an LV2
URI (through :mod:`.lilv_ctypes`) and a pedalboard built-in class name. It lists each parameter under the names
the plugin shows (VST3 display names, LV2 port symbols, pedalboard attributes) with its range, default, unit and
kind (continuous, integer, choice, toggle), plus channels and reported latency. :mod:`.declared` takes ranges and
defaults from here, so a declaration needs only names; this module never builds an :class:`~.base.Effect`.

pedalboard's built-ins declare no ranges: :data:`BUILTIN_RANGES` suggests one per parameter (marked "suggested");
a declaration may always give its own. They report no latency either: :func:`stream_delay` measures it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..constants import FRAME_SIZE, SAMPLE_RATE
from ..errors import UsageError
from .base import PluginUnavailable

KINDS = ("continuous", "integer", "choice", "toggle")
PLUGIN_FILE_SUFFIXES = (".vst3", ".component")
_JUCE_CONTINUOUS_STEPS = 0x7FFFFFFF  # JUCE's num_steps for a parameter without steps

#: Debian packages of the LV2 plugins a URI prefix belongs to (named when a plugin is missing).
LV2_PACKAGES = {
    "http://lsp-plug.in/": "lsp-plugins-lv2",
    "http://calf.sourceforge.net/": "calf-plugins",
    "http://invadarecords.com/": "invada-studio-plugins-lv2",
    "http://guitarix.sourceforge.net/": "guitarix-lv2",
    "urn:zamaudio:": "zam-plugins",
}
VST3_PACKAGE = "zam-plugins"

#: Suggested ranges (min, max) for pedalboard built-ins, which declare none; frequencies above 0.45 x the sample
#: rate are cut to it when a chain is built.
BUILTIN_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "Gain": {"gain_db": (-24.0, 24.0)},
    "Compressor": {
        "threshold_db": (-60.0, 0.0),
        "ratio": (1.0, 20.0),
        "attack_ms": (0.1, 100.0),
        "release_ms": (10.0, 1000.0),
    },
    "Limiter": {"threshold_db": (-30.0, 0.0), "release_ms": (10.0, 1000.0)},
    "NoiseGate": {
        "threshold_db": (-100.0, 0.0),
        "ratio": (1.0, 20.0),
        "attack_ms": (0.1, 100.0),
        "release_ms": (10.0, 1000.0),
    },
    "HighpassFilter": {"cutoff_frequency_hz": (20.0, 20000.0)},
    "LowpassFilter": {"cutoff_frequency_hz": (20.0, 20000.0)},
    "HighShelfFilter": {"cutoff_frequency_hz": (20.0, 20000.0), "gain_db": (-24.0, 24.0), "q": (0.1, 10.0)},
    "LowShelfFilter": {"cutoff_frequency_hz": (20.0, 20000.0), "gain_db": (-24.0, 24.0), "q": (0.1, 10.0)},
    "PeakFilter": {"cutoff_frequency_hz": (20.0, 20000.0), "gain_db": (-24.0, 24.0), "q": (0.1, 10.0)},
    "LadderFilter": {"cutoff_hz": (20.0, 20000.0), "resonance": (0.0, 1.0), "drive": (1.0, 10.0)},
    "Distortion": {"drive_db": (0.0, 60.0)},
    "Clipping": {"threshold_db": (-60.0, 0.0)},
    "Bitcrush": {"bit_depth": (1.0, 16.0)},
    "Chorus": {
        "rate_hz": (0.1, 10.0),
        "depth": (0.0, 1.0),
        "centre_delay_ms": (1.0, 50.0),
        "feedback": (-0.95, 0.95),
        "mix": (0.0, 1.0),
    },
    "Phaser": {
        "rate_hz": (0.1, 10.0),
        "depth": (0.0, 1.0),
        "centre_frequency_hz": (100.0, 10000.0),
        "feedback": (-0.95, 0.95),
        "mix": (0.0, 1.0),
    },
    "Delay": {"delay_seconds": (0.001, 2.0), "feedback": (0.0, 0.95), "mix": (0.0, 1.0)},
    "Reverb": {
        "room_size": (0.0, 1.0),
        "damping": (0.0, 1.0),
        "wet_level": (0.0, 1.0),
        "dry_level": (0.0, 1.0),
        "width": (0.0, 1.0),
    },
    "PitchShift": {"semitones": (-12.0, 12.0)},
    "BrickwallLimiter": {"ceiling_db": (-30.0, 0.0), "release_ms": (10.0, 1000.0)},
    "MP3Compressor": {"vbr_quality": (0.0, 10.0)},
}
#: Built-in parameters that are switches although pedalboard types them as float.
BUILTIN_TOGGLES = {("Reverb", "freeze_mode")}
_BUILTIN_UNITS = (("_db", "dB"), ("_hz", "Hz"), ("_ms", "ms"), ("_seconds", "s"), ("semitones", "semitones"))
_NOT_EFFECTS = (
    "Plugin",
    "Chain",
    "Mix",
    "Pedalboard",
    "PluginContainer",
    "ExternalPlugin",
    "VST3Plugin",
    "AudioUnitPlugin",
    "Convolution",
    "IIRFilter",
    "Invert",
    "Resample",
)


@dataclass(frozen=True)
class PluginParam:
    """One control of a plugin, in the plugin's own units.

    ``name`` is what the plugin shows (and what a declaration writes); ``key`` is what the backend addresses
    (pedalboard's attribute key, an LV2 port symbol). ``values``: the choices of a choice (labels), the two values of
    a toggle, the values of a small integer range. ``range_source``: "plugin", "suggested" (built-ins) or "" (none).
    """

    name: str
    key: str
    min: float | None
    max: float | None
    default: float | str | None
    unit: str = ""
    kind: str = "continuous"
    values: tuple = ()
    logarithmic: bool = False
    range_source: str = "plugin"
    description: str = ""

    @property
    def has_range(self) -> bool:
        return self.min is not None and self.max is not None and self.max > self.min

    @property
    def discrete(self) -> bool:
        return self.kind in ("choice", "toggle")


@dataclass(frozen=True)
class PluginInfo:
    """A plugin as a declaration sees it: its parameters, audio channels and reported latency."""

    backend: str  # "vst3" (VST3/AU files), "lv2", "pedalboard"
    target: str  # the file, the URI or the class name
    name: str
    params: tuple[PluginParam, ...]
    inputs: int | None  # audio inputs (None: any count)
    outputs: int | None
    latency: int | None  # samples at ``sample_rate``; None: the plugin reports none
    sample_rate: int
    hidden: tuple[str, ...] = ()  # controls that are not settable (meters, host parameters)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def find(self, name: str) -> PluginParam | None:
        """A parameter by its shown name or key; then case- and punctuation-insensitively, if that is unique."""
        for p in self.params:
            if name in (p.name, p.key):
                return p
        folded = _fold(name)
        matches = [p for p in self.params if folded in (_fold(p.name), _fold(p.key))]
        return matches[0] if len(matches) == 1 else None

    @property
    def channels_text(self) -> str:
        if self.inputs is None:
            return "any channel count (the chain is mono)"
        word = {1: "mono", 2: "stereo"}.get(self.inputs, f"{self.inputs}-channel")
        text = f"{word} ({self.inputs} in, {self.outputs} out)"
        if self.inputs > 1:
            text += "; a mono chain runs it dual mono (the block to every input, the outputs averaged)"
        return text


def _fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


# ---------------------------------------------------------------------------------------------- targets


def vst3_search_paths() -> list[Path]:
    """Where VST3 bundles are looked for: ``$VST3_PATH`` (``:``-separated), ~/.vst3, /usr/local/lib/vst3, /usr/lib/vst3."""
    paths = [Path(p).expanduser() for p in os.environ.get("VST3_PATH", "").split(os.pathsep) if p]
    paths += [Path.home() / ".vst3", Path("/usr/local/lib/vst3"), Path("/usr/lib/vst3")]
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def installed_vst3() -> list[Path]:
    """Every VST3 bundle in the search paths (the first of a name wins, in search order)."""
    found: dict[str, Path] = {}
    for folder in vst3_search_paths():
        if folder.is_dir():
            for bundle in sorted(folder.glob("*.vst3")):
                found.setdefault(bundle.name, bundle)
    return sorted(found.values(), key=lambda p: p.name.lower())


def installed_lv2() -> list[tuple[str, str]]:
    """(URI, name) of every LV2 plugin lilv finds (``LV2_PATH`` or the default folders)."""
    from . import lilv_ctypes as lv

    return sorted(lv.plugin_names())


def lv2_install_hint(uri: str) -> str:
    return next((pkg for prefix, pkg in LV2_PACKAGES.items() if uri.startswith(prefix)), "")


def find_vst3(name: str) -> Path | None:
    """A bundle named ``name`` (with or without ``.vst3``) in the search paths."""
    stem = name[:-5] if name.lower().endswith(".vst3") else name
    for bundle in installed_vst3():
        if bundle.stem.lower() == stem.lower():
            return bundle
    return None


def builtin_classes() -> dict[str, type]:
    """pedalboard's built-in effects by class name (containers and file-driven plugins left out)."""
    import pedalboard

    out = {}
    for name in dir(pedalboard):
        obj = getattr(pedalboard, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, pedalboard.Plugin)
            and name not in _NOT_EFFECTS
            and not name.startswith("_")
        ):
            out[name] = obj
    return out


def target_backend(target: str) -> str:
    """Which backend a target names: ``lv2`` for a URI, ``vst3`` for a plugin file, ``pedalboard`` for a class."""
    if "://" in target or target.startswith("urn:"):
        return "lv2"
    if target.lower().endswith(PLUGIN_FILE_SUFFIXES) or os.sep in target or Path(target).exists():
        return "vst3"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target) and target in builtin_classes():
        return "pedalboard"
    if find_vst3(target) is not None:
        return "vst3"
    raise UsageError(
        f"{target!r} is neither a VST3/AU file, an LV2 URI nor a pedalboard built-in "
        f"({', '.join(sorted(builtin_classes()))}); `afx effects list --installed` lists the plugins found here"
    )


def describe(
    target: str,
    sample_rate: int = SAMPLE_RATE,
    backend: str | None = None,
    plugin_name: str | None = None,
    block_size: int = FRAME_SIZE,
) -> PluginInfo:
    """The :class:`PluginInfo` of a target (cached per process: loading a VST3 costs ~0.1-0.5 s)."""
    return _describe(backend or target_backend(target), target, int(sample_rate), plugin_name, int(block_size))


@functools.lru_cache(maxsize=64)
def _describe(backend: str, target: str, sample_rate: int, plugin_name: str | None, block_size: int) -> PluginInfo:
    if backend == "lv2":
        return _describe_lv2(target, sample_rate, block_size)
    if backend == "pedalboard":
        return _describe_builtin(target, sample_rate, block_size)
    if backend == "vst3":
        return _describe_file(target, sample_rate, plugin_name, block_size)
    raise UsageError(f"unknown plugin backend {backend!r}; expected vst3, lv2 or pedalboard")


# ---------------------------------------------------------------------------------------------- VST3 / AU


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """fd 1 and 2 to a scratch file while a plugin loads (DPF and friends print); replayed on fd 2 if it fails."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 1)
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved[1], 2)
            scratch.seek(0)
            os.write(2, scratch.read()[-4000:])
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def resolve_plugin_file(target: str) -> Path:
    """A plugin file path, or a bundle name found in :func:`vst3_search_paths`."""
    path = Path(target).expanduser()
    if path.exists():
        return path
    if os.sep not in target:
        found = find_vst3(target)
        if found is not None:
            return found
    where = ", ".join(str(p) for p in vst3_search_paths())
    raise PluginUnavailable(
        f"plugin file {target} does not exist (searched {where}; Debian's VST3s: sudo apt-get install {VST3_PACKAGE})"
    )


def _cpp_parameter(param: object) -> object:
    """pedalboard's native parameter (is_automatable, num_steps, default_raw_value), or None."""
    getter = getattr(param, "_AudioProcessorParameter__get_cpp_parameter", None)
    if getter is None:
        return None
    try:
        with getter() as native:
            return {a: getattr(native, a) for a in ("is_automatable", "num_steps", "default_raw_value", "is_boolean")}
    except Exception:
        return None


def _file_param(plugin: object, key: str) -> PluginParam | None:
    """One VST3/AU parameter, or None when it is not settable (a meter, the host's buffer size)."""
    param = plugin.parameters[key]
    native = _cpp_parameter(param) or {}
    if native.get("is_automatable") is False:
        return None
    lo, hi, step = param.range
    unit = (param.label or "").strip()
    current = getattr(plugin, key)
    steps = int(native.get("num_steps") or _JUCE_CONTINUOUS_STEPS)
    if param.type is str or (lo is None or hi is None):
        values = tuple(str(v) for v in param.valid_values)
        return PluginParam(param.name, key, 0.0, float(max(len(values) - 1, 1)), str(current), unit, "choice", values)
    lo, hi = float(lo), float(hi)
    default = float(current)
    if native.get("is_boolean") or (steps == 2 and (lo, hi) == (0.0, 1.0)):
        return PluginParam(param.name, key, lo, hi, default, unit, "toggle", (0, 1))
    if steps < _JUCE_CONTINUOUS_STEPS and step is not None and float(step) >= 1 and float(step).is_integer():
        values = tuple(int(round(v)) for v in param.valid_values) if steps <= 32 else ()
        return PluginParam(param.name, key, lo, hi, default, unit, "integer", values)
    return PluginParam(param.name, key, lo, hi, default, unit, "continuous")


def _file_channels(plugin: object, sample_rate: int, block_size: int) -> tuple[int, int]:
    """(inputs, outputs) of the main bus: mono if it takes a mono block, else the count pedalboard names."""
    for n in (1, 2):
        try:
            out = plugin.process(np.zeros((n, block_size), np.float32), sample_rate, reset=False)
            return n, int(out.shape[0])
        except ValueError as exc:
            match = re.search(r"expects (\d+) input channels and (\d+) output", str(exc))
            if match:
                return int(match.group(1)), int(match.group(2))
    return 2, 2


def _describe_file(target: str, sample_rate: int, plugin_name: str | None, block_size: int) -> PluginInfo:
    import pedalboard

    from .pedalboard_backend import silence_plugin_teardown

    path = resolve_plugin_file(target)
    silence_plugin_teardown()
    with quiet_native_output():
        try:
            plugin = pedalboard.load_plugin(str(path), plugin_name=plugin_name)
        except Exception as exc:
            raise PluginUnavailable(f"plugin file {path} does not load: {str(exc).splitlines()[0]}") from None
        gc.collect()  # pedalboard's factory leaves a second wrapper in a cycle (see pedalboard_backend)
        params, hidden = [], []
        for key in plugin.parameters:
            p = _file_param(plugin, key)
            if p is None:
                hidden.append(plugin.parameters[key].name)
            else:
                params.append(p)
        inputs, outputs = _file_channels(plugin, sample_rate, block_size)
        latency = int(getattr(plugin, "reported_latency_samples", 0) or 0)
        name = str(getattr(plugin, "name", "") or path.stem)
        state = getattr(plugin, "__dict__", None)
        if isinstance(state, dict):
            state.clear()
        del plugin
        gc.collect()
    return PluginInfo("vst3", str(path), name, tuple(params), inputs, outputs, latency, sample_rate, tuple(hidden))


# ---------------------------------------------------------------------------------------------- LV2

_LV2_UNITS = {"hz": "Hz", "khz": "kHz", "db": "dB", "G": "gain", "s": "s", "ms": "ms", "coef": "", "pc": "%"}


def _describe_lv2(uri: str, sample_rate: int, block_size: int) -> PluginInfo:
    from . import lilv_ctypes as lv

    plugin = lv.get_plugin(uri, lv2_install_hint(uri))
    params, hidden = [], []
    for port in plugin.ports:
        if not port.is_control:
            continue
        if not port.is_input:
            if not port.reports_latency:
                hidden.append(port.symbol)
            continue
        sr = float(sample_rate) if port.sample_rate else 1.0
        lo = None if math.isnan(port.minimum) else port.minimum * sr
        hi = None if math.isnan(port.maximum) else port.maximum * sr
        default = None if math.isnan(port.default) else port.default * sr
        unit = _LV2_UNITS.get(port.unit, port.unit)
        if port.toggled:
            kind, values = "toggle", (0, 1)
        elif port.enumeration:
            points = plugin.scale_points(port.symbol)
            kind, values = "choice", tuple(f"{v:g}={label}" for v, label in points)
        elif port.integer:
            kind = "integer"
            small = lo is not None and hi is not None and hi - lo <= 32
            values = tuple(range(int(lo), int(hi) + 1)) if small else ()
        else:
            kind, values = "continuous", ()
        params.append(
            PluginParam(
                port.name,
                port.symbol,
                lo,
                hi,
                default,
                unit,
                kind,
                values,
                port.logarithmic,
                "plugin" if lo is not None and hi is not None else "",
            )
        )
    inputs = sum(1 for p in plugin.ports if p.is_audio and p.is_input)
    outputs = sum(1 for p in plugin.ports if p.is_audio and p.is_output)
    notes: list[str] = []
    latency: int | None = None
    if plugin.latency_port is not None:
        latency = _lv2_latency(uri, sample_rate, block_size, notes)
    # LV2 controls are named by symbol in declarations: show the symbol as the name and the port name as text
    params = [
        PluginParam(
            p.key, p.key, p.min, p.max, p.default, p.unit, p.kind, p.values, p.logarithmic, p.range_source, p.name
        )
        for p in params
    ]
    return PluginInfo(
        "lv2",
        uri,
        plugin.name,
        tuple(params),
        inputs,
        outputs,
        latency if latency is not None else 0,
        sample_rate,
        tuple(hidden),
        tuple(notes),
    )


def _lv2_latency(uri: str, sample_rate: int, block_size: int, notes: list[str]) -> int | None:
    """The latency port's value after one block at the defaults (an :class:`~.lv2.LV2Effect` probes it)."""
    from .lv2 import LV2Effect

    try:
        effect = LV2Effect(uri, "probe", sample_rate, block_size, [], install_hint=lv2_install_hint(uri))
    except (PluginUnavailable, ValueError) as exc:
        notes.append(f"latency not measured: {exc}")
        return None
    try:
        return int(effect.latency)
    finally:
        effect.close()


# ---------------------------------------------------------------------------------------------- pedalboard built-ins


def _signature_defaults(cls: type) -> dict[str, str]:
    """``name -> default text`` from the pybind11 signature line of ``cls.__init__``."""
    doc = (cls.__init__.__doc__ or "").strip().splitlines()
    line = doc[0] if doc else ""
    inner = line[line.find("(") + 1 : line.rfind(")")]
    out = {}
    for match in re.finditer(r"(\w+): ([\w.\[\], ]+?) = (<[^>]*>|[^,]+)", inner):
        out[match.group(1)] = match.group(3).strip()
    return out


def _describe_builtin(name: str, sample_rate: int, block_size: int) -> PluginInfo:
    classes = builtin_classes()
    if name not in classes:
        raise UsageError(f"{name!r} is not a pedalboard built-in; built-ins: {', '.join(sorted(classes))}")
    cls = classes[name]
    defaults = _signature_defaults(cls)
    plugin = cls()
    suggested = BUILTIN_RANGES.get(name, {})
    params = []
    for key, value in vars(cls).items():
        if not isinstance(value, property):
            continue
        current = getattr(plugin, key)
        enum_type = type(current)
        members = getattr(enum_type, "__members__", None)
        if members:  # a pybind11 enum: LadderFilter.mode, Resample.quality
            labels = tuple(members)
            params.append(
                PluginParam(key, key, 0.0, float(max(len(labels) - 1, 1)), current.name, "", "choice", labels)
            )
            continue
        if not isinstance(current, (int, float)) or isinstance(current, bool):
            continue
        default = float(current) if key not in defaults else _number(defaults[key], float(current))
        unit = next((u for suffix, u in _BUILTIN_UNITS if key.endswith(suffix)), "")
        if (name, key) in BUILTIN_TOGGLES:
            params.append(PluginParam(key, key, 0.0, 1.0, default, unit, "toggle", (0, 1)))
            continue
        lo, hi = suggested.get(key, (None, None))
        params.append(
            PluginParam(
                key, key, lo, hi, default, unit, "continuous", range_source="suggested" if lo is not None else ""
            )
        )
    notes = (
        "pedalboard built-ins declare no ranges: the ranges shown are suggestions; give your own as "
        "train: {name: [min, max]}",
    )
    latency = stream_delay(plugin, sample_rate, block_size)
    return PluginInfo("pedalboard", name, name, tuple(params), None, None, latency, sample_rate, (), notes)


def stream_delay(plugin: object, sample_rate: int, block_size: int, channels: int = 1, max_blocks: int = 256) -> int:
    """How many samples pedalboard withholds at the start of a stream: a built-in's latency (look-ahead, pitch
    shifting, codecs), which it reports nowhere else. :class:`~.pedalboard_backend.PedalboardEffect` emits them as
    leading zeros, so this is the delay its stream comes out with. Measured on ``plugin`` (it is reset)."""
    silence = np.zeros((channels, block_size), np.float32)
    plugin.process(silence, sample_rate, reset=False)  # prepared at the largest block, as PedalboardEffect does
    plugin.reset()
    withheld = 0
    for _ in range(max_blocks):
        n = int(plugin.process(silence, sample_rate, buffer_size=block_size, reset=False).shape[1])
        withheld += block_size - n
        if n >= block_size:
            break
    plugin.reset()
    return max(withheld, 0)


def _number(text: str, fallback: float) -> float:
    try:
        return float(text)
    except ValueError:
        return fallback


# ---------------------------------------------------------------------------------------------- scales


def inferred_scale(param: PluginParam, lo: float, hi: float) -> str:
    """``log`` for times, frequencies, ratios and ports the plugin marks logarithmic (when lo > 0), else ``linear``.

    dB-valued parameters stay ``linear``: the plugin takes dB, so an even spread in dB is linear in its units.
    """
    if lo <= 0 or param.kind != "continuous":
        return "linear"
    unit = param.unit.lower()
    if unit in ("hz", "khz", "ms", "s", "sec") or param.logarithmic:
        return "log"
    if "ratio" in _fold(param.name) or "ratio" in _fold(param.key):
        return "log"
    return "linear"


# ---------------------------------------------------------------------------------------------- text


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_info(info: PluginInfo) -> str:
    """The table ``afx effects inspect`` prints, then a declaration to paste."""
    kind = {"vst3": "VST3/AU file", "lv2": "LV2 plugin", "pedalboard": "pedalboard built-in"}[info.backend]
    lines = [
        f"{info.name}  ({kind}: {info.target})",
        f"channels: {info.channels_text}",
        f"latency: {info.latency} samples at {info.sample_rate} Hz" + _latency_note(info),
    ]
    show_key = any(p.key != p.name for p in info.params)
    header = ["parameter", *(["key"] if show_key else []), "kind", "min", "max", "default", "unit", "scale", "values"]
    rows = []
    for p in info.params:
        scale = inferred_scale(p, p.min, p.max) if p.has_range and not p.discrete else ""
        values = ", ".join(str(v) for v in p.values)
        if len(values) > 60:
            values = values[:57] + "..."
        rng = (_fmt(p.min), _fmt(p.max)) if p.kind != "choice" else ("", "")
        if p.range_source == "suggested":
            rng = (rng[0] + "*", rng[1] + "*")
        note = "; ".join(text for text in (values, p.description) if text)
        rows.append([p.name, *([p.key] if show_key else []), p.kind, *rng, _fmt(p.default), p.unit, scale, note])
    lines += ["", *_table(header, rows)]
    if any(p.range_source == "suggested" for p in info.params):
        lines.append("* suggested range (pedalboard built-ins declare none)")
    if info.hidden:
        lines.append(f"not settable (meters, host parameters; not listed): {', '.join(info.hidden)}")
    lines += [f"note: {n}" for n in info.notes]
    lines += [
        "",
        "# a chain declaration: save as my_chain.yaml, then afx fit ... --model.fx.chain my_chain.yaml "
        "--data.demo_chain my_chain.yaml",
        snippet(info),
    ]
    return "\n".join(lines)


def _latency_note(info: PluginInfo) -> str:
    if not info.latency:
        return ""
    how = "measured: the stream delay at the defaults" if info.backend == "pedalboard" else "reported by the plugin"
    return f" ({how}; a chain compensates it)"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def snippet(info: PluginInfo, chain_name: str | None = None) -> str:
    """A ready-to-paste chain declaration: every continuous parameter with a range trained, the others listed."""
    trainable = [p for p in info.params if p.has_range and not p.discrete]
    entry: dict = {info.backend: info.target}
    if info.backend == "pedalboard":
        entry["train"] = {p.name: [p.min, p.max] for p in trainable}
    else:
        entry["train"] = [p.name for p in trainable]
    decl = {"name": chain_name or _slug(info.name) + "_chain", "plugins": [entry]}
    text = yaml.dump(decl, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=None, width=110).rstrip()
    others = [p for p in info.params if p not in trainable][:8]
    if others:
        fixed = {p.name: _snippet_value(p) for p in others}
        text += "\n    # fixed: " + yaml.safe_dump(fixed, default_flow_style=True, width=10**6).strip()
        text += "   # discrete or unranged: pin them here (plugin defaults shown)"
    return text


def _snippet_value(p: PluginParam) -> object:
    value = p.default if p.default is not None else p.min
    if p.kind in ("toggle", "integer") or (p.kind == "choice" and isinstance(value, float)):
        return int(round(float(value)))
    return value


class _IndentedDumper(yaml.SafeDumper):
    """Block lists indented under their key (``plugins:\n  - vst3: ...``), as people write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "plugin"
