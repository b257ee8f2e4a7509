"""The benchmarks keep running (smoke test: valid JSON with the reported fields; no timing asserted)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_all_quick_prints_combined_json(tmp_path):
    """``run_all.py --quick``: every benchmark runs in its own subprocess; one JSON object with all their fields.

    Also the fx_layer smoke test: run_all's ``fx_layer.py --chain pb_mb_compressor --quick`` (the script's defaults
    plus ``--workers-sweep 1,2 --fd-ratio``) is parsed from its stdout as run by itself, so its own fields are
    checked here rather than in a second run of the same benchmark."""
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--markdown", "--json-out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| Benchmark | Setting | Result |" in run.stdout
    combined = json.loads(out.read_text())
    for key in ("machine", "cpu_count", "results"):
        assert key in combined, key
    results = combined["results"]
    assert not [name for name, r in results.items() if "error" in r], results
    fx = results["fx_layer:pb_mb_compressor"]
    for key in ("fx_step_s", "plugin_cpu_s", "overhead", "per_slot_step_s", "speedup_vs_per_slot_processes"):
        assert fx[key] > 0, key
    assert not any(fx["details"]["fx_fault_stats"].values())  # a benchmark with faults measures nothing
    assert [w["workers"] for w in fx["worker_scaling"]] == [1, 2]
    assert all(w["fx_step_s"] > 0 for w in fx["worker_scaling"])
    assert fx["fd_vs_spsa_step_ratio"] > 0
    assert fx["fd_vs_spsa_theory"] == pytest.approx((2 * 50 + 1) / 3)
    for chain in ("calf_mb_compressor", "lv2_mastering"):  # measured when the LV2 plugins are installed
        r = results[f"fx_layer:{chain}"]
        assert "skipped" in r or (r["fx_step_s"] > 0 and r["per_slot_step_s"] is None), chain
    assert results["train_step"]["step_s"] > 0
    inference = results["inference"]
    assert inference["encoder"] == "small"
    assert inference["realtime_factor"] > 0
    speed = inference["speed"]
    assert speed["predict_s"] > 0 and speed["render_s"] > 0 and speed["dropped_frames"] == 0
    memory = inference["memory"]
    assert memory["short"]["peak_rss_mb"] > 0 and memory["long"]["peak_rss_mb"] > 0
    assert memory["long"]["seconds"] == pytest.approx(3 * memory["short"]["seconds"])
    assert isinstance(memory["grows_with_length"], bool)


def test_fx_layer_default_json_unchanged_without_new_flags():
    """The sweep/FD extras only appear when asked for (argument parsing only; nothing is run)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fx_layer
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    args = fx_layer.parse_args([])
    assert args.workers_sweep is None and not args.fd_ratio
    args = fx_layer.parse_args(["--workers-sweep", "1,2", "--fd-ratio"])
    assert args.workers_sweep == [1, 2] and args.fd_ratio and args.fd_chain == "pb_mastering" and args.fd_batch == 4


def _fidelity_modules():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fidelity
        import fidelity_data
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return fidelity, fidelity_data


def _built_set(task: str, root: Path) -> tuple[Path, dict]:
    """A fidelity task's tiny set built under ``root`` and its manifest; skips where its Debian packages are missing."""
    _, fidelity_data = _fidelity_modules()
    missing = fidelity_data.missing_packages(task)
    if missing:
        pytest.skip(f"the fidelity {task} set needs Debian packages: apt-get install {' '.join(missing)}")
    data = fidelity_data.ensure(task, root, quick=True)
    return data, json.loads((data / "manifest.json").read_text())


def test_the_oracle_searches_a_chain_declared_inside_the_recipe(tmp_path):
    """breath.yaml declares its chain inline: the oracle's ``afx match --chain`` gets it as a file that builds the
    same chain, and the JSON labels it by its declared name; a registered name passes through as it is."""
    fidelity, _ = _fidelity_modules()
    from afx_lightning.blackbox.layer import describe_chain, resolve_chain

    label, arg = fidelity.recipe_chain(ROOT / "recipes" / "breath.yaml", tmp_path)
    assert label == "cut_tilt" and Path(arg) == tmp_path / "chain.yaml"
    info = describe_chain(resolve_chain(arg), 22050, 1024)
    assert info.num_params == 2
    assert fidelity.recipe_chain(ROOT / "recipes" / "amp.yaml", tmp_path) == ("pb_mb_compressor", "pb_mb_compressor")


def test_fidelity_options_and_splits():
    """--quick shrinks every budget; splits and per-file draws are fixed by name (argument parsing only)."""
    fidelity, fidelity_data = _fidelity_modules()
    full = fidelity.parse_args([])
    assert full.tasks == ["amp", "breath", "mastering"] and full.batch_size == 16 and full.lr == pytest.approx(2e-3)
    quick = fidelity.parse_args(["--quick", "--tasks", "amp", "--budget-s", "600"])
    assert quick.tasks == ["amp"] and quick.budget_s <= 45 and quick.max_steps and quick.oracle_files == 1
    assert fidelity.max_time(330) == "00:00:05:30"
    names = [f"024_Nylon_Guitar_{i:02d}" for i in range(40)]
    splits = [fidelity_data.split_by_hash(n) for n in names]
    assert splits == [fidelity_data.split_by_hash(n) for n in names] and set(splits) == {"train", "val", "test"}
    assert fidelity.finite({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}
    # --fit-args: an experiment on top of the recipe, appended after the benchmark's own options (the last wins)
    args = fidelity.parse_args(["--fit-args=--model.lr 0.01 '--trainer.callbacks.init_args.start={a: 0}'"])
    fit = fidelity.fit_command(Path("recipes/amp.yaml"), Path("set"), Path("work"), Path("run"), args)
    assert fit[-3:] == ["--model.lr", "0.01", "--trainer.callbacks.init_args.start={a: 0}"]
    assert fit.index("--model.lr") < len(fit) - 3  # the benchmark's own lr comes first
    # --encoder: the CPU encoder with its centre features by default, the streaming one without any
    assert "--model.encoder.centre" in fit and "afx_lightning.encoders.SmallEncoder" in fit
    tcn = fidelity.fit_command(
        Path("r.yaml"), Path("s"), Path("w"), Path("r"), fidelity.parse_args(["--encoder", "tcn"])
    )
    assert "afx_lightning.encoders.TemporalConvEncoder" in tcn and "--model.encoder.centre" not in tcn


def test_fidelity_reuses_an_earlier_oracle_only_for_the_same_chain_and_test_files(tmp_path):
    fidelity, _ = _fidelity_modules()
    manifest = {"counts": {"train": 2, "val": 1, "test": 2}, "processor": {"chain": ["zamtube"]}}
    orc = {"mean": {"d_mfcc": 0.1}, "files": [{"file": "a.wav"}, {"file": "b.wav"}]}
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"tasks": {"amp": {"chain": "pb_mb_compressor", "oracle": orc, "data": manifest}}}))
    pairs = [(Path("a.wav"), None), (Path("b.wav"), None)]
    reused = fidelity.reused_oracle(earlier, "amp", "pb_mb_compressor", manifest, pairs)
    assert reused["mean"] == {"d_mfcc": 0.1} and reused["reused_from"] == str(earlier)
    assert fidelity.reused_oracle(earlier, "amp", "pb_mb_gate", manifest, pairs) is None  # another chain
    assert fidelity.reused_oracle(earlier, "amp", "pb_mb_compressor", manifest, pairs[:1]) is None  # other files
    rebuilt = {**manifest, "processor": {"chain": ["other"]}}
    assert fidelity.reused_oracle(earlier, "amp", "pb_mb_compressor", rebuilt, pairs) is None  # other data
    assert fidelity.reused_oracle(earlier, "breath", "pb_mb_gate", manifest, pairs) is None  # no such task


@pytest.mark.slow
def test_fidelity_amp_build_and_quick_benchmark(tmp_path):
    """The amp set built from freepats notes through ZamTube (tiny subset), then ``fidelity.py --quick``: the real
    CLI trains, evaluates and matches; every score is finite and the identity is far from the target."""
    import soundfile as sf

    data, manifest = _built_set("amp", tmp_path / "data")
    assert all(manifest["counts"][s] > 0 for s in ("train", "val", "test")), manifest["counts"]
    for split in ("train", "val", "test"):
        for inp in (data / split / "input").glob("*.wav"):
            tgt = data / split / "target" / inp.name
            a, b = sf.info(str(inp)), sf.info(str(tgt))
            assert (a.samplerate, a.channels, a.frames) == (22050, 1, b.frames) and b.samplerate == 22050
            x, y = sf.read(str(inp)), sf.read(str(tgt))
            assert not (x[0] == y[0]).all()  # the tube changed it

    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fidelity.py"),
            "--quick",
            "--tasks",
            "amp",
            "--data-dir",
            str(tmp_path / "data"),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    amp = result["tasks"]["amp"]
    assert amp["chain"] and amp["recipe"] == "recipes/amp.yaml"
    for metric in ("d_mfcc", "mrstft", "loudness_diff_lu"):
        for column in ("model", "identity", "oracle"):
            value = amp["scores"][metric][column]
            assert isinstance(value, float) and math.isfinite(value), (metric, column, value)
    assert amp["scores"]["d_mfcc"]["identity"] > 0.01 and amp["scores"]["mrstft"]["identity"] > 0.1
    assert amp["train"]["steps"] > 0 and amp["train"]["wall_s"] > 0 and amp["oracle"]["files"]
    assert run.stderr.strip().splitlines()[-1].startswith("fidelity: amp: d_MFCC")
    # the recipe's matched start ran inside the fit's time budget, from the training excerpts
    fit_log = (tmp_path / "work" / "amp" / "fit.log").read_text(errors="replace")
    assert "MatchedStart: static setting from" in fit_log, fit_log[-2000:]


@pytest.mark.slow
def test_breath_set_and_its_band_ceiling(tmp_path, capsys):
    """The breath set (tiny subset: speech with recorded events in its pauses, target the speech alone), then
    ``band_ceiling.py`` on it: the manifest places events in every file, and ideal per-frame gains in 1/3-octave
    bands come far closer to the target than the identity, while the gate's 4 bands cannot (its d_MFCC stays
    at least 80% of the identity's)."""
    data, manifest = _built_set("breath", tmp_path / "data")
    assert manifest["files"] and all(f["events"] for f in manifest["files"])
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import band_ceiling
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert band_ceiling.main(["--data-dir", str(tmp_path / "data"), "--quick", "--learn-steps", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    learned = result["learned_by_backprop"]  # the encoder trained onto the ideal octave cuts (a smoke run here)
    assert learned["steps"] == 5 and learned["bands"] == "8 octave bands"
    assert 0 < learned["d_mfcc"] < 1 and 0 < learned["mrstft"] < 10
    identity, bands = result["identity"], result["bands"]
    assert result["files"] == manifest["counts"]["test"] > 0
    third = bands["32 third-octave bands"]
    assert third["d_mfcc"] < 0.6 * identity["d_mfcc"] and third["mrstft"] < 0.6 * identity["mrstft"]
    assert bands["4 bands (pb_mb_gate defaults)"]["d_mfcc"] > 0.8 * identity["d_mfcc"]


def test_inference_command_times_afx_process_with_and_without_lightning(tmp_path):
    """``inference.py --command``: ``afx process`` in fresh interpreters; the command itself imports no Lightning,
    the baseline does, and both report a wall time that includes their start-up."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inference.py"), "--command", "--seconds", "2", "--encoder", "small"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    now, before = result["variants"]["now"], result["variants"]["with_lightning_import"]
    assert (now["lightning_imported"], before["lightning_imported"]) == (False, True)
    for row in (now, before):
        assert row["wall_s"] > row["processing_s"] > 0 and row["startup_s"] == row["wall_s"] - row["processing_s"]
    assert result["speedup_vs_with_lightning_import"] == before["wall_s"] / now["wall_s"]
