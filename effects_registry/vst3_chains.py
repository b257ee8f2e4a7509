"""Chains over real VST3 plugins: Debian's ``zam-plugins`` bundles in ``/usr/lib/vst3``, hosted by pedalboard.

Parameters are in the plugins' own units (dB, Hz, ms, ratio); they reach the plugins through the probed
``raw_value`` mapping of :func:`~afx_lightning.effects.pedalboard_backend.plugin_file_effect`. The pedalboard
parameter keys are listed by ``pedalboard.load_plugin(path).parameters``; each chain maps its names onto them in
one table (``*_KEYS``), so names follow the other mastering chains (``compressor.threshold0``, ``eq.g_0``,
``limiter.th``) instead of the plugins' keys.

``zam_mastering`` (3-band compressor 12 -> graphic EQ 30 -> maximiser 3 = 45 parameters)
    ``compressor`` = ZaMultiCompX2: ``threshold0..2`` [-60, 0] dB, ``ratio0..2`` [1, 20] (log),
    ``makeup0..2`` [0, 14] dB (the paper's mastering makeup range, [1, 5] linear), ``freq0`` [20, 1400] Hz and
    ``freq1`` [1400, min(10 000, 0.45 fs)] Hz (log; the plugin's own split of its crossover ranges), and
    ``level_out`` [-12, 12] dB (the plugin's "Master Trim"). ZaMultiCompX2 has no input gain, so there is no
    ``level_in``: thresholds and makeups already span what an input gain would do to the band compressors.
    Fixed: ``enable0..2 = 1`` (the plugin's "ZamComp N ON" toggles default to *off*, i.e. bands bypassed, as
    Calf's do), ``knee0..2 = 0`` dB, ``attack0..2 = 10`` ms, ``release0..2 = 80`` ms (the plugin's defaults,
    mastering ballistics).
    ``eq`` = ZamGEQ31: despite its name the plugin exposes 29 bands, 1/3 octave apart; ``g_0 .. g_28``
    [-12, 12] dB at 32 Hz ... 20.8 kHz (its labels; the plugin's own range) and ``g_out`` [-12, 12] dB (its
    "Master Gain", plugin range +-30). ZamGEQ31 skips a band whose upper edge passes 0.95 x Nyquist, so at
    22 050 Hz ``g_25 .. g_28`` (10, 12.7, 16, 20.8 kHz) do nothing (measured); they stay in the layout (a fixed
    parameter count across sample rates) and their description says so.
    ``limiter`` = ZaMaximX2: ``th`` [-30, 0] dB (threshold: the input is driven by -th into a ceiling-limited
    look-ahead limiter), ``ceiling`` [-12, 0] dB (output ceiling), ``release`` [1, 100] ms (log).
``zam_compressor`` (6 parameters): ZamComp, ``threshold`` [-60, 0] dB, ``ratio`` [1, 20] (log), ``knee``
    [0, 8] dB, ``makeup`` [0, 30] dB, ``attack`` [0.1, 100] ms (log), ``release`` [1, 500] ms (log); fixed
    ``slew = 1`` and ``sidechain = 0`` (internal).

Defaults are the plugins' own defaults (the pre-training target), except ``compressor.freq1``: its plugin
default is the bottom of its range (1400 Hz), where a sigmoid output cannot sit, so it starts at 3000 Hz.

Channels. ZaMultiCompX2 and ZaMaximX2 are stereo-only (pedalboard refuses a mono bus); the chains are mono, so
those two run "dual mono" (the block goes to both inputs, the outputs are averaged; both plugins link their
channels, so the two outputs are identical). ZamGEQ31 and ZamComp are mono.

Latency. ZaMaximX2 delays by a fixed 480-sample look-ahead (its ``MAX_DELAY``; measured with an impulse at
22 050, 44 100 and 48 000 Hz: 480 at each). The chain takes the value the plugin reports once prepared at the
chain's rate (so a future build with another look-ahead is followed), and ``tests/test_vst3.py`` checks it
against the streamed impulse response. pedalboard withholds those samples at the start of a stream; the
backend emits them as leading zeros so every block keeps its length and the stream is delayed by exactly the
declared latency. The other three plugins report and show no delay.

Cost: ``python benchmarks/fx_layer.py --chain zam_mastering --no-per-slot`` measures a chain's plugin CPU per
block (``plugin_cpu_per_render_us``) and its construction (``plugin_build_s``). ZamGEQ31 skips 0 dB bands, so a
flat EQ costs a fraction of one with any gain off 0 dB; ``zam_mastering`` costs several times ``lv2_mastering``
per block. Building (or resetting: the backend rebuilds) a VST3 chain is mostly VST3 loading and pedalboard's
first parameter listing, and every clip start pays it for the slot's three instances.
Moving a crossover re-designs the plugin's LR4 filters: a small transient (about the size of the difference
between the two settings) that dies out within ~500 samples of the block start, no click.
"""

from __future__ import annotations

from pathlib import Path

from afx_lightning.effects.base import Chain, PluginUnavailable
from afx_lightning.effects.params import ParamSpec
from afx_lightning.effects.pedalboard_backend import PedalboardEffect, plugin_file_effect

from .specs import db, fixed, log

VST3_DIR = Path("/usr/lib/vst3")
ZAM_PACKAGE = "zam-plugins"
ZAMULTICOMPX2 = VST3_DIR / "ZaMultiCompX2.vst3"
ZAMGEQ31 = VST3_DIR / "ZamGEQ31.vst3"
ZAMAXIMX2 = VST3_DIR / "ZaMaximX2.vst3"
ZAMCOMP = VST3_DIR / "ZamComp.vst3"

#: ZamGEQ31 turns a band off when its upper edge (centre x 2^(1/6)) passes 0.95 x Nyquist.
GEQ_EDGE_LIMIT = 0.95
#: Highest crossover, as a fraction of the sample rate.
CROSSOVER_LIMIT = 0.45


def require(path: Path) -> Path:
    """The bundle path, or :class:`PluginUnavailable` naming the Debian package to install."""
    if not path.exists():
        raise PluginUnavailable(
            f"VST3 plugin {path} is not installed (Debian/Ubuntu: sudo apt-get install {ZAM_PACKAGE})"
        )
    return path


# ---------------------------------------------------------------------------------------------- ZaMultiCompX2

#: our name -> ZaMultiCompX2 key (bands 0..2 are the plugin's 1..3)
MULTICOMP_KEYS: dict[str, str] = {
    **{f"threshold{b}": f"threshold_{b + 1}_db" for b in range(3)},
    **{f"ratio{b}": f"ratio{b + 1}" for b in range(3)},
    **{f"makeup{b}": f"makeup_{b + 1}_db" for b in range(3)},
    "freq0": "crossover_freq_1_hz",
    "freq1": "crossover_freq_2_hz",
    "level_out": "master_trim_db",
    **{f"enable{b}": f"zamcomp_{b + 1}_on" for b in range(3)},
    **{f"knee{b}": f"knee{b + 1}_db" for b in range(3)},
    **{f"attack{b}": f"attack{b + 1}_ms" for b in range(3)},
    **{f"release{b}": f"release{b + 1}_ms" for b in range(3)},
}


def multicomp_params(sample_rate: int) -> list[ParamSpec]:
    thresholds = (-20.0, -18.0, -16.0)  # the plugin's defaults
    freq1_max = min(10000.0, CROSSOVER_LIMIT * sample_rate)
    specs: list[ParamSpec] = []
    specs += [db(f"threshold{b}", -60.0, 0.0, thresholds[b], f"band {b} threshold") for b in range(3)]
    specs += [log(f"ratio{b}", 1.0, 20.0, 4.0, ":1", f"band {b} compression ratio") for b in range(3)]
    specs += [db(f"makeup{b}", 0.0, 14.0, 0.0, f"band {b} makeup gain") for b in range(3)]
    specs += [
        log("freq0", 20.0, 1400.0, 160.0, "Hz", "crossover between band 0 and band 1"),
        log(
            "freq1",
            1400.0,
            freq1_max,
            3000.0,
            "Hz",
            f"crossover between band 1 and band 2 (up to {freq1_max:g} Hz at {sample_rate} Hz)",
        ),
        db("level_out", -12.0, 12.0, 0.0, "output gain (the plugin's Master Trim)"),
    ]
    specs += [
        fixed(f"enable{b}", 1.0, 0.0, 1.0, "", f"band {b} compressor on (fixed; the plugin defaults to off)")
        for b in range(3)
    ]
    specs += [db(f"knee{b}", 0.0, 8.0, 0.0, f"band {b} knee (fixed)", fixed=0.0) for b in range(3)]
    specs += [log(f"attack{b}", 0.1, 100.0, 10.0, "ms", f"band {b} attack (fixed)", fixed=10.0) for b in range(3)]
    specs += [log(f"release{b}", 1.0, 500.0, 80.0, "ms", f"band {b} release (fixed)", fixed=80.0) for b in range(3)]
    return specs


def zamulticompx2(sample_rate: int, block_size: int, name: str = "compressor") -> PedalboardEffect:
    """ZaMultiCompX2 as a mono (dual-mono) 3-band compressor, 12 trainable parameters."""
    return plugin_file_effect(
        require(ZAMULTICOMPX2),
        name,
        multicomp_params(sample_rate),
        sample_rate,
        block_size,
        parameter_keys=MULTICOMP_KEYS,
        plugin_channels=2,
    )


# ---------------------------------------------------------------------------------------------- ZamGEQ31

#: ZamGEQ31's bands as its parameter keys label them (Hz), band k -> ``g_k``. The plugin exposes 29 bands
#: (32 Hz ... 20.8 kHz, 1/3 octave) and a master gain; its name notwithstanding, there is no 31-band layout.
GEQ_LABELS_HZ: tuple[int, ...] = (
    32,
    40,
    50,
    63,
    79,
    100,
    126,
    158,
    200,
    251,
    316,
    398,
    501,
    631,
    794,
    999,
    1257,
    1584,
    1997,
    2514,
    3165,
    3986,
    5017,
    6318,
    7963,
    10032,
    12662,
    16081,
    20801,
)
GEQ_KEYS: dict[str, str] = {**{f"g_{k}": f"{f}hz_db" for k, f in enumerate(GEQ_LABELS_HZ)}, "g_out": "master_gain_db"}


def geq_band_active(centre_hz: float, sample_rate: int) -> bool:
    """ZamGEQ31 skips a band whose upper 1/3-octave edge lies above 0.95 x Nyquist."""
    return centre_hz * 2.0 ** (1.0 / 6.0) <= GEQ_EDGE_LIMIT * sample_rate / 2.0


def geq_params(sample_rate: int) -> list[ParamSpec]:
    specs: list[ParamSpec] = []
    for k, f in enumerate(GEQ_LABELS_HZ):
        note = (
            ""
            if geq_band_active(f, sample_rate)
            else (
                f"; inactive at {sample_rate} Hz (the plugin skips bands reaching past 0.95 x Nyquist): kept in the "
                "layout, its value has no effect"
            )
        )
        specs.append(db(f"g_{k}", -12.0, 12.0, 0.0, f"gain of the {f} Hz band{note}"))
    specs.append(db("g_out", -12.0, 12.0, 0.0, "output gain (the plugin's Master Gain)"))
    return specs


def zamgeq31(sample_rate: int, block_size: int, name: str = "eq") -> PedalboardEffect:
    """ZamGEQ31: 29 band gains + master gain, 30 trainable parameters."""
    return plugin_file_effect(
        require(ZAMGEQ31),
        name,
        geq_params(sample_rate),
        sample_rate,
        block_size,
        parameter_keys=GEQ_KEYS,
    )


# ---------------------------------------------------------------------------------------------- ZaMaximX2

MAXIM_KEYS: dict[str, str] = {"th": "threshold_db", "ceiling": "output_ceiling_db", "release": "release_ms"}


def maxim_params() -> list[ParamSpec]:
    return [
        db("th", -30.0, 0.0, 0.0, "threshold: the input is driven by -th dB into the limiter"),
        db("ceiling", -12.0, 0.0, 0.0, "output ceiling"),
        log("release", 1.0, 100.0, 25.0, "ms", "limiter release"),
    ]


def zamaximx2(sample_rate: int, block_size: int, name: str = "limiter") -> PedalboardEffect:
    """ZaMaximX2 as a mono (dual-mono) look-ahead maximiser, 3 parameters; latency as the plugin reports it."""
    return plugin_file_effect(
        require(ZAMAXIMX2),
        name,
        maxim_params(),
        sample_rate,
        block_size,
        parameter_keys=MAXIM_KEYS,
        plugin_channels=2,
        latency=None,
    )


# ---------------------------------------------------------------------------------------------- ZamComp

ZAMCOMP_KEYS: dict[str, str] = {
    "threshold": "threshold_db",
    "ratio": "ratio",
    "knee": "knee_db",
    "makeup": "makeup_db",
    "attack": "attack_ms",
    "release": "release_ms",
    "slew": "slew",
    "sidechain": "sidechain",
}


def zamcomp_params() -> list[ParamSpec]:
    return [
        db("threshold", -60.0, 0.0, 0.0, "threshold (plugin range reaches -80 dB)"),
        log("ratio", 1.0, 20.0, 4.0, ":1", "compression ratio"),
        db("knee", 0.0, 8.0, 0.0, "knee width"),
        db("makeup", 0.0, 30.0, 0.0, "makeup gain"),
        log("attack", 0.1, 100.0, 10.0, "ms", "attack time"),
        log("release", 1.0, 500.0, 80.0, "ms", "release time"),
        fixed("slew", 1.0, 1.0, 150.0, "", "gain slew (fixed at the plugin default)"),
        fixed("sidechain", 0.0, 0.0, 1.0, "", "external sidechain (fixed off)"),
    ]


# ---------------------------------------------------------------------------------------------- chains


def zam_mastering(sample_rate: int, block_size: int) -> Chain:
    """ZaMultiCompX2 (12) -> ZamGEQ31 (30) -> ZaMaximX2 (3): a 45-parameter VST3 mastering chain.

    Effects are named ``compressor``, ``eq`` and ``limiter`` like the other mastering chains, so parameter
    names read ``compressor.threshold0``, ``eq.g_0``, ``limiter.th``. Latency: the maximiser's (480 samples).
    """
    effects: list[PedalboardEffect] = [
        zamulticompx2(sample_rate, block_size),
        zamgeq31(sample_rate, block_size),
        zamaximx2(sample_rate, block_size),
    ]
    return Chain(effects, name="zam_mastering")


def zam_compressor(sample_rate: int, block_size: int) -> Chain:
    """ZamComp, single band: threshold, ratio, knee, makeup, attack, release (6 parameters, no latency)."""
    effect = plugin_file_effect(
        require(ZAMCOMP),
        "compressor",
        zamcomp_params(),
        sample_rate,
        block_size,
        parameter_keys=ZAMCOMP_KEYS,
    )
    return Chain([effect], name="zam_compressor")
