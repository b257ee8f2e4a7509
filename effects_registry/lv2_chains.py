"""The DeepAFx paper's three chains on the real LV2 plugins (Calf, LSP), parameter for parameter.

Ports are named by symbol (checked against the installed plugins: Calf 0.90.3, LSP 1.2.5); the trained ranges
and the fixed values are those of the official DeepAFx code (``config_distortion.py``, ``config_nonspeech.py``,
``config_mastering.py``), in the plugins' own units:

- Calf gains are *linear amplitudes* (no dB): ``threshold*`` [0.000977, 1] (-60 ... 0 dBFS), ``makeup*``
  [1, 64], ``knee*`` [1, 8] (knee width as a gain ratio), ``range*`` (gate reduction) [1.585e-5, 1],
  ``level_in`` / ``level_out`` [0.015625, 64]; ``ratio*`` [1, 20]; ``freq*`` in Hz; ``attack*`` / ``release*``
  in ms; ``bypass*`` toggles (Calf bands default to *bypassed*, so the chains pin ``bypass0..3 = 0``).
- LSP gains are linear too: ``g_0 .. g_31`` [0.01585, 63.1] (-36 ... +36 dB), ``g_out`` [0, 10], limiter
  ``th`` [0.003981, 1] (-48 ... 0 dB); ``slope`` is an enumeration (4 = BT96); ``boost`` and ``alr`` toggles.

Scales: every positive gain, ratio and frequency range is ``log`` (an even spread in dB / octaves: what the
plugins mark ``pprops:logarithmic`` for their frequencies and LSP for its gains, and what Calf's GUI shows in dB
for its gains); ``g_out`` [0, 4] starts at 0 and is spread linearly. Defaults are the plugins' own defaults
(the official code pretrains to them), e.g. Calf threshold 0.25 (-12 dBFS), ratio 2, knee 2.83, makeup 1 (the
gate keeps its default makeup of 2, which is not trained).

Fixed values: ``bypass0..3 = 0`` and ``attack0..3 = release0..3 = 0.01`` ms (the plugins' minimum: the paper's
"attack and release set to their minimum" for a 46 ms control rate); EQ ``slope = 4``; the limiter's
``boost = 0`` (gain boost off: the output is not raised by -th) and ``alr = 0`` (automatic level regulation off),
so ``th`` is a plain ceiling. Both limiter ports were added to LSP after the paper's version; with them off the
limiter holds peaks at ``th``.

The Calf plugins are stereo (2 in / 2 out); these chains are mono and use ``stereo_mode="dual_mono"`` (mono into
both inputs, outputs averaged). The official code fed the *left* input only and read the left output
(``stereo_mode="left"`` of :class:`LV2Effect`); for Calf's multiband compressor and gate the two give identical
output (tested: a silent right channel does not change the left channel's gain), so the paper's behaviour is kept.

At 22 050 Hz (measured, white noise, one band at +14 dB): ``g_29`` (12.5 kHz) and ``g_30`` (16 kHz) change
nothing, ``g_31`` (20 kHz) still lifts the top octave a little (about +1.8 dB overall), ``g_28`` (10 kHz) works
normally. All 33 stay in the layout (the paper's parameter count).
Latency: Calf reports none; LSP's EQ reports 0 in IIR mode; the limiter reports its look-ahead (5 ms: 110 samples
at 22 050 Hz), which the chain reports as its latency.
"""

from __future__ import annotations

from collections.abc import Sequence

from afx_lightning.effects.base import Chain
from afx_lightning.effects.lv2 import LV2Effect
from afx_lightning.effects.params import ParamSpec, Scale

from .specs import fixed, log

CALF_MB_COMPRESSOR = "http://calf.sourceforge.net/plugins/MultibandCompressor"
CALF_MB_GATE = "http://calf.sourceforge.net/plugins/MultibandGate"
LSP_GEQ32_MONO = "http://lsp-plug.in/plugins/lv2/graph_equalizer_x32_mono"
LSP_LIMITER_MONO = "http://lsp-plug.in/plugins/lv2/limiter_mono"
CALF_PACKAGE = "calf-plugins"
LSP_PACKAGE = "lsp-plugins-lv2"

#: Calf threshold minimum (2^-10 = -60 dBFS) as its TTL states it.
CALF_THRESHOLD_MIN = 0.000976563
#: Calf gate reduction minimum (-96 dB).
CALF_RANGE_MIN = 1.5849e-05
#: LSP limiter threshold minimum (-48 dB).
LSP_TH_MIN = 0.003981
#: Fixed Calf ballistics (ms): the ports' minimum, as in the official code.
FAST_MS = 0.01


def _calf_fixed() -> list[ParamSpec]:
    """bypass0..3 = 0 (Calf bands default to bypassed), attack/release0..3 = 0.01 ms."""
    specs: list[ParamSpec] = []
    specs += [fixed(f"bypass{b}", 0.0, 0.0, 1.0, "", f"band {b} bypass (fixed off)") for b in range(4)]
    specs += [fixed(f"attack{b}", FAST_MS, 0.01, 2000.0, "ms", f"band {b} attack (fixed, minimum)") for b in range(4)]
    specs += [fixed(f"release{b}", FAST_MS, 0.01, 2000.0, "ms", f"band {b} release (fixed, minimum)") for b in range(4)]
    return specs


def _freqs(ranges: Sequence[tuple[float, float]], defaults=(120.0, 1000.0, 6000.0)) -> list[ParamSpec]:
    return [
        log(f"freq{k}", lo, hi, d, "Hz", f"crossover between band {k} and band {k + 1}")
        for k, ((lo, hi), d) in enumerate(zip(ranges, defaults, strict=True))
    ]


def _calf_compressor_params(
    makeup: tuple[float, float],
    knee: bool,
    freqs: Sequence[tuple[float, float]],
    level_in: tuple[float, float],
    level_out: tuple[float, float] | None,
) -> list[ParamSpec]:
    specs: list[ParamSpec] = []
    specs += [
        log(
            f"threshold{b}",
            CALF_THRESHOLD_MIN,
            1.0,
            0.25,
            "gain",
            f"band {b} threshold (linear amplitude, -60 ... 0 dBFS)",
        )
        for b in range(4)
    ]
    specs += [log(f"ratio{b}", 1.0, 20.0, 2.0, ":1", f"band {b} compression ratio") for b in range(4)]
    specs += [log(f"makeup{b}", *makeup, 1.0, "gain", f"band {b} makeup gain (linear)") for b in range(4)]
    if knee:
        specs += [
            log(f"knee{b}", 1.0, 8.0, 2.82843, "gain", f"band {b} knee width (linear, 0 ... 18 dB)") for b in range(4)
        ]
    specs += _freqs(freqs)
    specs.append(log("level_in", *level_in, 1.0, "gain", "input gain (linear)"))
    if level_out is not None:
        specs.append(log("level_out", *level_out, 1.0, "gain", "output gain (linear)"))
    return specs + _calf_fixed()


def _calf_effect(uri: str, name: str, params: list[ParamSpec], sample_rate: int, block_size: int) -> LV2Effect:
    return LV2Effect(
        uri, name, sample_rate, block_size, params, channels=1, stereo_mode="dual_mono", install_hint=CALF_PACKAGE
    )


def calf_mb_compressor(sample_rate: int, block_size: int) -> Chain:
    """The paper's tube-amplifier chain: Calf Multiband Compressor, 21 parameters.

    ``threshold0..3`` [0.000977, 1], ``ratio0..3`` [1, 20], ``makeup0..3`` [1, 64], ``knee0..3`` [1, 8],
    ``freq0`` [10, 400] Hz, ``freq1`` [300, 3000] Hz, ``freq2`` [3000, 8000] Hz, ``level_in`` / ``level_out``
    [0.015625, 2] (all log). Fixed: ``bypass0..3 = 0``, ``attack0..3 = release0..3 = 0.01`` ms.
    """
    params = _calf_compressor_params(
        makeup=(1.0, 64.0),
        knee=True,
        freqs=((10.0, 400.0), (300.0, 3000.0), (3000.0, 8000.0)),
        level_in=(0.015625, 2.0),
        level_out=(0.015625, 2.0),
    )
    return Chain(
        [_calf_effect(CALF_MB_COMPRESSOR, "calf_mb_compressor", params, sample_rate, block_size)],
        name="calf_mb_compressor",
    )


def calf_mb_gate(sample_rate: int, block_size: int) -> Chain:
    """The paper's breath-removal chain: Calf Multiband Gate, 17 parameters.

    ``range0..3`` [1.585e-5, 1] (reduction when closed, -96 ... 0 dB), ``threshold0..3`` [0.000977, 1],
    ``ratio0..3`` [1, 20], ``freq0`` [10, 300] Hz, ``freq1`` [300, 3000] Hz, ``freq2`` [3000, 10000] Hz,
    ``level_in`` / ``level_out`` [0.015625, 2] (all log). Fixed: ``bypass0..3 = 0``,
    ``attack0..3 = release0..3 = 0.01`` ms.
    """
    params: list[ParamSpec] = []
    params += [
        log(
            f"range{b}",
            CALF_RANGE_MIN,
            1.0,
            0.06125,
            "gain",
            f"band {b} reduction when the gate is closed (linear, -96 ... 0 dB)",
        )
        for b in range(4)
    ]
    params += [
        log(f"threshold{b}", CALF_THRESHOLD_MIN, 1.0, 0.25, "gain", f"band {b} gate threshold (linear amplitude)")
        for b in range(4)
    ]
    params += [log(f"ratio{b}", 1.0, 20.0, 2.0, ":1", f"band {b} expansion ratio") for b in range(4)]
    params += _freqs(((10.0, 300.0), (300.0, 3000.0), (3000.0, 10000.0)))
    params.append(log("level_in", 0.015625, 2.0, 1.0, "gain", "input gain (linear)"))
    params.append(log("level_out", 0.015625, 2.0, 1.0, "gain", "output gain (linear)"))
    params += _calf_fixed()
    return Chain([_calf_effect(CALF_MB_GATE, "calf_mb_gate", params, sample_rate, block_size)], name="calf_mb_gate")


def lsp_graphic_eq(sample_rate: int, block_size: int, name: str = "eq") -> LV2Effect:
    """LSP graph_equalizer_x32_mono: ``g_0 .. g_31`` [0.01585, 5] (log), ``g_out`` [0, 4] (linear); slope = 4."""
    params = [log(f"g_{k}", 0.01585, 5.0, 1.0, "gain", f"band {k} gain (linear)") for k in range(32)]
    params.append(ParamSpec("g_out", 0.0, 4.0, 1.0, Scale.LINEAR, unit="gain", description="output gain (linear)"))
    params.append(fixed("slope", 4.0, 0.0, 5.0, "", "filter slope (fixed: 4 = BT96)"))
    return LV2Effect(LSP_GEQ32_MONO, name, sample_rate, block_size, params, install_hint=LSP_PACKAGE)


def lsp_limiter(sample_rate: int, block_size: int, name: str = "limiter") -> LV2Effect:
    """LSP limiter_mono: ``th`` [0.003981, 1] (log, -48 ... 0 dB); gain boost and level regulation off."""
    params = [
        log("th", LSP_TH_MIN, 1.0, 1.0, "gain", "limiter threshold (linear, -48 ... 0 dB)"),
        fixed("boost", 0.0, 0.0, 1.0, "", "gain boost (fixed off)"),
        fixed("alr", 0.0, 0.0, 1.0, "", "automatic level regulation (fixed off)"),
    ]
    return LV2Effect(LSP_LIMITER_MONO, name, sample_rate, block_size, params, install_hint=LSP_PACKAGE)


def lv2_mastering(sample_rate: int, block_size: int) -> Chain:
    """The paper's mastering chain, 50 parameters: Calf MB compressor (16) -> LSP graphic EQ (33) -> LSP limiter (1).

    ``compressor``: ``threshold0..3`` [0.000977, 1], ``ratio0..3`` [1, 20], ``makeup0..3`` [1, 5],
    ``freq0`` [10, 400], ``freq1`` [400, 3000], ``freq2`` [3000, 10000] Hz, ``level_in`` [0.015625, 4];
    ``eq``: ``g_0..g_31`` [0.01585, 5], ``g_out`` [0, 4]; ``limiter``: ``th`` [0.003981, 1]. Parameter names
    are qualified by effect (``compressor.threshold0``, ``eq.g_0``, ``limiter.th``), as in ``pb_mastering``.
    """
    params = _calf_compressor_params(
        makeup=(1.0, 5.0),
        knee=False,
        freqs=((10.0, 400.0), (400.0, 3000.0), (3000.0, 10000.0)),
        level_in=(0.015625, 4.0),
        level_out=None,
    )
    effects = []
    try:
        effects.append(_calf_effect(CALF_MB_COMPRESSOR, "compressor", params, sample_rate, block_size))
        effects.append(lsp_graphic_eq(sample_rate, block_size))
        effects.append(lsp_limiter(sample_rate, block_size))
    except BaseException:
        for e in effects:
            e.close()
        raise
    return Chain(effects, name="lv2_mastering")
