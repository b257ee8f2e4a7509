"""LV2 backend: a real LV2 plugin (through :mod:`.lilv_ctypes`) as a stateful :class:`Effect`.

An :class:`LV2Effect` is described by the plugin URI and a list of :class:`ParamSpec` whose *names are port
symbols* (or are mapped to symbols with ``port_symbols``). The spec's range is the range the encoder trains in and
overrides the plugin's own range (it must lie inside it); ``fixed`` pins a port. Control inputs that no spec names
keep the plugin's default. Nothing here refers to port numbers: the symbol is looked up in the installed plugin.

Buffers. Every port gets a float32 NumPy buffer that lives as long as the effect: one array for all control
ports (values are written into it in place, vectorised, once per block), one ``[ports, block_size]`` array per
audio direction, zero-filled buffers for CV inputs and scratch ones for CV outputs, and atom buffers (an empty
``atom:Sequence`` in, an ``atom:Chunk`` of the whole capacity out, rewritten before every ``run``) for atom ports
(LSP's UI ports). Ports are connected once per instance. ``process`` copies the block in, runs exactly
``block_size`` frames (other sizes are refused: several plugins change their output with the block size) and
copies the outputs out.

Channels. The effect has ``channels`` channels. A plugin with that many audio inputs and outputs is wired one to
one. A *mono* effect (``channels=1``) on a plugin with more audio ports (Calf's multiband compressor and gate are
2 in / 2 out) follows ``stereo_mode``:

- ``"dual_mono"`` (default): the mono signal feeds every input and the outputs are averaged back to mono: the
  plugin's response to a mono signal, whatever it would do with a silent channel (e.g. a stereo-linked detector
  that averages the channels).
- ``"left"``: the signal feeds the first input only, the other inputs get silence, and the first output is the
  result. This is what the official DeepAFx code did (``runs_stereo``). For Calf's multiband compressor and
  gate both modes give identical output (tested).

Latency. At construction a throw-away instance is activated, given one block of silence at the chain's initial
values (fixed values and defaults) and its latency port (``lv2:reportsLatency`` / designation ``lv2:latency``)
is read: that is :attr:`LV2Effect.latency` (an int, 0 for plugins without a latency port). Some plugins' latency
depends on their controls (LSP limiter: look-ahead); it is measured at the initial values. The probe instance is
discarded so that the instance that processes audio starts truly fresh.

Reset. ``deactivate``/``activate`` does not clear state in many plugins, so :meth:`LV2Effect.reset` frees the
instance and creates a new one (connect, write initial values, activate). ``close`` deactivates and frees it
(``lilv_instance_free`` calls the plugin's ``cleanup``; calling it twice is a no-op).

Integer, toggled and enumeration ports receive rounded values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from . import lilv_ctypes as lv
from .base import Effect, PluginUnavailable
from .params import ParamSpec, Scale

STEREO_MODES = ("dual_mono", "left")
ATOM_BUFFER_BYTES = 8192
_RANGE_TOLERANCE = 1e-4  # relative; TTL files round their bounds (0.01585 vs 0.015850, 0.000977 vs 0.000976563)


def lv2_params_from_ports(
    uri: str,
    symbols: Sequence[str],
    ranges: Mapping[str, tuple] | None = None,
    fixed: Mapping[str, float] | None = None,
    scales: Mapping[str, Scale | str] | None = None,
    install_hint: str = "",
    sample_rate: float | None = None,
) -> list[ParamSpec]:
    """Parameter specs for ports of an installed plugin, from the plugin's own metadata.

    ``symbols`` are the trainable ports (in order), ``fixed`` maps further symbols to the plugin value they are
    pinned to. The range is the port's (``ranges`` overrides it with ``(min, max)`` in plugin units); the default
    is the port's default clipped into the range; the scale is ``log`` where the port is ``pprops:logarithmic``
    and the range is positive, else ``linear`` (``scales`` overrides it); integer / toggled / enumeration ports
    are noted in the description (the effect rounds their values). Ports whose range is a fraction of the
    sample rate (``lv2:sampleRate``) are scaled by ``sample_rate`` (required for them).
    """
    plugin = lv.get_plugin(uri, install_hint)
    ranges, fixed, scales = dict(ranges or {}), dict(fixed or {}), dict(scales or {})
    unknown = [s for s in list(ranges) + list(scales) if s not in symbols and s not in fixed]
    if unknown:
        raise ValueError(f"ranges/scales given for ports {unknown} that are neither trainable nor fixed")
    specs: list[ParamSpec] = []
    for sym in list(symbols) + [s for s in fixed if s not in symbols]:
        port = plugin.port(sym)
        if not (port.is_control and port.is_input):
            raise ValueError(f"LV2 plugin {uri}: port {sym!r} is a {port.kind} port, not a control input")
        if port.sample_rate and not sample_rate and sym not in ranges:
            raise ValueError(
                f"LV2 plugin {uri}: port {sym!r} is ranged in fractions of the sample rate; pass sample_rate"
            )
        scale_sr = float(sample_rate) if port.sample_rate and sample_rate else 1.0  # lv2:sampleRate ports
        lo, hi = ranges.get(sym, (port.minimum * scale_sr, port.maximum * scale_sr))
        lo, hi = float(lo), float(hi)
        if sym in fixed and (math.isnan(lo) or math.isnan(hi) or not hi > lo):
            lo, hi = float(fixed[sym]), float(fixed[sym]) + 1.0  # a fixed port needs no real range
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"LV2 plugin {uri}: port {sym!r} declares no range; pass ranges={{{sym!r}: (lo, hi)}}")
        default = port.default * scale_sr if not math.isnan(port.default) else lo
        default = min(max(default, lo), hi)
        if sym in scales:
            scale = Scale(scales[sym])
        else:
            scale = Scale.LOG if port.logarithmic and lo > 0 else Scale.LINEAR
        notes = [port.name]
        if port.logarithmic and scale is not Scale.LOG:
            notes.append("logarithmic port with a non-positive range: spread linearly")
        for flag, text in ((port.integer, "integer"), (port.toggled, "toggled"), (port.enumeration, "enumeration")):
            if flag:
                notes.append(f"{text} (values are rounded)")
        specs.append(
            ParamSpec(
                sym,
                lo,
                hi,
                default,
                scale,
                unit=port.unit,
                fixed=float(fixed[sym]) if sym in fixed else None,
                description="; ".join(notes),
            )
        )
    return specs


class LV2Effect(Effect):
    """A real LV2 plugin as an effect (see the module docstring for buffers, channels, latency and reset)."""

    def __init__(
        self,
        uri: str,
        name: str,
        sample_rate: int,
        block_size: int,
        params: Sequence[ParamSpec],
        channels: int = 1,
        stereo_mode: str = "dual_mono",
        port_symbols: Mapping[str, str] | None = None,
        install_hint: str = "",
    ):
        if stereo_mode not in STEREO_MODES:
            raise ValueError(f"stereo_mode must be one of {STEREO_MODES}, got {stereo_mode!r}")
        if int(block_size) <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        plugin = lv.get_plugin(uri, install_hint)
        plugin.check_supported(int(block_size))
        self.uri = uri
        self.plugin = plugin
        self.block_size = int(block_size)
        self.stereo_mode = stereo_mode
        symbols = dict(port_symbols or {})
        super().__init__(name, params, sample_rate, channels, latency=0)

        # --- ports
        ports = plugin.ports
        self._audio_in = [p for p in ports if p.is_audio and p.is_input]
        self._audio_out = [p for p in ports if p.is_audio and p.is_output]
        if not self._audio_out:
            raise ValueError(f"LV2 plugin {uri} has no audio output")
        self._check_channels(len(self._audio_in), "inputs")
        self._check_channels(len(self._audio_out), "outputs")
        for p in ports:
            known = p.is_audio or p.is_control or p.is_cv or p.is_atom
            if not known and not p.connection_optional:
                raise PluginUnavailable(
                    f"LV2 plugin {uri}: port {p.symbol!r} has a type this host does not support ({p.kind})"
                )

        # --- control values: one float32 array for every port (index = port index)
        self._controls = np.zeros(len(ports), dtype=np.float32)
        self._initial = np.zeros(len(ports), dtype=np.float32)
        for p in ports:
            if p.is_control and p.is_input:
                value = p.default if not math.isnan(p.default) else (p.minimum if not math.isnan(p.minimum) else 0.0)
                self._initial[p.index] = value * (self.sample_rate if p.sample_rate else 1.0)
        self._param_ports: list[int] = []
        used: dict[str, str] = {}
        for spec in self.params:
            sym = symbols.get(spec.name, spec.name)
            if sym in used:
                raise ValueError(
                    f"LV2 effect {name!r}: parameters {used[sym]!r} and {spec.name!r} both drive port {sym!r}"
                )
            used[sym] = spec.name
            port = plugin.port(sym)
            if not (port.is_control and port.is_input):
                raise ValueError(f"LV2 plugin {uri}: port {sym!r} is a {port.kind} port, not a control input")
            self._check_range(spec, port)
            if spec.fixed is not None:
                self._initial[port.index] = spec.fixed_plugin_value
            else:
                self._initial[port.index] = spec.to_plugin(spec.default_normalized)
                self._param_ports.append(port.index)
        self._trainable_idx = np.array(self._param_ports, dtype=np.intp)
        rounded = [
            plugin.ports[i].integer or plugin.ports[i].toggled or plugin.ports[i].enumeration for i in self._param_ports
        ]
        self._round_mask = np.array(rounded, dtype=bool)
        self._any_round = bool(self._round_mask.any())
        for i in np.flatnonzero([p.is_input and (p.integer or p.toggled or p.enumeration) for p in ports]):
            self._initial[i] = np.rint(self._initial[i])

        # --- audio, CV and atom buffers (alive as long as the effect)
        n = self.block_size
        self._in = np.zeros((len(self._audio_in), n), dtype=np.float32)
        self._out = np.zeros((len(self._audio_out), n), dtype=np.float32)
        self._cv = {p.index: np.zeros(n, dtype=np.float32) for p in ports if p.is_cv}
        self._atoms: dict[int, np.ndarray] = {
            p.index: np.zeros(ATOM_BUFFER_BYTES // 4, dtype=np.uint32) for p in ports if p.is_atom
        }
        self._atom_in = [a for i, a in self._atoms.items() if ports[i].is_input]
        self._atom_out = [a for i, a in self._atoms.items() if ports[i].is_output]
        self._urid_sequence = lv.map_uri(lv.URI.ATOM_SEQUENCE)
        self._urid_chunk = lv.map_uri(lv.URI.ATOM_CHUNK)
        lat = plugin.latency_port
        self._latency_index = lat.index if lat is not None else None
        self._mono_in = len(self._audio_in) != self.channels  # mono into a multi-input plugin
        self._mono_out = len(self._audio_out) != self.channels
        self._instance: lv.Instance | None = None

        # --- latency probe on a throw-away instance, then the real (fresh) one
        self._instance = self._new_instance()
        try:
            self._run_block()
            self.latency = self.reported_latency()
        finally:
            self._free_instance()
        self._instance = self._new_instance()

    # ------------------------------------------------------------------------------------------ setup

    def _check_channels(self, count: int, what: str) -> None:
        if count == self.channels or (self.channels == 1 and count >= 1):
            return
        raise ValueError(
            f"LV2 plugin {self.uri} has {count} audio {what}; a {self.channels}-channel effect can use it only "
            f"when the counts match (or, for a mono effect, through stereo_mode={STEREO_MODES})"
        )

    def _check_range(self, spec: ParamSpec, port: lv.PortInfo) -> None:
        lo, hi = spec.to_plugin(0.0), spec.to_plugin(1.0)
        if spec.fixed is not None:
            lo = hi = spec.fixed_plugin_value
        lo, hi = min(lo, hi), max(lo, hi)
        pmin, pmax = port.minimum, port.maximum
        if port.sample_rate:  # range given as a fraction of the sample rate
            pmin, pmax = pmin * self.sample_rate, pmax * self.sample_rate
        tol_lo = _RANGE_TOLERANCE * max(abs(pmin), 1e-9) if not math.isnan(pmin) else 0.0
        tol_hi = _RANGE_TOLERANCE * max(abs(pmax), 1e-9) if not math.isnan(pmax) else 0.0
        if (not math.isnan(pmin) and lo < pmin - tol_lo) or (not math.isnan(pmax) and hi > pmax + tol_hi):
            raise ValueError(
                f"LV2 plugin {self.uri}: parameter {spec.name!r} spans [{lo:g}, {hi:g}] (plugin units), outside "
                f"port {port.symbol!r}'s range [{pmin:g}, {pmax:g}]"
            )

    def _new_instance(self) -> lv.Instance:
        inst = self.plugin.instantiate(self.sample_rate, self.block_size)
        try:
            np.copyto(self._controls, self._initial)
            base = self._controls.ctypes.data
            for p in self.plugin.ports:
                if p.is_control:
                    addr = base + 4 * p.index
                elif p.is_audio:
                    if p.is_input:
                        addr = self._in[self._audio_in.index(p)].ctypes.data
                    else:
                        addr = self._out[self._audio_out.index(p)].ctypes.data
                elif p.is_cv:
                    addr = self._cv[p.index].ctypes.data
                elif p.is_atom:
                    addr = self._atoms[p.index].ctypes.data
                else:
                    addr = None  # connectionOptional port of an unsupported type
                inst.connect_port(p.index, addr)
            inst.activate()
        except BaseException:
            inst.free()
            raise
        return inst

    def _free_instance(self) -> None:
        inst, self._instance = self._instance, None
        if inst is not None:
            inst.free()

    # ------------------------------------------------------------------------------------------ Effect

    def reset(self) -> None:
        """A new instance (deactivate/activate would keep state in many plugins), with the initial values."""
        self._free_instance()
        self._in.fill(0.0)
        self._out.fill(0.0)
        self._instance = self._new_instance()

    def _set_values(self, values: np.ndarray) -> None:
        if self._any_round:
            values = np.where(self._round_mask, np.rint(values), values)
        self._controls[self._trainable_idx] = values

    def _render(self, audio: np.ndarray) -> np.ndarray:
        if audio.shape[1] != self.block_size:
            raise ValueError(
                f"LV2 effect {self.name!r} runs blocks of exactly {self.block_size} samples, got {audio.shape[1]}"
            )
        if self._mono_in:
            if self.stereo_mode == "dual_mono":
                self._in[:] = audio[0]
            else:
                self._in[0] = audio[0]
                self._in[1:] = 0.0
        else:
            np.copyto(self._in, audio)
        self._run_block()
        if self._mono_out:
            if self.stereo_mode == "dual_mono":
                return self._out.mean(axis=0, keepdims=True, dtype=np.float32)
            return self._out[:1].copy()
        return self._out.copy()

    def _run_block(self) -> None:
        inst = self._instance
        if inst is None:
            raise RuntimeError(f"LV2 effect {self.name!r} is closed")
        for buf in self._atom_in:  # an empty atom:Sequence (body: unit, pad)
            buf[0], buf[1], buf[2], buf[3] = 8, self._urid_sequence, 0, 0
        for buf in self._atom_out:  # capacity for the plugin to write into
            buf[0], buf[1] = ATOM_BUFFER_BYTES - 8, self._urid_chunk
        inst.run(self.block_size)

    def reported_latency(self) -> int:
        """The latency port's current value (after a ``run``), 0 for plugins without one."""
        if self._latency_index is None:
            return 0
        value = float(self._controls[self._latency_index])
        return int(round(value)) if math.isfinite(value) and value > 0 else 0

    def control_value(self, symbol: str) -> float:
        """The current value of any control port (inputs as last written, outputs as after the last run)."""
        return float(self._controls[self.plugin.port(symbol).index])

    def close(self) -> None:
        self._free_instance()

    def __del__(self) -> None:
        try:
            self._free_instance()
        except Exception:
            pass
