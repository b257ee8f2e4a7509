"""Entry-point discovery (shipped and third-party) and the ``afx effects`` commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from afx_lightning import registry
from afx_lightning.cli import main

thirdparty = pytest.importorskip(
    "afx_example_plugin", reason="install tests/thirdparty/afx_example_plugin (make install does)"
)


def test_shipped_chains_register_through_entry_points():
    names = registry.chain_names()
    assert {"pb_mb_compressor", "pb_mb_gate", "pb_mastering"} <= set(names)


def test_a_third_party_chain_and_recipe_are_discovered_by_name():
    assert "example_tilt_drive" in registry.chain_names()
    chain = registry.build_chain("example_tilt_drive", sample_rate=22050, block_size=1024)
    assert chain.param_names == ["tilt_freq", "tilt_gain", "drive"]
    x = 0.1 * np.random.default_rng(0).standard_normal((1, 1024)).astype(np.float32)
    quiet = chain.process(x, np.array([0.5, 0.5, 0.0]))
    chain.reset()
    driven = chain.process(x, np.array([0.5, 0.5, 1.0]))
    assert np.abs(driven).max() > 2 * np.abs(quiet).max()  # the chain really runs its plugins
    path = registry.recipe_path("example_tilt_drive")
    assert path.name == "tilt_drive.yaml" and "example_tilt_drive" in path.read_text()
    assert "example_tilt_drive" in registry.recipe_names()


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(registry.UnknownNameError) as err:
        registry.build_chain("tube_amp_9000", sample_rate=22050, block_size=1024)
    message = str(err.value)
    assert "unknown chain 'tube_amp_9000'" in message
    assert "pb_mb_compressor" in message and "example_tilt_drive" in message
    with pytest.raises(
        registry.UnknownNameError, match="unknown recipe 'nope'; registered recipes: .*example_tilt_drive"
    ):
        registry.recipe_path("nope")


def test_effects_list_shows_name_backend_and_p(capsys):
    assert main(["effects", "list"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["pb_mb_compressor"][1:3] == ["pedalboard", "21"]
    assert lines["pb_mb_gate"][2] == "17"
    assert lines["pb_mastering"][2] == "50"
    assert lines["example_tilt_drive"][2] == "3"


def test_effects_show_prints_the_parameter_table(capsys):
    assert main(["effects", "show", "pb_mb_compressor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pb_mb_compressor: 21 trainable parameters")
    row = next(line for line in out.splitlines() if line.startswith("freq1 "))
    assert row.split()[1:4] == ["300", "3000", row.split()[3]] and "Hz" in row


def test_effects_show_unknown_name_is_one_line_on_stderr(capsys):
    assert main(["effects", "show", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("afx effects: unknown chain 'nope'")


def test_the_console_scripts_are_installed():
    bin_dir = Path(sys.executable).parent
    for script in ("afx", "lightning"):
        assert (bin_dir / script).exists(), f"console script {script!r} missing next to {sys.executable}"
    listing = subprocess.run([str(bin_dir / "afx"), "effects", "list"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "pb_mastering" in listing.stdout


def test_a_recipe_with_the_flat_model_options_names_their_new_keys(tmp_path):
    """Recipes written before the model was composed from parts fail in one line naming the new key."""
    from afx_lightning.lightning_cli import check_moved_options, run_lightning_cli

    old = tmp_path / "old.yaml"
    old.write_text(
        "model:\n  encoder:\n    class_path: afx_lightning.encoders.SmallEncoder\n  lr: 0.001\n  max_shift: 300\n"
    )
    with pytest.raises(ValueError, match=r"^model\.max_shift moved to model\.loss\.max_shift \(.*old\.yaml\)$"):
        check_moved_options(["fit", "--config", str(old)])
    with pytest.raises(ValueError, match=r"^model\.spsa_seed moved to model\.fx\.seed"):
        check_moved_options(["fit", "--model.spsa_seed=3"])
    check_moved_options(["fit", "--model.fx.seed", "3", "--model.lr", "0.1"])  # the new keys and unmoved ones pass
    for name in registry.recipe_names():  # every shipped recipe uses the new layout
        check_moved_options(["fit", "--config", str(registry.recipe_path(name))])
    assert run_lightning_cli(["fit", "--config", str(old), "--print_config"]) == 1
