"""The LV2 backend (ctypes over liblilv) and the paper-exact Calf/LSP chains, on the real installed plugins."""

from __future__ import annotations

import ctypes
import time
from dataclasses import replace

import numpy as np
import pytest

from afx_lightning.effects import lilv_ctypes as lv
from afx_lightning.effects.base import Chain, PluginUnavailable

APT = "sudo apt-get install liblilv-0-0 calf-plugins lsp-plugins-lv2"
if not lv.lilv_available():
    pytest.skip(f"liblilv-0.so.0 is not installed ({APT})", allow_module_level=True)

from afx_lightning.effects.lv2 import LV2Effect, lv2_params_from_ports  # noqa: E402
from effects_registry import lv2_chains as C  # noqa: E402

_missing = [
    u for u in (C.CALF_MB_COMPRESSOR, C.CALF_MB_GATE, C.LSP_GEQ32_MONO, C.LSP_LIMITER_MONO) if not lv.has_plugin(u)
]
if _missing:
    pytest.skip(f"LV2 plugins {_missing} are not installed ({APT})", allow_module_level=True)

SR = 22050
BLOCK = 1024
FACTORIES = {
    "calf_mb_compressor": C.calf_mb_compressor,
    "calf_mb_gate": C.calf_mb_gate,
    "lv2_mastering": C.lv2_mastering,
}


def theta(chain, **values: float) -> np.ndarray:
    """Normalised parameters from plugin values by name (``.`` written as ``__``); the rest at their defaults."""
    return chain.normalized({k.replace("__", "."): v for k, v in values.items()})


def stream(chain, x: np.ndarray, th: np.ndarray, block: int = BLOCK) -> np.ndarray:
    x = np.asarray(x, np.float32).reshape(1, -1)
    return np.concatenate([chain.process(x[:, i : i + block], th) for i in range(0, x.shape[1], block)], axis=1)


def sine(freq: float, amp: float, n: int) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def noise(n: int = 8 * BLOCK, scale: float = 0.2, seed: int = 0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def db(x: float) -> float:
    return float(20 * np.log10(x + 1e-20))


def rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))


@pytest.fixture(scope="module")
def chains():
    built = {name: f(SR, BLOCK) for name, f in FACTORIES.items()}
    yield built
    for c in built.values():
        c.close()


# ---------------------------------------------------------------------------------------------- layouts


def test_layouts_match_the_paper(chains):
    comp, gate, master = chains["calf_mb_compressor"], chains["calf_mb_gate"], chains["lv2_mastering"]
    per_band = lambda *kinds: [f"{k}{b}" for k in kinds for b in range(4)]  # noqa: E731
    assert comp.param_names == per_band("threshold", "ratio", "makeup", "knee") + [
        "freq0",
        "freq1",
        "freq2",
        "level_in",
        "level_out",
    ]
    assert gate.param_names == per_band("range", "threshold", "ratio") + [
        "freq0",
        "freq1",
        "freq2",
        "level_in",
        "level_out",
    ]
    assert master.param_names == (
        [f"compressor.{n}" for n in per_band("threshold", "ratio", "makeup") + ["freq0", "freq1", "freq2", "level_in"]]
        + [f"eq.g_{k}" for k in range(32)]
        + ["eq.g_out", "limiter.th"]
    )
    assert (comp.num_params, gate.num_params, master.num_params) == (21, 17, 50)
    spec = {p.name: p for p in comp.params}
    assert (spec["freq0"].min, spec["freq0"].max) == (10, 400)
    assert (spec["level_out"].min, spec["level_out"].max) == (0.015625, 2)
    mspec = {p.name: p for p in master.params}
    assert (mspec["compressor.makeup0"].max, mspec["compressor.level_in"].max, mspec["eq.g_out"].max) == (5, 4, 4)
    assert mspec["eq.slope"].fixed == 4 and mspec["limiter.boost"].fixed == 0 and mspec["limiter.alr"].fixed == 0
    for name, c in chains.items():
        fixed = {p.name.split(".")[-1]: p.fixed for p in c.params if p.fixed is not None}
        for b in range(4):
            assert fixed[f"bypass{b}"] == 0 and fixed[f"attack{b}"] == fixed[f"release{b}"] == 0.01, name
    assert (comp.latency, gate.latency, master.latency) == (0, 0, 110)


def test_fixed_values_reach_the_plugin(chains):
    effect = chains["calf_mb_compressor"].effects[0]
    assert [effect.control_value(f"bypass{b}") for b in range(4)] == [0.0] * 4
    assert effect.control_value("attack2") == pytest.approx(0.01)
    # Calf's own default is "bypassed": the chain overrides it
    assert effect.plugin.port("bypass0").default == 1.0


def test_params_from_ports_reads_the_plugin():
    specs = lv2_params_from_ports(C.LSP_LIMITER_MONO, ["th", "lk", "mode"], fixed={"boost": 0.0})
    by = {s.name: s for s in specs}
    assert by["th"].scale.value == "log" and by["th"].max == 1.0 and by["th"].unit == "G"
    assert by["lk"].unit == "ms" and by["lk"].default == pytest.approx(5.0)
    assert "integer" in by["mode"].description and by["mode"].scale.value == "linear"
    assert by["boost"].fixed == 0.0 and not by["boost"].trainable
    with pytest.raises(KeyError, match="no port 'nope'"):
        lv2_params_from_ports(C.LSP_LIMITER_MONO, ["nope"])


# ---------------------------------------------------------------------------------------------- LSP limiter


def test_limiter_holds_a_full_scale_sine_at_the_threshold():
    lim = Chain([C.lsp_limiter(SR, BLOCK)])
    try:
        x = sine(1000.0, 1.0, 22 * BLOCK)  # 0 dBFS, ~1 s
        y = stream(lim, x, theta(lim, th=10 ** (-12 / 20)))
        settled = y[0, len(x) // 2 :]
        assert db(np.abs(settled).max()) == pytest.approx(-12.0, abs=0.5)
        assert db(np.abs(y[0, lim.latency : BLOCK]).max()) < -11.5  # the look-ahead catches the onset too
    finally:
        lim.close()


def test_limiter_latency_is_reported_and_real():
    lim = Chain([C.lsp_limiter(SR, BLOCK)])
    try:
        assert lim.latency == 110  # 5 ms look-ahead at 22 050 Hz
        x = np.zeros(4 * BLOCK, np.float32)
        x[1500] = 0.5
        y = stream(lim, x, theta(lim))
        assert int(np.argmax(np.abs(y[0]))) == 1500 + lim.latency
        assert np.abs(y[0]).max() == pytest.approx(0.5, rel=1e-3)
    finally:
        lim.close()


# ---------------------------------------------------------------------------------------------- Calf compressor

SQUASH = dict(
    **{f"threshold{b}": 10 ** (-30 / 20) for b in range(4)},
    **{f"ratio{b}": 8.0 for b in range(4)},
    **{f"knee{b}": 1.0 for b in range(4)},
    **{f"makeup{b}": 1.0 for b in range(4)},
    freq1=3000.0,
    level_in=1.0,
    level_out=1.0,
)


def _gain_db(chain, amp: float, **values) -> float:
    chain.reset()
    x = sine(1000.0, amp, 16 * BLOCK)
    y = stream(chain, x, theta(chain, **values))
    half = x.shape[0] // 2
    return db(rms(y[0, half:]) / rms(x[half:]))


def test_calf_compressor_compresses_loud_and_leaves_quiet(chains):
    comp = chains["calf_mb_compressor"]
    loud = _gain_db(comp, 0.9, **SQUASH)
    quiet = _gain_db(comp, 0.01, **SQUASH)
    assert loud < -15.0  # -1 dBFS, 29 dB over a -30 dB threshold at 8:1: ~ -23 dB of gain
    assert abs(quiet) < 0.5  # -40 dBFS, under the threshold: the crossover sums flat
    # the same settings with every band bypassed (Calf's default): nothing happens
    effect = comp.effects[0]
    bypassed = [replace(p, fixed=1.0) if p.name.startswith("bypass") else p for p in effect.params]
    byp = Chain([LV2Effect(C.CALF_MB_COMPRESSOR, "bypassed", SR, BLOCK, bypassed)])
    try:
        assert abs(_gain_db(byp, 0.9, **SQUASH)) < 0.5
    finally:
        byp.close()


@pytest.mark.parametrize("name", ["calf_mb_compressor", "calf_mb_gate"])
def test_calf_left_only_equals_dual_mono(chains, name):
    """The official code fed the left input only; for Calf's MB plugins that is the same as dual mono."""
    effect = chains[name].effects[0]
    outs = []
    for mode in ("dual_mono", "left"):
        c = Chain([LV2Effect(effect.uri, mode, SR, BLOCK, effect.params, stereo_mode=mode)])
        try:
            th = theta(c, **{"threshold0": 0.05, "ratio0": 8.0, "threshold2": 0.02, "ratio2": 4.0})
            outs.append(stream(c, noise(6 * BLOCK, 0.5), th))
        finally:
            c.close()
    np.testing.assert_array_equal(outs[0], outs[1])


# ---------------------------------------------------------------------------------------------- EQ, streaming, reset

EQ_SETTING = dict(g_0=3.0, g_5=0.1, g_12=4.0, g_18=0.05, g_24=2.5, g_out=0.7)


def test_eq_frames_equal_one_long_render():
    clip = noise(8 * BLOCK)
    framed, whole = Chain([C.lsp_graphic_eq(SR, BLOCK)]), Chain([C.lsp_graphic_eq(SR, clip.shape[0])])
    try:
        a = stream(framed, clip, theta(framed, **EQ_SETTING))
        b = whole.process(clip.reshape(1, -1), theta(whole, **EQ_SETTING))
        assert np.abs(a - clip).max() > 0.1  # the setting does something
        np.testing.assert_allclose(a, b, atol=1e-6)
    finally:
        framed.close()
        whole.close()


@pytest.mark.parametrize("name", list(FACTORIES))
def test_reset_is_a_fresh_instance(chains, name):
    chain = chains[name]
    if name == "lv2_mastering":
        th = theta(chain, **{f"eq__{k}": v for k, v in EQ_SETTING.items()}, limiter__th=0.1)
    else:
        th = theta(chain)
    first, second = noise(6 * BLOCK, 0.5, seed=1), noise(4 * BLOCK, 0.3, seed=2)
    chain.reset()
    stream(chain, first, th)
    carried = stream(chain, second, th)  # state from the first clip
    chain.reset()
    after_reset = stream(chain, second, th)
    fresh = FACTORIES[name](SR, BLOCK)
    try:
        reference = stream(fresh, second, th)
    finally:
        fresh.close()
    np.testing.assert_array_equal(after_reset, reference)
    assert np.abs(carried - reference).max() > 1e-3


def test_block_size_is_enforced(chains):
    comp = chains["calf_mb_compressor"]
    with pytest.raises(ValueError, match="exactly 1024"):
        comp.process(np.zeros((1, 512), np.float32), theta(comp))


def test_close_twice_and_use_after_close():
    lim = C.lsp_limiter(SR, BLOCK)
    lim.close()
    lim.close()
    with pytest.raises(RuntimeError, match="closed"):
        lim.process(np.zeros((1, BLOCK), np.float32), np.array([1.0]))
    lim.reset()  # a closed effect can be brought back
    assert lim.process(np.zeros((1, BLOCK), np.float32), np.array([1.0])).shape == (1, BLOCK)
    lim.close()


# ---------------------------------------------------------------------------------------------- host features


def test_unsupported_required_feature_is_refused_before_instantiation(monkeypatch):
    plugin = lv.get_plugin(C.LSP_LIMITER_MONO)
    fake = "http://example.org/ns/ext/teleport#beam"
    monkeypatch.setattr(plugin, "required_features", plugin.required_features + (fake,))

    def no_instantiation(*args, **kwargs):
        raise AssertionError("the plugin must not be instantiated")

    monkeypatch.setattr(lv, "HostFeatures", no_instantiation)
    with pytest.raises(PluginUnavailable) as err:
        C.lsp_limiter(SR, BLOCK)
    assert fake in str(err.value) and C.LSP_LIMITER_MONO in str(err.value)
    assert lv.URI.URID_MAP not in str(err.value).split("provides")[0]  # only the missing one is named as missing


def test_block_length_features_and_required_options(monkeypatch):
    plugin = lv.get_plugin(C.LSP_LIMITER_MONO)
    monkeypatch.setattr(plugin, "required_features", plugin.required_features + (lv.URI.POW2_BLOCK,))
    plugin.check_supported(1024)
    with pytest.raises(PluginUnavailable, match="powerOf2BlockLength"):
        plugin.check_supported(1000)
    monkeypatch.setattr(plugin, "required_options", ("http://example.org/ns#exoticOption",))
    with pytest.raises(PluginUnavailable, match="exoticOption"):
        plugin.check_supported(1024)


def test_no_installed_plugin_needs_more_than_this_host_gives():
    refused = [(u, lv.get_plugin(u).unsupported_requirements(BLOCK)) for u in lv.plugin_uris()]
    assert [r for r in refused if r[1][0] or r[1][1]] == []


def test_missing_plugin_and_missing_library_name_what_to_install(monkeypatch):
    with pytest.raises(PluginUnavailable, match="apt-get install calf-plugins"):
        LV2Effect("http://example.org/plugins/none", "none", SR, BLOCK, [], install_hint="calf-plugins")
    monkeypatch.setattr(lv, "_lib", None)
    monkeypatch.setattr(lv, "LILV_SONAME", "liblilv-not-here.so.0")
    monkeypatch.setattr(lv.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(PluginUnavailable, match="apt-get install liblilv-0-0"):
        lv.library()


def test_urid_map_round_trip_through_c():
    uri = "http://example.org/ns#urid-test"
    urid = lv._URID_MAP.map(None, uri.encode())
    assert urid == lv.map_uri(uri) and urid > 0
    assert ctypes.string_at(lv._URID_UNMAP.unmap(None, urid)).decode() == uri


def test_worker_runs_work_then_delivers_responses_after_run():
    """worker:schedule: work() runs inside schedule_work; responses reach work_response() after run(), then end_run."""
    calls = []

    def work(handle, respond, rhandle, size, data):
        calls.append(("work", ctypes.string_at(data, size)))
        respond(rhandle, 5, b"reply")
        return 0

    def work_response(handle, size, data):
        calls.append(("response", ctypes.string_at(data, size)))
        return 0

    def end_run(handle):
        calls.append(("end_run", None))
        return 0

    iface = lv.LV2_Worker_Interface(
        lv.WORKER_WORK_FN(work), lv.WORKER_RESPONSE_FN(work_response), lv.WORKER_END_RUN_FN(end_run)
    )
    host = lv.HostFeatures(SR, BLOCK)
    host.worker.schedule.schedule_work(None, 3, b"job")  # before the instance exists: kept for later
    host.worker.bind(1234, ctypes.addressof(iface))
    assert calls == [("work", b"job")]
    assert host.worker.schedule.schedule_work(None, 4, b"job2") == 0
    assert calls[-1] == ("work", b"job2")
    host.worker.after_run()
    assert calls[2:] == [("response", b"reply"), ("response", b"reply"), ("end_run", None)]


# ---------------------------------------------------------------------------------------------- timings


def test_print_per_block_timings(chains):
    """Per-1024-block ``process`` time of each LV2 chain (and of each mastering stage)."""
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((1, BLOCK))).astype(np.float32)
    lines = []
    targets = list(chains.items()) + [(f"  {e.name}", Chain([e])) for e in chains["lv2_mastering"].effects]
    for name, chain in targets:
        th = np.array([p.default_normalized for p in chain.trainable_params])
        for _ in range(5):
            chain.process(x, th)
        n, best = 40, float("inf")
        for _ in range(3):  # best of 3 (the machine is shared)
            t0 = time.perf_counter()
            for _ in range(n):
                chain.process(x, th)
            best = min(best, (time.perf_counter() - t0) / n)
        lines.append(f"{name:<22} {best * 1e6:8.1f} us / {BLOCK}-sample block (P={chain.num_params})")
        assert best < 0.1
    print("\nLV2 per-block process time:\n" + "\n".join(lines))
