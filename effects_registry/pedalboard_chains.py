"""The paper's three chains rebuilt from pedalboard 0.9.26 built-ins (no plugin files needed).

These are the pedalboard equivalents of the Calf/LSP LV2 chains of the DeepAFx paper (``lv2_chains``; the
method's numbers are in ``afx_lightning.constants``): same parameter counts and names, same ranges where
pedalboard allows it, so a recipe can swap ``pb_mastering`` for the LV2 chain without touching the encoder. Everything is mono,
reports zero latency and is built as a graph of plain JUCE DSP blocks that pedalboard ships:

``multiband_compressor`` (21 params, the paper's "amp" chain, Calf MultibandCompressor layout)
    ``level_in`` -> 4-band split -> per band ``Compressor`` -> ``Gain(makeup)`` -> sum -> ``level_out``.
    pedalboard's Compressor has no knee, so the fourth per-band control is the *release* time (see
    :func:`multiband_compressor`).
``multiband_gate`` (17 params, the "breath" chain, Calf MultibandGate layout)
    The same split with a per-band ``NoiseGate`` given a reduction depth (``range``) that pedalboard's gate
    lacks: ``out = (1 - d) gate(band) + d band`` with ``d = 10^(range / 20)``.
``mastering`` (50 params: 16 + 33 + 1)
    ``compressor`` (the multiband compressor above, 16-parameter mastering layout) -> ``eq`` (32-band graphic
    EQ of PeakFilters at LSP graph_equalizer_x32's ISO 1/3-octave centres) -> ``limiter`` (``th``).
``graphic_eq`` (33 params)
    The mastering chain's 32-band EQ alone: driven frame by frame, a dynamic EQ (see :func:`graphic_eq`).
``octave_eq`` (8 params)
    8 octave-band PeakFilters: a per-frame spectral cut with few parameters (see :func:`octave_eq`).

Band split. pedalboard's Lowpass/HighpassFilter are 1st order, so a complementary split is exact: a band is
``LP(x; f)`` and the remainder is ``x - LP(x; f)``, built as ``Mix([passthrough, Chain([LP, Invert])])``
with a *second* LP instance of the same cutoff (both instances see the same input and cutoff, so their
outputs are bit-identical and the subtraction is exact). The remainder is split again at ``freq1``, then
``freq2``, so band 0 is the lows below ``freq0`` and band 3 the highs above ``freq2``; with the dynamics
idle the four bands sum back to the input (up to float32 rounding, ~1e-7). ``freq0`` and ``freq1`` ranges
overlap a little (as in Calf's, e.g. [10, 400] and [300, 3000]); the split still sums flat when they cross,
the middle band merely gets narrow. Cutoffs are clamped below ``0.45 * sample_rate`` on purpose, so the
gate's ``freq2`` (up to 10 kHz) stays valid at 22 050 Hz.

Units. Every dB parameter (thresholds, makeups, levels, EQ gains, limiter threshold) is a ``linear`` scale
written in dB (``unit="dB"``) because pedalboard takes dB directly; the gate's ``range`` uses
:attr:`Scale.DB` because its setter needs the linear depth ``d``. Frequencies, ratios and times are ``log``.
Calf's linear level ranges are converted: [0.015625, 2] = [-36, +6] dB, [0.015625, 4] = [-36, +12] dB, the
mastering makeup [1, 5] = [0, +14] dB, LSP's EQ gain [0.01585, 5] = [-36, +14] dB, g_out [0, 4] ~ [-36, +12] dB.

Defaults are idle (the chain is the identity at its defaults) for the compressors, EQ and limiter; the gate
defaults to a light, mostly inactive setting (-24 dB depth below -50 dB) so that every parameter is already
observable by SPSA at the default point.

Limiter. pedalboard's built-in ``Limiter`` (JUCE ``dsp::Limiter``) is not transparent at a 0 dB threshold:
it always runs a fixed 4:1 stage at -10 dBFS and adds about +3.75 dB of fixed makeup (a quiet sine comes
out 1.54x louder at ``threshold_db=0``), and ``BrickwallLimiter`` has look-ahead latency (it returns fewer
samples when streamed). The limiter here is therefore built the way LSP's limiter_mono behaves with its
default "gain boost" switch on: a brick-wall ``Compressor`` (ratio 1000, instant attack, 100 ms release)
at ``th`` followed by ``Gain(-th)``, so peaks are held at ``th`` and then brought back up to 0 dBFS, and
``th = 0 dB`` leaves signals below full scale untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pedalboard

from afx_lightning.effects.base import Chain
from afx_lightning.effects.params import ParamSpec, Scale
from afx_lightning.effects.pedalboard_backend import (
    PedalboardEffect,
    PedalboardGraph,
    Setter,
    attribute_setter,
    fan_out,
)

from .specs import db, log

#: Crossover cutoffs are kept below this fraction of the sample rate.
CUTOFF_LIMIT = 0.45
#: Graphic-EQ bands whose centre is at or above this fraction of Nyquist are inactive.
EQ_NYQUIST_LIMIT = 0.9
#: LSP graph_equalizer_x32 band centres (ISO 1/3-octave, 16 Hz ... 20 kHz).
GEQ32_CENTRES_HZ: tuple[float, ...] = (
    16.0,
    20.0,
    25.0,
    31.5,
    40.0,
    50.0,
    63.0,
    80.0,
    100.0,
    125.0,
    160.0,
    200.0,
    250.0,
    315.0,
    400.0,
    500.0,
    630.0,
    800.0,
    1000.0,
    1250.0,
    1600.0,
    2000.0,
    2500.0,
    3150.0,
    4000.0,
    5000.0,
    6300.0,
    8000.0,
    10000.0,
    12500.0,
    16000.0,
    20000.0,
)
#: Q of a 1/3-octave peak band: sqrt(2^(1/3)) / (2^(1/3) - 1).
THIRD_OCTAVE_Q = math.sqrt(2.0 ** (1.0 / 3.0)) / (2.0 ** (1.0 / 3.0) - 1.0)

Band = tuple[object, dict[str, Setter]]  # a band's plugin (graph) and its setters


# ---------------------------------------------------------------------------------------------- parameters


def _freq_params(ranges: Sequence[tuple[float, float]]) -> list[ParamSpec]:
    return [
        log(f"freq{k}", lo, hi, math.sqrt(lo * hi), "Hz", f"crossover between band {k} and band {k + 1}")
        for k, (lo, hi) in enumerate(ranges)
    ]


# ---------------------------------------------------------------------------------------------- band split


def _cutoff_setter(filters: Sequence[object], sample_rate: int) -> Setter:
    """One crossover frequency driving every filter of a split, clamped below ``CUTOFF_LIMIT * sample_rate``."""
    limit = CUTOFF_LIMIT * sample_rate
    set_all = fan_out(*[attribute_setter(f, "cutoff_frequency_hz") for f in filters])

    def set_value(value: float) -> None:
        set_all(min(float(value), limit))

    return set_value


def _band_split(bands: Sequence[Band], sample_rate: int, first: int = 0) -> Band:
    """``bands[0]`` gets LP(x; freq{first}); the rest ``x - LP(x; freq{first})`` is split recursively.

    Returns the summing graph and the setters of the bands plus ``freq{first}`` ... ``freq{first+len-2}``.
    """
    plugin, setters = bands[0]
    if len(bands) == 1:
        return plugin, dict(setters)
    lp_band = pedalboard.LowpassFilter(cutoff_frequency_hz=1000.0)
    lp_rest = pedalboard.LowpassFilter(cutoff_frequency_hz=1000.0)  # same cutoff, so the subtraction is exact
    rest_plugin, rest_setters = _band_split(bands[1:], sample_rate, first + 1)
    remainder = pedalboard.Mix([pedalboard.Chain([]), pedalboard.Chain([lp_rest, pedalboard.Invert()])])
    graph = pedalboard.Mix([pedalboard.Chain([lp_band, plugin]), pedalboard.Chain([remainder, rest_plugin])])
    all_setters = {**setters, **rest_setters, f"freq{first}": _cutoff_setter([lp_band, lp_rest], sample_rate)}
    return graph, all_setters


def _with_levels(core: Band, level_in: bool, level_out: bool) -> Band:
    plugin, setters = core
    setters = dict(setters)
    stages = [plugin]
    if level_in:
        gain_in = pedalboard.Gain(gain_db=0.0)
        stages.insert(0, gain_in)
        setters["level_in"] = attribute_setter(gain_in, "gain_db")
    if level_out:
        gain_out = pedalboard.Gain(gain_db=0.0)
        stages.append(gain_out)
        setters["level_out"] = attribute_setter(gain_out, "gain_db")
    return pedalboard.Chain(stages), setters


# ---------------------------------------------------------------------------------------------- band dynamics


@dataclass(frozen=True)
class _CompressorLayout:
    """Which per-band controls a multiband compressor exposes (shared by the amp and mastering chains)."""

    threshold: tuple[float, float] = (-60.0, 0.0)
    ratio: tuple[float, float] = (1.0, 20.0)
    makeup: tuple[float, float] = (0.0, 36.0)
    release: tuple[float, float] | None = (1.0, 1000.0)  # None: release is fixed
    attack_ms: float = 1.0
    fixed_release_ms: float = 100.0
    freqs: tuple[tuple[float, float], ...] = ((10.0, 400.0), (300.0, 3000.0), (3000.0, 8000.0))
    level_in: tuple[float, float] | None = (-36.0, 6.0)
    level_out: tuple[float, float] | None = (-36.0, 6.0)

    def params(self) -> list[ParamSpec]:
        specs: list[ParamSpec] = []
        specs += [db(f"threshold{b}", *self.threshold, 0.0, f"band {b} compressor threshold") for b in range(4)]
        specs += [log(f"ratio{b}", *self.ratio, 1.0, ":1", f"band {b} compression ratio") for b in range(4)]
        specs += [db(f"makeup{b}", *self.makeup, 0.0, f"band {b} makeup gain") for b in range(4)]
        if self.release is not None:
            specs += [
                log(f"release{b}", *self.release, 100.0, "ms", f"band {b} release (gain recovery) time")
                for b in range(4)
            ]
        specs += _freq_params(self.freqs)
        if self.level_in is not None:
            specs.append(db("level_in", *self.level_in, 0.0, "input level"))
        if self.level_out is not None:
            specs.append(db("level_out", *self.level_out, 0.0, "output level"))
        # fixed controls: applied, not predicted
        specs += [
            log(f"attack{b}", 0.01, 1000.0, self.attack_ms, "ms", f"band {b} attack (fixed)", fixed=self.attack_ms)
            for b in range(4)
        ]
        if self.release is None:
            specs += [
                log(
                    f"release{b}",
                    0.01,
                    5000.0,
                    self.fixed_release_ms,
                    "ms",
                    f"band {b} release (fixed)",
                    fixed=self.fixed_release_ms,
                )
                for b in range(4)
            ]
        return specs

    def build(self, sample_rate: int) -> PedalboardGraph:
        bands: list[Band] = []
        for b in range(4):
            comp = pedalboard.Compressor(
                threshold_db=0.0, ratio=1.0, attack_ms=self.attack_ms, release_ms=self.fixed_release_ms
            )
            makeup = pedalboard.Gain(gain_db=0.0)
            bands.append(
                (
                    pedalboard.Chain([comp, makeup]),
                    {
                        f"threshold{b}": attribute_setter(comp, "threshold_db"),
                        f"ratio{b}": attribute_setter(comp, "ratio"),
                        f"makeup{b}": attribute_setter(makeup, "gain_db"),
                        f"attack{b}": attribute_setter(comp, "attack_ms"),
                        f"release{b}": attribute_setter(comp, "release_ms"),
                    },
                )
            )
        plugin, setters = _with_levels(
            _band_split(bands, sample_rate), self.level_in is not None, self.level_out is not None
        )
        return PedalboardGraph(plugin, setters)


def _gate_band(b: int) -> Band:
    """One gate band with a reduction depth: ``(1 - d) gate(x) + d x``, ``d = 10^(range / 20)``."""
    gate = pedalboard.NoiseGate(threshold_db=-100.0, ratio=1.0, attack_ms=1.0, release_ms=20.0)
    wet = pedalboard.Gain(gain_db=-100.0)
    dry = pedalboard.Gain(gain_db=0.0)

    def set_depth(d: float) -> None:
        d = min(max(float(d), 0.0), 1.0)
        # JUCE maps gains at or below -100 dB to exactly 0, so d -> 1 is an exact bypass (no log(0)).
        wet.gain_db = 20.0 * math.log10(1.0 - d) if 1.0 - d > 1e-5 else -100.0
        dry.gain_db = 20.0 * math.log10(d) if d > 1e-5 else -100.0

    return pedalboard.Mix([pedalboard.Chain([gate, wet]), dry]), {
        f"range{b}": set_depth,
        f"threshold{b}": attribute_setter(gate, "threshold_db"),
        f"ratio{b}": attribute_setter(gate, "ratio"),
        f"attack{b}": attribute_setter(gate, "attack_ms"),
        f"release{b}": attribute_setter(gate, "release_ms"),
    }


# ---------------------------------------------------------------------------------------------- chains

AMP_LAYOUT = _CompressorLayout()
MASTERING_COMPRESSOR_LAYOUT = _CompressorLayout(
    makeup=(0.0, 14.0),  # Calf makeup [1, 5] linear
    release=None,
    freqs=((10.0, 400.0), (400.0, 3000.0), (3000.0, 10000.0)),
    level_in=(-36.0, 12.0),  # Calf level_in [0.015625, 4] linear
    level_out=None,
)


def _compressor_effect(name: str, layout: _CompressorLayout, sample_rate: int, block_size: int) -> PedalboardEffect:
    return PedalboardEffect(name, lambda: layout.build(sample_rate), layout.params(), sample_rate, block_size)


def multiband_compressor(sample_rate: int, block_size: int) -> Chain:
    """4-band compressor, 21 parameters, in the layout of the paper's Calf MultibandCompressor ("amp").

    Trainable: ``threshold0..3`` [-60, 0] dB, ``ratio0..3`` [1, 20] (log), ``makeup0..3`` [0, 36] dB,
    ``release0..3`` [1, 1000] ms (log), ``freq0`` [10, 400] Hz, ``freq1`` [300, 3000] Hz, ``freq2`` [3000, 8000]
    Hz, ``level_in`` / ``level_out`` [-36, +6] dB. Fixed: ``attack0..3`` = 1 ms.

    Calf's fourth per-band control is the knee; pedalboard's Compressor has a hard knee only, so the fourth
    control is the release time instead. For the tube-amplifier task the useful behaviour of a compressor is
    how its gain recovers after a transient (the level-dependent "hysteresis" of the gain, which gives the
    sag and bloom of a driven amp and, at very short releases, waveshaper-like distortion); release shapes
    exactly that, while a knee only rounds the static curve, which ratio and threshold already approximate.
    Attack is fixed short (1 ms), matching the paper's choice of the fastest ballistics for a 46 ms control rate.
    Defaults are idle: threshold 0 dB, ratio 1, makeup 0 dB, levels 0 dB, release 100 ms.
    """
    return Chain(
        [_compressor_effect("multiband_compressor", AMP_LAYOUT, sample_rate, block_size)], name="pb_mb_compressor"
    )


def multiband_gate(sample_rate: int, block_size: int) -> Chain:
    """4-band gate with reduction depth, 17 parameters, in the layout of Calf MultibandGate ("breath").

    Trainable: ``range0..3`` [-60, 0] dB (maximum attenuation when closed; 0 dB = band bypassed),
    ``threshold0..3`` [-60, 0] dB, ``ratio0..3`` [1, 20] (log; the expansion ratio below threshold),
    ``freq0`` [10, 300] Hz, ``freq1`` [300, 3000] Hz, ``freq2`` [3000, 10000] Hz (clamped below
    0.45 * sample_rate), ``level_in`` / ``level_out`` [-36, +6] dB. Fixed: attack 1 ms, release 20 ms per band.
    Defaults: range -24 dB, threshold -50 dB, ratio 2 (a light gate on near-silence), levels 0 dB.
    """
    params: list[ParamSpec] = []
    params += [
        ParamSpec(
            f"range{b}",
            -60.0,
            0.0,
            -24.0,
            Scale.DB,
            unit="dB",
            description=f"band {b} reduction depth (attenuation when the gate is closed)",
        )
        for b in range(4)
    ]
    params += [db(f"threshold{b}", -60.0, 0.0, -50.0, f"band {b} gate threshold") for b in range(4)]
    params += [log(f"ratio{b}", 1.0, 20.0, 2.0, ":1", f"band {b} gate (expansion) ratio") for b in range(4)]
    params += _freq_params(((10.0, 300.0), (300.0, 3000.0), (3000.0, 10000.0)))
    params += [db("level_in", -36.0, 6.0, 0.0, "input level"), db("level_out", -36.0, 6.0, 0.0, "output level")]
    params += [log(f"attack{b}", 0.01, 1000.0, 1.0, "ms", f"band {b} attack (fixed)", fixed=1.0) for b in range(4)]
    params += [log(f"release{b}", 0.01, 5000.0, 20.0, "ms", f"band {b} release (fixed)", fixed=20.0) for b in range(4)]

    def build() -> PedalboardGraph:
        split = _band_split([_gate_band(b) for b in range(4)], sample_rate)
        return PedalboardGraph(*_with_levels(split, True, True))

    effect = PedalboardEffect("multiband_gate", build, params, sample_rate, block_size)
    return Chain([effect], name="pb_mb_gate")


@dataclass(frozen=True)
class _GraphicEqLayout:
    """A bank of fixed-frequency PeakFilters with trainable gains ``g_0..``, optionally an output gain ``g_out``."""

    centres_hz: tuple[float, ...] = GEQ32_CENTRES_HZ
    q: float = THIRD_OCTAVE_Q
    gain: tuple[float, float] = (-36.0, 14.0)  # LSP's EQ gain [0.01585, 5] linear
    output_gain: bool = True

    def effect(self, name: str, sample_rate: int, block_size: int) -> PedalboardEffect:
        """Bands whose centre is at or above ``EQ_NYQUIST_LIMIT`` x Nyquist stay in the layout but do nothing."""
        active = [f < EQ_NYQUIST_LIMIT * sample_rate / 2.0 for f in self.centres_hz]
        params: list[ParamSpec] = []
        for k, (f, on) in enumerate(zip(self.centres_hz, active, strict=True)):
            note = (
                ""
                if on
                else (
                    f"; inactive at {sample_rate} Hz (centre >= {EQ_NYQUIST_LIMIT:g} x Nyquist): kept in the layout, "
                    "its value has no effect"
                )
            )
            params.append(db(f"g_{k}", *self.gain, 0.0, f"gain of the {f:g} Hz band{note}"))
        if self.output_gain:
            params.append(db("g_out", -36.0, 12.0, 0.0, "output gain"))

        def noop(value: float) -> None:
            pass

        def build() -> PedalboardGraph:
            stages: list[object] = []
            setters: dict[str, Setter] = {}
            for k, (f, on) in enumerate(zip(self.centres_hz, active, strict=True)):
                if on:
                    peak = pedalboard.PeakFilter(cutoff_frequency_hz=f, gain_db=0.0, q=self.q)
                    stages.append(peak)
                    setters[f"g_{k}"] = attribute_setter(peak, "gain_db")
                else:
                    setters[f"g_{k}"] = noop
            if self.output_gain:
                out = pedalboard.Gain(gain_db=0.0)
                stages.append(out)
                setters["g_out"] = attribute_setter(out, "gain_db")
            return PedalboardGraph(pedalboard.Chain(stages), setters)

        return PedalboardEffect(name, build, params, sample_rate, block_size)


#: the mastering chain's EQ: 32 bands at LSP graph_equalizer_x32's centres + output gain
GEQ32_LAYOUT = _GraphicEqLayout()
#: 8 octave bands, 63 Hz ... 8 kHz (Q = sqrt(2)), no output gain: a per-frame spectral cut with few parameters
OCTAVE_LAYOUT = _GraphicEqLayout(
    centres_hz=(63.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0),
    q=math.sqrt(2.0),
    gain=(-36.0, 12.0),
    output_gain=False,
)


def _graphic_eq(sample_rate: int, block_size: int) -> PedalboardEffect:
    """32 PeakFilters (1/3-octave Q) at LSP's centres + output gain; bands near Nyquist are inactive."""
    return GEQ32_LAYOUT.effect("eq", sample_rate, block_size)


def _limiter(sample_rate: int, block_size: int) -> PedalboardEffect:
    """Brick-wall limiter at ``th`` with LSP's "gain boost": peaks held at th, then raised by -th."""
    params = [
        db("th", -48.0, 0.0, 0.0, "limiter threshold (output is boosted by -th, as LSP's gain boost)"),
        log("release", 0.01, 5000.0, 100.0, "ms", "limiter release (fixed)", fixed=100.0),
    ]

    def build() -> PedalboardGraph:
        comp = pedalboard.Compressor(threshold_db=0.0, ratio=1000.0, attack_ms=0.001, release_ms=100.0)
        boost = pedalboard.Gain(gain_db=0.0)

        def set_th(value: float) -> None:
            comp.threshold_db = value
            boost.gain_db = -value

        return PedalboardGraph(
            pedalboard.Chain([comp, boost]),
            {"th": set_th, "release": attribute_setter(comp, "release_ms")},
        )

    return PedalboardEffect("limiter", build, params, sample_rate, block_size)


def mastering(sample_rate: int, block_size: int) -> Chain:
    """Multiband compressor (16) -> 32-band graphic EQ (33) -> limiter (1): the paper's 50-parameter chain.

    ``compressor``: threshold0..3 [-60, 0] dB, ratio0..3 [1, 20], makeup0..3 [0, 14] dB, freq0 [10, 400],
    freq1 [400, 3000], freq2 [3000, 10000] Hz, level_in [-36, +12] dB (fixed attack 1 ms, release 100 ms).
    ``eq``: g_0..g_31 [-36, +14] dB at 16 Hz ... 20 kHz, g_out [-36, +12] dB; bands at or above 0.9 x Nyquist
    stay in the layout but do nothing. ``limiter``: th [-48, 0] dB. Parameter names are qualified by effect:
    ``compressor.threshold0``, ``eq.g_0``, ``limiter.th``.
    """
    return Chain(
        [
            _compressor_effect("compressor", MASTERING_COMPRESSOR_LAYOUT, sample_rate, block_size),
            _graphic_eq(sample_rate, block_size),
            _limiter(sample_rate, block_size),
        ],
        name="pb_mastering",
    )


def graphic_eq(sample_rate: int, block_size: int) -> Chain:
    """The 32-band graphic EQ alone (33 parameters): driven frame by frame, a dynamic EQ.

    ``g_0..g_31`` [-36, +14] dB at LSP's ISO 1/3-octave centres (16 Hz ... 20 kHz; bands at or above 0.9 x
    Nyquist stay in the layout and do nothing), ``g_out`` [-36, +12] dB. Idle (the identity) at its defaults.
    Why a chain of its own: removing events from a recording (breaths, clicks) without touching the room tone
    around them is a per-frame *spectral* edit; four gate bands are too coarse for it (measured on the fidelity
    benchmark's breath set: even per-frame, per-band energy matching with 4 bands leaves d_MFCC at identity's,
    with 1/3-octave bands it drops to a quarter).
    """
    return Chain([_graphic_eq(sample_rate, block_size)], name="pb_graphic_eq")


def octave_eq(sample_rate: int, block_size: int) -> Chain:
    """8 octave-band PeakFilters (63 Hz ... 8 kHz, Q = sqrt(2)), gains ``g_0..g_7`` [-36, +12] dB: 8 parameters.

    For event removal: driven frame by frame, it can cut an event's spectral shape out of a pause while the room
    tone around it stays, which a gate cannot (it attenuates the room tone with the event). Octaves are the
    coarsest bands that can (``benchmarks/band_ceiling.py`` on the breath set: ideal per-frame octave cuts take
    d_MFCC 32% under identity's, 4 gate bands none), with a quarter of the 32-band EQ's parameters for SPSA to
    estimate (README, "Real-audio fidelity", for what training reached with it). Idle (the identity) at its
    defaults.
    """
    return Chain([OCTAVE_LAYOUT.effect("octave_eq", sample_rate, block_size)], name="pb_octave_eq")
