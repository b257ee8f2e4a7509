"""The data sources behind ``data.dataset`` (one class per name, one protocol) and the prediction writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from afx_lightning.data import AudioFxDataModule, DataError
from afx_lightning.data.audio_files import write_audio_atomic
from afx_lightning.data.sources import (
    SOURCES,
    DataSource,
    DemoSource,
    FileSource,
    FolderSource,
    GivenSource,
    SourceOptions,
    make_source,
)
from afx_lightning.data.writer import FilePrediction, PredictionFileWriter, PredictOptions

ROOT = Path(__file__).resolve().parents[1]
N = 256


def _pair(root: Path, name: str, rate: int = 22050) -> None:
    for sub in ("input", "target"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        sf.write(root / sub / name, 0.1 * np.ones(4 * N, np.float32), rate)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_dataset_name_resolves_to_its_source_class(name, tmp_path):
    source = make_source(name, SourceOptions(root=str(tmp_path / "absent")))
    assert type(source) is SOURCES[name] and isinstance(source, DataSource) and source.name == name
    if isinstance(source, FileSource):
        # an absent root: the source's own missing-data line, one line naming the folder
        with pytest.raises(DataError) as err:
            source.check()
        assert "\n" not in str(err.value) and str(tmp_path / "absent") in str(err.value)
    else:
        assert AudioFxDataModule(dataset=name).source.describe().startswith(name)


def test_the_data_module_uses_the_source_its_dataset_names(tmp_path):
    _pair(tmp_path, "a.wav")
    _pair(tmp_path, "b.wav")
    dm = AudioFxDataModule(dataset="folder", root=str(tmp_path), frame_size=N, context_size=4 * N)
    assert isinstance(dm.source, FolderSource) and dm.source.align is False  # a user's pairs: taken as aligned
    assert sorted(p.input.name for p in dm.source.pairs()) == ["a.wav", "b.wav"]
    assert {p.split for p in dm.source.pairs()} == {"train", "val"}  # 2 files: one for val (split_files)
    assert dm.preprocess_options().length_tolerance == 1024 and not dm.preprocess_options().align
    demo = AudioFxDataModule(dataset="demo", demo_val_clips=0)
    assert isinstance(demo.source, DemoSource) and not demo.preprocessing.active
    with pytest.raises(DataError, match=r"^data: no val split \(data\.demo_val_clips is 0\)$"):
        _ = demo.val_clips


def test_corpus_defaults_come_from_their_source():
    daps = make_source("daps", SourceOptions())
    mixes = make_source("mixes", SourceOptions(input_dir="raw"))
    assert (daps.root, daps.input_dir, daps.target_dir, daps.align) == ("data/daps", "cleanraw", "clean", True)
    assert (mixes.root, mixes.input_dir, mixes.target_dir) == ("data/mixes", "raw", "mastered")


@pytest.mark.parametrize("bad", ["dapz", "Folder", ""])
def test_an_unknown_dataset_fails_in_one_line_listing_the_known_ones(bad):
    with pytest.raises(DataError) as err:
        AudioFxDataModule(dataset=bad)
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.dataset must be one of") and repr(bad) in message
    for name in SOURCES:
        assert repr(name) in message


def test_every_recipe_names_a_known_source():
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        assert yaml.safe_load(recipe.read_text())["data"]["dataset"] in SOURCES, recipe.name


def test_clips_given_in_code_are_their_own_source():
    from afx_lightning.data import ArrayClips, Clip

    x = np.ones((1, 4 * N), np.float32)
    dm = AudioFxDataModule.from_clips(ArrayClips([Clip("a", x, x)], 22050), frame_size=N, context_size=4 * N)
    assert isinstance(dm.source, GivenSource) and isinstance(dm.source, DataSource)
    assert len(dm.train_clips) == 1 and dm.describe().startswith("data: clips given in code")
    with pytest.raises(DataError, match=r"no val split \(none given\)"):
        _ = dm.val_clips


# ------------------------------------------------------------------------------------------------ the writer


class _Trainer:
    def __init__(self, datamodule):
        self.datamodule = datamodule


def test_the_writer_writes_atomically_in_the_inputs_format_and_releases_the_audio(tmp_path):
    src = tmp_path / "song.wav"
    sf.write(src, np.zeros(100, np.float32), 22050, subtype="PCM_16")
    (tmp_path / "out").mkdir()
    dm = AudioFxDataModule(predict_files=[str(src)], predict_output_dir=str(tmp_path / "out"))
    dm.check_predict()
    audio = np.stack([np.linspace(-1.5, 1.5, 100, dtype=np.float32)] * 2)  # stereo, 40 samples beyond full scale
    prediction = FilePrediction(str(src), audio, 44100, "PCM_16")
    PredictionFileWriter().write_on_batch_end(_Trainer(dm), None, prediction, None, None, 0)
    out = tmp_path / "out" / "song.wav"
    assert prediction.output == str(out) and prediction.audio is None and prediction.clipped_samples == 2 * 34
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 2, 100, "PCM_16")
    assert sorted(p.name for p in out.parent.iterdir()) == ["song.wav"]  # no temporary file left
    # a second run: refused before any model runs, and the writer refuses too
    with pytest.raises(DataError, match="already exists; set data.predict_overwrite"):
        dm.check_predict()
    with pytest.raises(DataError, match="already exists"):
        write_audio_atomic(out, audio, 44100, "PCM_16")
    AudioFxDataModule(
        predict_files=[str(src)], predict_output_dir=str(tmp_path / "out"), predict_overwrite=True
    ).check_predict()


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    import soundfile

    out = tmp_path / "a.wav"
    out.write_bytes(b"old")

    def broken(*args, **kwargs):
        Path(args[0]).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(soundfile, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        write_audio_atomic(out, np.zeros((1, 10), np.float32), 22050, "FLOAT", overwrite=True)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_predict_smoothing_is_left_to_the_processor_unless_set():
    assert PredictOptions().processor_args() == {}
    assert AudioFxDataModule().predict_options.processor_args() == {}  # the Processor's default, as afx process
    assert AudioFxDataModule(predict_smoothing_hz=0).predict_options.processor_args() == {"smoothing_hz": 0.0}
