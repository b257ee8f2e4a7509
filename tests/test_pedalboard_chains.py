"""The pedalboard equivalents of the paper chains: layouts, flat band splits, dynamics, EQ, streaming state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from afx_lightning.registry import build_chain

SR = 22050
BLOCK = 1024

AMP_NAMES = (
    [f"threshold{b}" for b in range(4)]
    + [f"ratio{b}" for b in range(4)]
    + [f"makeup{b}" for b in range(4)]
    + [f"release{b}" for b in range(4)]
    + ["freq0", "freq1", "freq2", "level_in", "level_out"]
)
GATE_NAMES = (
    [f"range{b}" for b in range(4)]
    + [f"threshold{b}" for b in range(4)]
    + [f"ratio{b}" for b in range(4)]
    + ["freq0", "freq1", "freq2", "level_in", "level_out"]
)
MASTERING_NAMES = (
    [f"compressor.threshold{b}" for b in range(4)]
    + [f"compressor.ratio{b}" for b in range(4)]
    + [f"compressor.makeup{b}" for b in range(4)]
    + ["compressor.freq0", "compressor.freq1", "compressor.freq2", "compressor.level_in"]
    + [f"eq.g_{k}" for k in range(32)]
    + ["eq.g_out", "limiter.th"]
)


def theta(chain, **values: float) -> np.ndarray:
    """Normalised parameters from values in range units, by name (``.`` written as ``__``); the rest default."""
    return chain.normalized({k.replace("__", "."): v for k, v in values.items()})


def stream(chain, x: np.ndarray, th: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32).reshape(1, -1)
    return np.concatenate([chain.process(x[:, i : i + BLOCK], th) for i in range(0, x.shape[1], BLOCK)], axis=1)


def noise(n: int = 8 * BLOCK, scale: float = 0.2, seed: int = 0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def sweep(n: int = 8 * BLOCK, f0: float = 20.0, f1: float = 10000.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(n) / SR
    T = n / SR
    k = np.log(f1 / f0)
    return (amp * np.sin(2 * np.pi * f0 * T / k * (np.exp(t / T * k) - 1))).astype(np.float32)


def sine(freq: float, amp: float, n: int = 8 * BLOCK) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def rms_db(y: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(y, dtype=np.float64))) + 1e-20))


def random_freqs(chain, rng, prefix: str = "") -> dict:
    out = {}
    for p in chain.trainable_params:
        if p.name.startswith(prefix + "freq"):
            out[p.name.replace(".", "__")] = p.to_display(rng.uniform())
    return out


# ---------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "name, expected",
    [("pb_mb_compressor", AMP_NAMES), ("pb_mb_gate", GATE_NAMES), ("pb_mastering", MASTERING_NAMES)],
)
def test_layout_through_registry(name, expected):
    chain = build_chain(name, sample_rate=SR, block_size=BLOCK)
    assert chain.num_params == len(expected)
    assert chain.param_names == expected
    assert chain.channels == 1 and chain.latency == 0
    for p in chain.trainable_params:
        if "freq" in p.name or "ratio" in p.name or "release" in p.name:
            assert p.scale.value == "log", p.name
        if any(k in p.name for k in ("threshold", "makeup", "level", "g_", "range", ".th")):
            assert p.unit == "dB", p.name
    y = chain.process(np.zeros((1, BLOCK), np.float32), theta(chain))
    assert y.shape == (1, BLOCK) and y.dtype == np.float32


def test_parameter_counts_and_ranges():
    amp = build_chain("pb_mb_compressor", SR, BLOCK)
    spec = {p.name: p for p in amp.trainable_params}
    assert (spec["freq0"].min, spec["freq0"].max) == (10, 400)
    assert (spec["freq1"].min, spec["freq1"].max) == (300, 3000)
    assert (spec["freq2"].min, spec["freq2"].max) == (3000, 8000)
    assert (spec["level_out"].min, spec["level_out"].max) == (-36, 6)
    gate = build_chain("pb_mb_gate", SR, BLOCK)
    spec = {p.name: p for p in gate.trainable_params}
    assert (spec["freq2"].min, spec["freq2"].max) == (3000, 10000)
    assert (spec["range0"].min, spec["range0"].max) == (-60, 0)
    master = build_chain("pb_mastering", SR, BLOCK)
    assert [e.num_params for e in master.effects] == [16, 33, 1]
    assert [e.name for e in master.effects] == ["compressor", "eq", "limiter"]


def test_mastering_layout_is_rate_independent():
    names = [build_chain("pb_mastering", sr, BLOCK).param_names for sr in (16000, 22050, 44100, 48000)]
    assert all(n == MASTERING_NAMES for n in names)


# ---------------------------------------------------------------------------------------------- flat splits


@pytest.mark.parametrize("signal", [noise(), sweep()], ids=["noise", "sweep"])
def test_compressor_split_sums_flat(signal):
    rng = np.random.default_rng(1)
    for _ in range(3):
        chain = build_chain("pb_mb_compressor", SR, BLOCK)
        th = theta(chain, **random_freqs(chain, rng), release2=3.0)
        np.testing.assert_allclose(stream(chain, signal, th)[0], signal, atol=1e-5)
    # input and output levels cancel; makeup 0 dB; ratio 1 with any threshold is idle
    chain = build_chain("pb_mb_compressor", SR, BLOCK)
    th = theta(chain, level_in=6.0, level_out=-6.0, threshold1=-60.0)
    np.testing.assert_allclose(stream(chain, signal, th)[0], signal, atol=1e-5)


@pytest.mark.parametrize("signal", [noise(), sweep()], ids=["noise", "sweep"])
def test_gate_split_sums_flat(signal):
    rng = np.random.default_rng(2)
    for _ in range(3):
        chain = build_chain("pb_mb_gate", SR, BLOCK)
        # range 0 dB: every band bypassed, even with a closed gate
        idle = {f"range{b}": 0.0 for b in range(4)} | {f"threshold{b}": 0.0 for b in range(4)}
        idle |= {f"ratio{b}": 20.0 for b in range(4)}
        th = theta(chain, **random_freqs(chain, rng), **idle)
        np.testing.assert_allclose(stream(chain, signal, th)[0], signal, atol=1e-5)
    # threshold at the bottom with ratio 1: the gate never closes
    chain = build_chain("pb_mb_gate", SR, BLOCK)
    th = theta(chain, **{f"range{b}": -60.0 for b in range(4)}, **{f"ratio{b}": 1.0 for b in range(4)})
    np.testing.assert_allclose(stream(chain, signal, th)[0], signal, atol=1e-5)


@pytest.mark.parametrize("signal", [noise(), sweep()], ids=["noise", "sweep"])
def test_mastering_idle_is_flat(signal):
    rng = np.random.default_rng(3)
    for _ in range(3):
        chain = build_chain("pb_mastering", SR, BLOCK)
        th = theta(chain, **random_freqs(chain, rng, "compressor."), limiter__th=0.0)
        np.testing.assert_allclose(stream(chain, signal, th)[0], signal, atol=1e-5)


def test_gate_cutoff_is_clamped_at_low_rates():
    sr = 16000
    chain = build_chain("pb_mb_gate", sr, BLOCK)
    x = noise()
    th = theta(chain, freq2=10000.0, **{f"range{b}": 0.0 for b in range(4)})
    y = stream(chain, x, th)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[0], x, atol=1e-5)


# ---------------------------------------------------------------------------------------------- dynamics


def steady_gain_db(chain, x, th) -> float:
    y = stream(chain, x, th)
    return rms_db(y[0, -4 * BLOCK :]) - rms_db(x[-4 * BLOCK :])


def test_compressor_reduces_loud_more_than_quiet():
    chain = build_chain("pb_mb_compressor", SR, BLOCK)
    hard = {f"threshold{b}": -40.0 for b in range(4)} | {f"ratio{b}": 20.0 for b in range(4)}
    th = theta(chain, **hard)
    loud = steady_gain_db(chain, sine(1000.0, 0.5), th)
    chain.reset()
    quiet = steady_gain_db(chain, sine(1000.0, 0.003), th)
    assert abs(quiet) < 0.5
    assert loud < quiet - 20.0
    # makeup brings the level back up
    chain.reset()
    made_up = steady_gain_db(chain, sine(1000.0, 0.5), theta(chain, **hard, **{f"makeup{b}": 20.0 for b in range(4)}))
    assert made_up == pytest.approx(loud + 20.0, abs=1.0)


def test_compressor_release_controls_recovery():
    burst = np.concatenate([sine(200.0, 0.8, 4 * BLOCK), sine(200.0, 0.05, 4 * BLOCK)])
    levels = {}
    for release in (1.0, 1000.0):
        chain = build_chain("pb_mb_compressor", SR, BLOCK)
        th = theta(
            chain,
            **{f"threshold{b}": -40.0 for b in range(4)},
            **{f"ratio{b}": 10.0 for b in range(4)},
            **{f"release{b}": release for b in range(4)},
        )
        y = stream(chain, burst, th)
        levels[release] = rms_db(y[0, 4 * BLOCK + 200 : 4 * BLOCK + 2000])
    assert levels[1.0] > levels[1000.0] + 6.0  # a short release recovers gain quickly after the burst


def test_gate_depth():
    quiet = sine(1000.0, 0.001)  # -63 dB peak
    closed = {f"threshold{b}": -10.0 for b in range(4)} | {f"ratio{b}": 20.0 for b in range(4)}
    chain = build_chain("pb_mb_gate", SR, BLOCK)
    gain = steady_gain_db(chain, quiet, theta(chain, **closed, **{f"range{b}": -60.0 for b in range(4)}))
    assert gain == pytest.approx(-60.0, abs=1.0)
    chain = build_chain("pb_mb_gate", SR, BLOCK)
    gain = steady_gain_db(chain, quiet, theta(chain, **closed, **{f"range{b}": -20.0 for b in range(4)}))
    assert gain == pytest.approx(-20.0, abs=1.0)
    chain = build_chain("pb_mb_gate", SR, BLOCK)
    y = stream(chain, quiet, theta(chain, **closed, **{f"range{b}": 0.0 for b in range(4)}))
    np.testing.assert_allclose(y[0], quiet, atol=1e-6)
    # a loud signal above every band's threshold passes
    chain = build_chain("pb_mb_gate", SR, BLOCK)
    open_ = {f"threshold{b}": -50.0 for b in range(4)} | {f"range{b}": -60.0 for b in range(4)}
    assert steady_gain_db(chain, sine(1000.0, 0.5), theta(chain, **open_)) == pytest.approx(0.0, abs=1.0)


def test_limiter_holds_peaks_and_boosts():
    chain = build_chain("pb_mastering", SR, BLOCK)
    x = sine(440.0, 0.9)
    y = stream(chain, x, theta(chain, limiter__th=-12.0))
    peak_db = 20 * np.log10(np.abs(y[0, 2 * BLOCK :]).max())
    assert peak_db == pytest.approx(0.0, abs=0.5)  # held at -12 dB, then raised by +12 dB
    chain.reset()
    assert steady_gain_db(chain, sine(440.0, 0.05), theta(chain, limiter__th=-12.0)) == pytest.approx(12.0, abs=0.5)


# ---------------------------------------------------------------------------------------------- EQ


def test_eq_band_boost_raises_its_frequency():
    k = 18  # 1 kHz
    boosted, other = {}, {}
    for gain in (0.0, 12.0):
        chain = build_chain("pb_mastering", SR, BLOCK)
        th = theta(chain, **{f"eq__g_{k}": gain})
        boosted[gain] = steady_gain_db(chain, sine(1000.0, 0.05), th)
        chain.reset()
        other[gain] = steady_gain_db(chain, sine(100.0, 0.05), th)
    assert boosted[12.0] - boosted[0.0] == pytest.approx(12.0, abs=1.0)
    assert abs(other[12.0] - other[0.0]) < 0.5


def test_eq_output_gain():
    chain = build_chain("pb_mastering", SR, BLOCK)
    assert steady_gain_db(chain, sine(500.0, 0.05), theta(chain, eq__g_out=-6.0)) == pytest.approx(-6.0, abs=0.1)


def test_eq_bands_near_nyquist_are_inactive():
    chain = build_chain("pb_mastering", SR, BLOCK)
    eq = {p.name: p for p in chain.trainable_params if p.name.startswith("eq.g_")}
    inactive = [n for n, p in eq.items() if "inactive" in p.description]
    assert inactive == ["eq.g_28", "eq.g_29", "eq.g_30", "eq.g_31"]  # 10k, 12.5k, 16k, 20k >= 0.9 x 11025 Hz
    x = noise(4 * BLOCK)
    ref = stream(chain, x, theta(chain, eq__g_5=6.0))
    for value in (-36.0, 14.0):
        chain.reset()
        y = stream(chain, x, theta(chain, eq__g_5=6.0, **{n.replace(".", "__"): value for n in inactive}))
        np.testing.assert_array_equal(y, ref)
    # at 44.1 kHz only the 20 kHz band is inactive, and the 10 kHz band does something
    chain = build_chain("pb_mastering", 44100, BLOCK)
    inactive = [p.name for p in chain.trainable_params if "inactive" in p.description]
    assert inactive == ["eq.g_31"]
    ref = stream(chain, x, theta(chain))
    chain.reset()
    assert not np.allclose(stream(chain, x, theta(chain, eq__g_28=12.0)), ref, atol=1e-3)


# ---------------------------------------------------------------------------------------------- state


STATEFUL = {
    "pb_mb_compressor": dict(
        **{f"threshold{b}": -30.0 for b in range(4)},
        **{f"ratio{b}": 8.0 for b in range(4)},
        **{f"release{b}": 500.0 for b in range(4)},
    ),
    "pb_mb_gate": dict(
        **{f"threshold{b}": -20.0 for b in range(4)},
        **{f"ratio{b}": 10.0 for b in range(4)},
        **{f"range{b}": -40.0 for b in range(4)},
    ),
    "pb_mastering": dict(
        **{f"compressor__threshold{b}": -30.0 for b in range(4)},
        **{f"compressor__ratio{b}": 8.0 for b in range(4)},
        eq__g_10=6.0,
        limiter__th=-10.0,
    ),
}


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_reset_replays_identically_and_state_carries(name):
    chain = build_chain(name, SR, BLOCK)
    th = theta(chain, **STATEFUL[name])
    rng = np.random.default_rng(4)
    # decaying bursts so that dynamics state matters at block boundaries
    x = (np.repeat(rng.uniform(0.0, 0.8, 8), BLOCK) * noise(8 * BLOCK, 1.0, seed=5)).astype(np.float32)
    first = stream(chain, x, th)
    carried = stream(chain, x, th)  # no reset: envelopes, filter states carry over from the end of `first`
    chain.reset()
    replay = stream(chain, x, th)
    np.testing.assert_array_equal(replay, first)
    assert not np.array_equal(carried, first)
    # a fresh chain agrees with a reset one
    np.testing.assert_array_equal(stream(build_chain(name, SR, BLOCK), x, th), first)


def test_blocks_longer_than_block_size_are_refused():
    chain = build_chain("pb_mb_compressor", SR, BLOCK)
    with pytest.raises(ValueError):
        chain.process(np.zeros((1, 2 * BLOCK), np.float32), theta(chain))


ZAMCOMP = Path("/usr/lib/vst3/ZamComp.vst3")


@pytest.mark.skipif(not ZAMCOMP.exists(), reason="needs Debian's zam-plugins (apt-get install zam-plugins)")
def test_a_vst3_file_is_an_effect_with_parameters_in_plugin_units():
    from afx_lightning.effects import ParamSpec, Scale, plugin_file_effect

    params = [
        ParamSpec("threshold", -60.0, 0.0, 0.0, unit="dB"),
        ParamSpec("ratio", 1.0, 20.0, 1.0, Scale.LOG),
        ParamSpec("release", 5.0, 500.0, 80.0, Scale.LOG, "ms"),
        ParamSpec("attack", 0.1, 100.0, 1.0, fixed=1.0),
    ]
    keys = {"threshold": "threshold_db", "ratio": "ratio", "release": "release_ms", "attack": "attack_ms"}
    effect = plugin_file_effect(ZAMCOMP, "zamcomp", params, 22050, 1024, parameter_keys=keys)
    plugin = effect._graph.plugin
    theta = np.array([params[0].normalize(-30.0), params[1].normalize(8.0), params[2].normalize(200.0)])
    sine = (0.9 * np.sin(2 * np.pi * 1000 * np.arange(1024) / 22050)).astype(np.float32)[None]
    out = [effect.process(sine, theta) for _ in range(10)][-1]
    assert plugin.threshold_db == pytest.approx(-30.0, abs=0.2)  # the raw_value mapping lands on the value
    assert plugin.ratio == pytest.approx(8.0, abs=0.1)
    assert plugin.release_ms == pytest.approx(200.0, abs=1.0)
    assert plugin.attack_ms == pytest.approx(1.0, abs=0.2)  # fixed values are applied
    assert np.abs(out).max() < 0.5 * 0.9  # and it compresses a loud sine
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        plugin_file_effect(ZAMCOMP, "bad", [ParamSpec("nope", 0, 1, 0)], 22050, 1024)


# ---------------------------------------------------------------------------------------------- breath chains


def test_graphic_eq_chain_is_idle_at_its_defaults_and_cuts_one_band():
    chain = build_chain("pb_graphic_eq", SR, BLOCK)
    assert chain.num_params == 33 and chain.param_names == [f"g_{k}" for k in range(32)] + ["g_out"]
    x = noise()
    np.testing.assert_allclose(stream(chain, x, theta(chain))[0], x, atol=1e-5)
    k = 21  # 2 kHz
    cut, other = {}, {}
    for gain in (0.0, -24.0):
        chain = build_chain("pb_graphic_eq", SR, BLOCK)
        th = theta(chain, **{f"g_{k}": gain})
        cut[gain] = steady_gain_db(chain, sine(2000.0, 0.05), th)
        chain.reset()
        other[gain] = steady_gain_db(chain, sine(500.0, 0.05), th)
    assert cut[-24.0] - cut[0.0] == pytest.approx(-24.0, abs=1.5)
    assert abs(other[-24.0] - other[0.0]) < 0.5


def test_octave_eq_chain_has_8_cuts_and_no_output_gain():
    chain = build_chain("pb_octave_eq", SR, BLOCK)
    assert chain.param_names == [f"g_{k}" for k in range(8)]
    x = noise()
    np.testing.assert_allclose(stream(chain, x, theta(chain))[0], x, atol=1e-5)
    chain = build_chain("pb_octave_eq", SR, BLOCK)
    th = theta(chain, g_4=-20.0)  # the 1 kHz octave
    assert steady_gain_db(chain, sine(1000.0, 0.05), th) == pytest.approx(-20.0, abs=1.0)
    chain.reset()
    assert abs(steady_gain_db(chain, sine(125.0, 0.05), th)) < 0.5
