"""One error hierarchy: user problems are AfxError (one line, exit 2); anything else is a bug and propagates."""

from __future__ import annotations

import pytest

from afx_lightning import cli, evaluation, inference, registry
from afx_lightning.data.datasets import DataError
from afx_lightning.effects.base import PluginUnavailable
from afx_lightning.effects.declared import DeclarationError
from afx_lightning.errors import AfxError, MissingFileError, RegistryError, UsageError
from afx_lightning.inference import InferenceError
from afx_lightning.match import MatchError
from afx_lightning.registry import UnknownNameError


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (DataError, ValueError),
        (DeclarationError, ValueError),
        (MatchError, ValueError),
        (UsageError, ValueError),
        (PluginUnavailable, RuntimeError),
        (UnknownNameError, KeyError),
        (MissingFileError, FileNotFoundError),
        (RegistryError, TypeError),
        (InferenceError, Exception),
    ],
)
def test_every_user_error_is_an_afx_error_and_keeps_the_base_its_callers_catch(cls, builtin):
    assert issubclass(cls, AfxError) and issubclass(cls, builtin)
    assert str(cls("one line")) == "one line"  # KeyError would quote it


def _one_line(capsys, argv: list[str], prog: str) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_one_bad_input_per_command_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing"
    wav = tmp_path / "in.wav"
    wav.write_bytes(b"")
    assert "missing.ckpt" in _one_line(
        capsys, ["process", "--ckpt", str(missing) + ".ckpt", str(wav), str(tmp_path / "o.wav")], "afx process"
    )
    assert "no WAV files" in _one_line(capsys, ["evaluate", "--ckpt", "x.ckpt", "--data", str(missing)], "afx evaluate")
    assert "missing.wav" in _one_line(
        capsys, ["match", "--chain", "pb_mb_compressor", str(missing) + ".wav", str(wav)], "afx match"
    )
    assert "'nope'" in _one_line(capsys, ["effects", "show", "nope"], "afx effects")
    assert "does not exist" in _one_line(capsys, ["effects", "show", str(missing) + ".yaml"], "afx effects")
    assert "pedalboard built-in" in _one_line(capsys, ["effects", "inspect", "NoSuchPlugin"], "afx effects")
    assert "'nope'" in _one_line(capsys, ["recipes", "show", "nope"], "afx recipes")


def _bug(*args, **kwargs):
    raise ValueError("a bug, not a user error")


@pytest.mark.parametrize(
    "target, argv",
    [
        ((evaluation, "paired_files"), ["evaluate", "--ckpt", "x.ckpt", "--data", "."]),
        ((inference, "load_inference_model"), ["process", "--ckpt", "x.ckpt", "in.wav", "out.wav"]),
        ((registry, "recipe_path"), ["recipes", "show", "quickstart"]),
        ((registry, "build_chain"), ["effects", "show", "pb_mb_compressor"]),
    ],
)
def test_an_unexpected_exception_is_not_swallowed_as_a_one_liner(monkeypatch, target, argv):
    monkeypatch.setattr(*target, _bug)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(argv)
