"""Any installed plugin, no code: ``afx effects inspect``, ``afx effects list --installed`` and chains declared in YAML.

Against the real plugins: Zam's VST3s (``zam-plugins``) and LSP's LV2 limiter (``lsp-plugins-lv2``); tests skip
naming the package where it is absent. The slow test trains the issue's three-plugin chain through ``afx fit``
and processes a file with its checkpoint after the YAML file is gone.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from afx_lightning import registry
from afx_lightning.blackbox.layer import resolve_chain
from afx_lightning.cli import main
from afx_lightning.effects import lilv_ctypes as lv
from afx_lightning.effects.declared import DeclarationError, DeclaredChain

ROOT = Path(__file__).resolve().parents[1]
AFX = Path(sys.executable).parent / "afx"
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
SHORT = ROOT / "tests" / "configs" / "quickstart_short.yaml"
SR, BLOCK = 22050, 1024
ZAMCOMP = Path("/usr/lib/vst3/ZamComp.vst3")
ZAMTUBE = Path("/usr/lib/vst3/ZamTube.vst3")
ZAMAXIM = Path("/usr/lib/vst3/ZaMaximX2.vst3")
LIMITER = "http://lsp-plug.in/plugins/lv2/limiter_mono"

needs_zam = pytest.mark.skipif(not ZAMCOMP.exists(), reason="needs zam-plugins (sudo apt-get install zam-plugins)")
needs_lsp = pytest.mark.skipif(
    not lv.has_plugin(LIMITER), reason="needs lsp-plugins-lv2 and liblilv-0-0 (sudo apt-get install lsp-plugins-lv2)"
)

#: The issue's chain, verbatim.
CHAIN_YAML = """\
name: my_chain
plugins:
  - pedalboard: Gain
    train: {gain_db: [-12, 12]}          # name -> [min, max] in the plugin's units
  - vst3: /usr/lib/vst3/ZamComp.vst3
    train: [Threshold, Ratio]            # the plugin's own names; ranges from the plugin
    fixed: {Attack: 10}
  - lv2: http://lsp-plug.in/plugins/lv2/limiter_mono
    train: [th]
"""


def table(out: str, header: str = "parameter") -> dict[str, list[str]]:
    """The parameter table of ``afx effects inspect``, by first column (cells split on 2+ spaces)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header + " "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def snippet_of(out: str) -> dict:
    """The chain declaration ``afx effects inspect`` ends with."""
    text = out.split("# a chain declaration", 1)[1].split("\n", 1)[1]
    return yaml.safe_load(text)


def inspect(capsys, target: str) -> str:
    assert main(["effects", "inspect", target]) == 0
    return capsys.readouterr().out


def chain_file(tmp_path: Path, text: str, name: str = "chain.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------------------------------ inspect


@needs_zam
def test_inspect_vst3_lists_threshold_and_ratio_with_their_ranges(capsys):
    out = inspect(capsys, str(ZAMCOMP))
    rows = table(out)
    # parameter, key, kind, min, max, default, unit, scale, values
    assert rows["Threshold"][1:6] == ["threshold_db", "continuous", "-80", "0", "0"] and rows["Threshold"][6] == "dB"
    assert rows["Ratio"][1:6] == ["ratio", "continuous", "1", "20", "4"] and rows["Ratio"][-1] == "log"
    assert rows["Attack"][-2:] == ["ms", "log"]  # times are spread logarithmically
    assert rows["Sidechain"][2] == "toggle" and rows["Sidechain"][-1] == "0, 1"
    assert rows["Current Program"][2] == "choice" and "PoppySnare" in rows["Current Program"][-1]
    assert "Gain Reduction" not in rows and "Gain Reduction" in out  # a meter: named as not settable
    assert "channels: mono (1 in, 1 out)" in out and "latency: 0 samples at 22050 Hz" in out
    snippet = snippet_of(out)  # ready to paste: it builds
    assert snippet["plugins"][0]["vst3"] == str(ZAMCOMP) and {"Threshold", "Ratio"} <= set(
        snippet["plugins"][0]["train"]
    )
    chain = DeclaredChain(snippet)(SR, BLOCK)
    assert "Threshold" in chain.param_names
    chain.close()


@needs_zam
def test_inspect_vst3_reports_latency_and_stereo_bus(capsys):
    out = inspect(capsys, "ZaMaximX2")  # a bundle name is looked up in the VST3 folders
    assert "latency: 480 samples at 22050 Hz" in out and "stereo (2 in, 2 out)" in out and "dual mono" in out


@needs_lsp
def test_inspect_lv2_lists_ports_by_symbol_with_ranges_kinds_and_latency(capsys):
    out = inspect(capsys, LIMITER)
    rows = table(out)
    # parameter, kind, min, max, default, unit, scale, note
    assert rows["th"][1:5] == ["continuous", "0.003981", "1", "1"] and rows["th"][-2:] == ["log", "Threshold"]
    assert rows["lk"][-3:] == ["ms", "log", "Lookahead"]
    assert rows["boost"][1] == "toggle"
    assert rows["mode"][1] == "choice" and "1=Herm Wide" in rows["mode"][-1]  # an enumeration with its labels
    assert "ilm" not in rows  # meters (control outputs) are not parameters
    assert "latency: 110 samples at 22050 Hz" in out and "mono (1 in, 1 out)" in out
    assert "th" in snippet_of(out)["plugins"][0]["train"]


def test_inspect_pedalboard_builtin_suggests_ranges_and_lists_choices(capsys):
    rows = table(inspect(capsys, "Compressor"))
    assert rows["threshold_db"][1:5] == ["continuous", "-60*", "0*", "0"]
    assert rows["ratio"][1:4] == ["continuous", "1*", "20*"] and rows["ratio"][-1] == "log"
    out = inspect(capsys, "LadderFilter")
    assert table(out)["mode"][1] == "choice" and "HPF24" in table(out)["mode"][-1]
    assert snippet_of(out)["plugins"][0]["train"]["cutoff_hz"] == [20.0, 20000.0]


def test_inspect_unknown_target_is_one_line(capsys):
    line = one_error_line(capsys, ["effects", "inspect", "NoSuchPlugin"])
    assert "NoSuchPlugin" in line and "Compressor" in line and "--installed" in line


def test_list_installed_names_vst3_bundles_and_lv2_plugins(capsys):
    assert main(["effects", "list", "--installed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VST3 (") and "/usr/lib/vst3" in out and "\nLV2" in out
    if ZAMCOMP.exists():
        assert re.search(r"^ZamComp\s+/usr/lib/vst3/ZamComp\.vst3$", out, re.M)
    if lv.has_plugin(LIMITER):
        assert re.search(rf"^{re.escape(LIMITER)}\s+LSP Limiter Mono$", out, re.M)


# ------------------------------------------------------------------------------------------------ declarations


@needs_zam
@needs_lsp
def test_the_issue_chain_builds_with_plugin_ranges_scales_and_latency(tmp_path, capsys):
    path = chain_file(tmp_path, CHAIN_YAML)
    chain = registry.build_chain(str(path), SR, BLOCK)
    try:
        assert chain.name == "my_chain"
        assert chain.param_names == ["gain.gain_db", "zamcomp.Threshold", "zamcomp.Ratio", "limiter_mono.th"]
        specs = {p.name: p for p in chain.params}
        assert (specs["gain.gain_db"].min, specs["gain.gain_db"].max) == (-12, 12)
        assert (
            specs["zamcomp.Threshold"].min,
            specs["zamcomp.Threshold"].max,
            specs["zamcomp.Threshold"].scale.value,
        ) == (-80, 0, "linear")  # dB stays linear in dB
        assert specs["zamcomp.Ratio"].scale.value == "log" and specs["zamcomp.Attack"].fixed == 10
        assert specs["limiter_mono.th"].min == pytest.approx(0.003981) and specs["limiter_mono.th"].scale.value == "log"
        assert chain.latency == 110  # the LSP limiter's look-ahead, as its latency port reports it
        out = chain.process(np.zeros((1, BLOCK), np.float32), np.full(4, 0.5, np.float32))
        assert out.shape == (1, BLOCK) and np.isfinite(out).all()
    finally:
        chain.close()
    # the same table through the CLI, from the file
    assert main(["effects", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: 4 trainable parameters, latency 110 samples")


@needs_zam
@needs_lsp
def test_a_declared_chain_travels_as_its_declaration_and_rebuilds_without_the_file(tmp_path):
    path = chain_file(tmp_path, CHAIN_YAML)
    factory = resolve_chain(str(path))  # what BlackBoxLayer / afx match hand to workers
    assert isinstance(factory, DeclaredChain)
    assert pickle.loads(pickle.dumps(factory)).declaration == factory.declaration  # picklable by description
    stored = registry.chain_declaration(factory, SR)  # what a checkpoint keeps: plain data, ranges written out
    assert stored["plugins"][1]["train"]["Threshold"] == {"range": [-80.0, 0.0], "scale": "linear", "default": 0.0}
    assert torch.load(_saved(tmp_path, stored), weights_only=True) == stored
    path.unlink()
    x = (0.3 * np.random.default_rng(0).standard_normal((1, 4 * BLOCK))).astype(np.float32)
    theta = np.array([0.7, 0.6, 0.5, 0.4], np.float32)
    a, b = factory(SR, BLOCK), registry.build_chain(stored, SR, BLOCK)
    try:

        def fields(chain):
            return [(p.name, p.min, p.max, p.default, p.scale, p.fixed) for p in chain.params]

        assert fields(a) == fields(b)
        ya = np.concatenate([a.process(x[:, i : i + BLOCK], theta) for i in range(0, x.shape[1], BLOCK)], axis=1)
        yb = np.concatenate([b.process(x[:, i : i + BLOCK], theta) for i in range(0, x.shape[1], BLOCK)], axis=1)
        np.testing.assert_allclose(ya, yb, atol=1e-6)
    finally:
        a.close()
        b.close()


def _saved(tmp_path: Path, value: dict) -> Path:
    out = tmp_path / "decl.pt"
    torch.save(value, out)
    return out


@needs_zam
def test_vst3_latency_is_read_from_the_plugin_and_is_the_stream_delay(tmp_path):
    path = chain_file(
        tmp_path,
        f"""
        plugins:
          - vst3: {ZAMAXIM}
            train: [Threshold]
    """,
    )
    chain = registry.build_chain(str(path), SR, BLOCK)
    try:
        assert chain.latency == 480
        x = np.zeros((1, 2 * BLOCK), np.float32)
        x[0, 10] = 0.01  # far below the ceiling: passed through, delayed
        theta = np.ones(1, np.float32)  # threshold 0 dB
        y = np.concatenate([chain.process(x[:, i : i + BLOCK], theta) for i in (0, BLOCK)], axis=1)
        assert int(np.argmax(np.abs(y[0]))) == 10 + chain.latency
    finally:
        chain.close()


def test_builtin_latency_is_measured_and_is_the_stream_delay():
    decl = {"plugins": [{"pedalboard": "BrickwallLimiter", "train": ["ceiling_db"], "fixed": {"lookahead_ms": 10}}]}
    chain = registry.build_chain(decl, SR, BLOCK)
    try:
        assert chain.latency == round(0.010 * SR)  # its look-ahead: pedalboard reports it nowhere
        x = np.zeros((1, 2 * BLOCK), np.float32)
        x[0, 10] = 0.01
        y = np.concatenate([chain.process(x[:, i : i + BLOCK], np.ones(1, np.float32)) for i in (0, BLOCK)], axis=1)
        assert int(np.argmax(np.abs(y[0]))) == 10 + chain.latency
    finally:
        chain.close()


def test_scales_and_ranges_can_be_overridden_and_inline_mappings_work():
    decl = {
        "plugins": [
            {"pedalboard": "LowpassFilter", "train": {"cutoff_frequency_hz": None}},
            {
                "pedalboard": "Gain",
                "name": "trim",
                "train": {"gain_db": {"range": [-6, 6], "scale": "linear", "default": 0}},
            },
            {"pedalboard": "Compressor", "train": {"ratio": {"range": [1, 8], "scale": "linear"}}},
        ]
    }
    chain = registry.build_chain(decl, SR, BLOCK)  # a mapping, as model.fx.chain inline in a recipe
    try:
        specs = {p.name: p for p in chain.params}
        cutoff = specs["lowpassfilter.cutoff_frequency_hz"]
        assert cutoff.scale.value == "log" and cutoff.max == pytest.approx(0.45 * SR)  # suggested range, below Nyquist
        assert (specs["trim.gain_db"].min, specs["trim.gain_db"].default) == (-6, 0)
        assert specs["compressor.ratio"].scale.value == "linear"  # the override wins over the inferred log
    finally:
        chain.close()


@needs_lsp
def test_scale_db_takes_a_range_in_db_for_a_linear_gain_port():
    decl = {
        "plugins": [
            {
                "lv2": LIMITER,
                "train": {"th": {"range": [-30, 0], "scale": "db"}},
                "fixed": {"boost": False, "alr": "off", "mode": "Exp Wide"},
            }
        ]
    }
    chain = registry.build_chain(decl, SR, BLOCK)
    try:
        effect = chain.effects[0]
        chain.process(np.zeros((1, BLOCK), np.float32), np.zeros(1, np.float32))  # th at -30 dB
        assert effect.control_value("th") == pytest.approx(10 ** (-30 / 20), rel=1e-4)
        assert effect.control_value("boost") == 0 and effect.control_value("mode") == 5  # by label
    finally:
        chain.close()


@needs_zam
def test_fixed_choices_and_toggles_are_set_by_label(tmp_path):
    path = chain_file(
        tmp_path,
        f"""
        plugins:
          - vst3: {ZAMTUBE}
            train: [Tube Drive]
            fixed: {{Tone Stack Model: 1981 JCM-2000 Lead, Insane Boost: on}}
          - pedalboard: LadderFilter
            train: {{cutoff_hz: [100, 8000]}}
            fixed: {{mode: HPF12}}
    """,
    )
    chain = registry.build_chain(str(path), SR, BLOCK)
    try:
        tube, ladder = (e._graph.plugin for e in chain.effects)
        assert str(tube.tone_stack_model) == "1981 JCM-2000 Lead" and float(tube.insane_boost) == 1.0
        assert ladder.mode.name == "HPF12"
    finally:
        chain.close()


# ------------------------------------------------------------------------------------------------ one-line errors


@needs_zam
def test_an_unknown_vst3_name_fails_in_one_line_listing_the_plugins_names(tmp_path, capsys):
    path = chain_file(tmp_path, CHAIN_YAML.replace("[Threshold, Ratio]", "[Treshold, Ratio]"), "bad.yaml")
    line = one_error_line(capsys, ["effects", "show", str(path)])
    assert str(path) in line and "plugin 2" in line and "'Treshold'" in line
    assert all(name in line for name in ("Threshold", "Ratio", "Attack", "Makeup", "Knee"))
    with pytest.raises(DeclarationError, match=r"no parameter 'Treshold'; its parameters: .*Threshold"):
        registry.build_chain(str(path), SR, BLOCK)


@needs_lsp
def test_an_unknown_lv2_symbol_fails_in_one_line_listing_the_ports(tmp_path, capsys):
    path = chain_file(tmp_path, f"plugins:\n  - lv2: {LIMITER}\n    train: [threshold]\n")
    line = one_error_line(capsys, ["effects", "show", str(path)])
    assert "'threshold'" in line and "th, knee" in line and str(path) in line


def test_an_unknown_builtin_attribute_fails_in_one_line(tmp_path, capsys):
    path = chain_file(tmp_path, "plugins:\n  - pedalboard: Gain\n    train: {gain: [-12, 12]}\n")
    line = one_error_line(capsys, ["effects", "show", str(path)])
    assert "'gain'" in line and "gain_db" in line


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plugins: []", "'plugins' must be a non-empty list"),
        ("plugins:\n  - pedalboard: Gain\n    trian: [gain_db]", "unknown keys ['trian']"),
        ("plugins:\n  - pedalboard: Gain\n    vst3: x.vst3", "exactly one of"),
        ("plugins:\n  - pedalboard: BrickwallLimiter\n    train: [lookahead_ms]", "no range from the plugin; give one"),
        ("plugins:\n  - pedalboard: Gain\n    train: {gain_db: [5, -5]}", "max > min"),
        ("plugins:\n  - pedalboard: LadderFilter\n    train: [mode]", "is a choice"),
        ("plugins:\n  - pedalboard: LadderFilter\n    fixed: {mode: BPF48}", "is a choice of"),
        ("plugins:\n  - pedalboard: Gain\n    fixed: {gain_db: 3}", "trains no parameter"),
    ],
)
def test_bad_declarations_fail_in_one_line_naming_the_file(tmp_path, capsys, text, expected):
    path = chain_file(tmp_path, text + "\n")
    line = one_error_line(capsys, ["effects", "show", str(path)])
    assert line.startswith("afx effects: ") and str(path) in line and expected in line


@needs_zam
def test_a_vst3_range_outside_the_plugin_is_refused(tmp_path):
    path = chain_file(tmp_path, f"plugins:\n  - vst3: {ZAMCOMP}\n    train: {{Threshold: [-100, 0]}}\n")
    with pytest.raises(DeclarationError, match=r"range \[-100, 0\] lies outside the plugin's \[-80, 0\]"):
        registry.build_chain(str(path), SR, BLOCK)


def test_a_checkpoint_declaration_loads_plugin_files_only_from_the_plugin_folders(tmp_path, monkeypatch):
    from afx_lightning.inference import InferenceError, _chain_source

    ok = {"plugins": [{"vst3": str(ZAMCOMP), "train": ["Threshold"]}, {"pedalboard": "Gain", "train": ["gain_db"]}]}
    assert _chain_source(ok, tmp_path / "m.ckpt") == ok  # data: accepted without importing anything
    rogue = {"plugins": [{"vst3": str(tmp_path / "evil.vst3"), "train": ["x"]}]}
    with pytest.raises(InferenceError, match=r"evil\.vst3, outside the VST3 folders"):
        _chain_source(rogue, tmp_path / "m.ckpt")
    monkeypatch.setenv("VST3_PATH", str(tmp_path))  # a folder the user put on the path is trusted
    assert _chain_source(rogue, tmp_path / "m.ckpt") == rogue
    with pytest.raises(InferenceError, match="'plugins' must be a non-empty list"):
        _chain_source({"plugins": "Gain"}, tmp_path / "m.ckpt")


def test_a_missing_declaration_file_is_one_line(tmp_path, capsys):
    line = one_error_line(capsys, ["effects", "show", str(tmp_path / "nope.yaml")])
    assert "nope.yaml does not exist" in line


# ------------------------------------------------------------------------------------------------ train + process


def _env(cwd: Path) -> dict:
    env = dict(os.environ)
    env.pop("AFX_DEBUG", None)
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(cwd),
        WANDB_CACHE_DIR=str(cwd / ".wandb-cache"),
        WANDB_CONFIG_DIR=str(cwd / ".wandb-config"),
        WANDB_DATA_DIR=str(cwd / ".wandb-data"),
    )
    return env


def _afx(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    assert AFX.exists(), f"console script afx is not installed next to {sys.executable}"
    return subprocess.run(
        [str(AFX), *map(str, args)], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@needs_zam
@needs_lsp
def test_the_yaml_chain_trains_through_afx_fit_and_its_checkpoint_processes_without_the_file(tmp_path):
    (tmp_path / "chain.yaml").write_text(CHAIN_YAML)
    short = [
        "--trainer.max_steps",
        "4",
        "--data.steps_per_epoch",
        "2",
        "--data.batch_size",
        "2",
        "--data.val_batch_size",
        "1",
        "--data.demo_clips",
        "2",
        "--data.demo_val_clips",
        "1",
        "--data.demo_seconds",
        "0.5",
        "--trainer.logger",
        "false",
    ]
    fit = _afx(
        "fit",
        "--config",
        QUICKSTART,
        "--config",
        SHORT,
        "--model.fx.chain",
        "chain.yaml",
        "--data.demo_chain",
        "chain.yaml",
        *short,
        cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "Traceback" not in fit.stderr
    ckpt = tmp_path / "root" / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["afx_model"]
    assert stored["chain"]["name"] == "my_chain" and stored["num_params"] == 4  # the declaration, not the path
    assert stored["param_names"] == ["gain.gain_db", "zamcomp.Threshold", "zamcomp.Ratio", "limiter_mono.th"]

    (tmp_path / "chain.yaml").unlink()
    x = (0.2 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, SR)
    process = _afx(
        "process", "--ckpt", ckpt, "in.wav", "out.wav", "--no-progress", "--automation", "auto.csv", cwd=tmp_path
    )
    assert process.returncode == 0, process.stderr[-3000:]
    y, rate = sf.read(tmp_path / "out.wav")
    assert rate == SR and y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() > 1e-3
    header = (tmp_path / "auto.csv").read_text().splitlines()[0]
    assert "zamcomp.Threshold" in header and "limiter_mono.th" in header
