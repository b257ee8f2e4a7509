"""The VST3 chains over Debian's zam-plugins (ZaMultiCompX2, ZamGEQ31, ZaMaximX2, ZamComp), hosted by pedalboard."""

from __future__ import annotations

import numpy as np
import pytest

from afx_lightning import registry
from afx_lightning.effects.base import Chain, PluginUnavailable
from effects_registry import vst3_chains as V

_missing = [p.name for p in (V.ZAMULTICOMPX2, V.ZAMGEQ31, V.ZAMAXIMX2, V.ZAMCOMP) if not p.exists()]
if _missing:
    pytest.skip(
        f"VST3 bundles {_missing} are not installed (sudo apt-get install zam-plugins)", allow_module_level=True
    )

SR = 22050
BLOCK = 1024


def theta(effect, **values: float) -> np.ndarray:
    """Normalised parameters from plugin values by name (``.`` written as ``__``); the rest at their defaults."""
    return effect.normalized({k.replace("__", "."): v for k, v in values.items()})


def stream(effect, x: np.ndarray, th: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32).reshape(1, -1)
    return np.concatenate([effect.process(x[:, i : i + BLOCK], th) for i in range(0, x.shape[1], BLOCK)], axis=1)[0]


def noise(n: int = 8 * BLOCK, scale: float = 0.05, seed: int = 0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def sine(amp: float, n: int = 16 * BLOCK, freq: float = 1000.0) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def rms_db(y: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(y, dtype=np.float64)) + 1e-30))


#: The mastering chain with its dynamics idle (thresholds 0 dB, ratio 1), EQ flat, maximiser at 0 dB: a pure delay.
IDLE = {**{f"compressor__threshold{b}": 0.0 for b in range(3)}, **{f"compressor__ratio{b}": 1.0 for b in range(3)}}


@pytest.fixture(scope="module")
def mastering():
    chain = registry.build_chain("zam_mastering", SR, BLOCK)
    yield chain
    chain.close()


# ---------------------------------------------------------------------------------------------- layouts


def test_layouts_names_and_counts(mastering):
    per_band = lambda *kinds: [f"compressor.{k}{b}" for k in kinds for b in range(3)]  # noqa: E731
    assert mastering.num_params == 45 and mastering.name == "zam_mastering"
    assert [e.name for e in mastering.effects] == ["compressor", "eq", "limiter"]
    assert mastering.param_names == (
        per_band("threshold", "ratio", "makeup")
        + ["compressor.freq0", "compressor.freq1", "compressor.level_out"]
        + [f"eq.g_{k}" for k in range(29)]
        + ["eq.g_out"]
        + ["limiter.th", "limiter.ceiling", "limiter.release"]
    )
    fixed = {p.name: p.fixed for p in mastering.params if not p.trainable}
    assert all(fixed[f"compressor.enable{b}"] == 1.0 for b in range(3))  # the plugin's bands default to off
    assert {f"compressor.{k}{b}" for k in ("knee", "attack", "release") for b in range(3)} <= set(fixed)
    by_name = {p.name: p for p in mastering.params}
    assert by_name["compressor.freq1"].max == pytest.approx(0.45 * SR)  # crossovers stay below Nyquist
    assert "inactive at 22050 Hz" in by_name["eq.g_25"].description  # 10 kHz band
    assert "inactive" not in by_name["eq.g_24"].description

    comp = registry.build_chain("zam_compressor", SR, BLOCK)
    assert comp.param_names == ["threshold", "ratio", "knee", "makeup", "attack", "release"]
    assert comp.latency == 0 and isinstance(comp, Chain)
    comp.close()


def test_missing_bundle_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(V, "ZAMCOMP", tmp_path / "ZamComp.vst3")
    with pytest.raises(PluginUnavailable, match="zam-plugins"):
        V.zam_compressor(SR, BLOCK)
    monkeypatch.setattr(V, "ZAMAXIMX2", tmp_path / "ZaMaximX2.vst3")
    with pytest.raises(PluginUnavailable, match="apt-get install zam-plugins"):
        V.zam_mastering(SR, BLOCK)


# ---------------------------------------------------------------------------------------------- latency


@pytest.mark.parametrize("sample_rate", [22050, 44100])
def test_the_maximiser_streams_with_exactly_its_declared_latency(sample_rate):
    limiter = V.zamaximx2(sample_rate, BLOCK)
    x = np.zeros(4 * BLOCK, np.float32)
    x[[300, 1500]] = [0.5, -0.25]  # one impulse in the first block, one across later blocks
    y = stream(limiter, x, theta(limiter))
    assert limiter.latency == 480  # ZaMaximX2's look-ahead; the same at every rate
    peaks = np.flatnonzero(np.abs(y) > 1e-6)
    np.testing.assert_array_equal(peaks, [300 + limiter.latency, 1500 + limiter.latency])
    np.testing.assert_allclose(y[peaks], [0.5, -0.25], rtol=1e-5)
    limiter.close()


def test_the_chain_latency_is_its_streaming_delay(mastering):
    assert mastering.latency == 480
    mastering.reset()
    x = noise(6 * BLOCK)
    y = stream(mastering, x, theta(mastering, **IDLE))
    lag = int(np.argmax(np.correlate(y, x, "full"))) - (len(x) - 1)
    assert lag == mastering.latency
    np.testing.assert_array_equal(y[: mastering.latency], 0.0)  # withheld samples come out as leading zeros
    np.testing.assert_allclose(y[mastering.latency :], x[: -mastering.latency], atol=1e-6)  # idle = pure delay
    for effect in mastering.effects[:2]:  # the compressor and the EQ stream with no delay
        assert effect.latency == 0


# ---------------------------------------------------------------------------------------------- behaviour


def test_zamcomp_compresses_a_loud_sine_and_leaves_a_quiet_one():
    comp = V.zam_compressor(SR, BLOCK)
    th = theta(comp, threshold=-30.0, ratio=10.0, knee=0.0, makeup=0.0, attack=1.0, release=50.0)
    settle = 4 * BLOCK
    loud = sine(0.5)  # -9 dB RMS, 24 dB above the threshold in peak
    comp.reset()
    out = stream(comp, loud, th)
    reduction = rms_db(loud[settle:]) - rms_db(out[settle:])
    assert reduction > 12.0, reduction
    quiet = sine(0.005)  # -46 dBFS peak: 16 dB below the threshold
    comp.reset()
    out = stream(comp, quiet, th)
    assert abs(rms_db(quiet[settle:]) - rms_db(out[settle:])) < 0.1
    comp.close()


def test_mastering_parts_do_what_their_names_say(mastering):
    x = noise(8 * BLOCK, scale=0.1)
    tail = slice(4 * BLOCK, None)
    compressor, eq, limiter = mastering.effects
    compressor.reset()
    squashed = stream(
        compressor,
        x,
        theta(compressor, **{f"threshold{b}": -40.0 for b in range(3)}, **{f"ratio{b}": 20.0 for b in range(3)}),
    )
    assert rms_db(x[tail]) - rms_db(squashed[tail]) > 10.0  # bands enabled: the toggles are really on
    eq.reset()
    assert rms_db(stream(eq, x, theta(eq, g_out=6.0))[tail]) - rms_db(x[tail]) == pytest.approx(6.0, abs=0.05)
    for band, active in ((24, True), (25, False)):  # 7963 Hz works at 22 050 Hz, 10 032 Hz is skipped
        eq.reset()
        y = stream(eq, x, theta(eq, **{f"g_{band}": 12.0}))
        assert bool(np.abs(y - x).max() > 0.01) is active
    limiter.reset()
    y = stream(limiter, x, theta(limiter, th=-18.0, ceiling=-1.0))
    assert np.abs(y).max() <= 10 ** (-1.0 / 20) + 1e-3  # held at the ceiling
    assert rms_db(y[tail]) > rms_db(x[tail]) + 6.0  # and driven louder


def test_reset_replays_identically_and_equals_a_fresh_chain(mastering):
    th = theta(
        mastering,
        **{f"compressor__threshold{b}": -30.0 for b in range(3)},
        compressor__makeup1=6.0,
        compressor__freq0=300.0,
        eq__g_10=6.0,
        eq__g_20=-6.0,
        limiter__th=-10.0,
        limiter__ceiling=-0.5,
        limiter__release=50.0,
    )
    x = noise(6 * BLOCK, scale=0.2, seed=3)
    mastering.reset()
    first = stream(mastering, x, th)
    carried = stream(mastering, x, th)  # no reset: state (and the limiter's delay line) carries over
    mastering.reset()
    replay = stream(mastering, x, th)
    np.testing.assert_array_equal(replay, first)
    assert not np.array_equal(carried, first)
    fresh = V.zam_mastering(SR, BLOCK)
    np.testing.assert_array_equal(stream(fresh, x, th), first)
    fresh.close()
