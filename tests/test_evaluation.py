"""`afx evaluate`'s scoring: metrics against references, the identity baseline, table and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from afx_lightning.evaluation import evaluate, paired_files, score
from afx_lightning.metrics import loudness_lufs, multi_resolution_stft_distance

SR = 22050


def _noise(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal((1, int(seconds * SR)))).astype(np.float32)


def test_mrstft_is_zero_for_equal_signals_and_grows_with_difference():
    x = torch.from_numpy(_noise(1.0, 0))
    assert multi_resolution_stft_distance(x, x).item() == pytest.approx(0.0, abs=1e-6)
    near = multi_resolution_stft_distance(x + 0.01 * torch.from_numpy(_noise(1.0, 1)), x).item()
    far = multi_resolution_stft_distance(torch.from_numpy(_noise(1.0, 2)), x).item()
    assert 0 < near < far


def test_loudness_follows_gain():
    x = _noise(3.0, 0)
    assert loudness_lufs(0.5 * x, SR) - loudness_lufs(x, SR) == pytest.approx(-6.02, abs=0.05)


def test_score_of_a_copy_is_zero_and_gain_shows_only_in_loudness():
    x = _noise(2.0, 3)
    same = score(x, x, SR)
    assert same["d_mfcc"] == pytest.approx(0, abs=1e-6) and same["mrstft"] == pytest.approx(0, abs=1e-6)
    louder = score(2 * x, x, SR)
    assert louder["loudness_diff_lu"] == pytest.approx(6.02, abs=0.05)
    assert louder["d_mfcc"] == pytest.approx(0, abs=1e-6)  # d_MFCC is level-matched, as in the official code


def _folder(tmp_path, n=2):
    for sub in ("test/input", "test/target"):
        (tmp_path / sub).mkdir(parents=True)
    for i in range(n):
        x = _noise(2.0, 10 + i)
        sf.write(tmp_path / f"test/input/f{i}.wav", x.T, SR)
        sf.write(tmp_path / f"test/target/f{i}.wav", (0.25 * np.tanh(8 * x)).T, SR)
    return tmp_path


def test_evaluate_reports_model_and_identity_per_file_and_mean(tmp_path):
    root = _folder(tmp_path)
    calls = []

    def render(audio, rate):  # a "model" that knows the answer
        calls.append(rate)
        return 0.25 * np.tanh(8 * audio)

    report = evaluate(paired_files(root, "test"), render)
    assert calls == [SR, SR] and [f.name for f in report.files] == ["f0.wav", "f1.wav"]
    for f in report.files:
        assert f.model["mrstft"] < 1e-2 < f.identity["mrstft"]  # (16-bit files: not exactly 0)
    table = report.table()
    assert "mean" in table and "f1.wav" in table
    data = report.to_json()
    json.dumps(data)  # serialisable
    assert data["mean"]["model"]["d_mfcc"] < data["mean"]["identity"]["d_mfcc"]


def test_missing_target_and_bad_audio_name_the_file(tmp_path):
    root = _folder(tmp_path)
    (root / "test/target/f1.wav").unlink()
    with pytest.raises(ValueError, match=r"f1.wav: no target file"):
        paired_files(root, "test")
    (root / "test/target/f1.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match=r"f1.wav: not a readable audio file"):
        evaluate(paired_files(root, "test"), lambda a, r: a)


# ------------------------------------------------------------------------------------------ latency (issue 10, 2)


def _pure_delay_model(num_eval_slots: int = 2):
    import functools

    from afx_lightning.blackbox import FxConfig
    from afx_lightning.encoders import SmallEncoder
    from afx_lightning.module import DeepAFx
    from afx_lightning.testing import pure_delay_chain

    return DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4),
        fx=FxConfig(chain=pure_delay_chain, workers=1),
        num_slots=1,
        num_eval_slots=num_eval_slots,
        plateau_patience=0,
    )


def test_validation_scores_a_pure_delay_like_the_identity_once_its_latency_is_compensated():
    """A chain that only delays by 480 samples (ZaMaximX2's lookahead), target = input: val/d_mfcc must be the
    identity's (0), the logged clips line up sample for sample. Joining the raw outputs scored 0.036 here."""
    from lightning.pytorch import Trainer

    from afx_lightning.data import ArrayClips, AudioFxDataModule, Clip, synthesize

    rng = np.random.default_rng(0)
    audio = [synthesize(rng, 3 * SR, SR)[None].astype(np.float32) for _ in range(2)]
    clips = ArrayClips([Clip(f"c{i}", x, x.copy()) for i, x in enumerate(audio)], SR)
    dm = AudioFxDataModule.from_clips(
        clips, clips, batch_size=1, val_batch_size=2, steps_per_epoch=1, context_size=2048
    )
    model = _pure_delay_model()
    assert model.fx.latency == 480
    trainer = Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[]
    )
    try:
        metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    finally:
        model.fx.close()
    print(
        f"\n[latency] pure 480-sample delay: val/d_mfcc {metrics['val/d_mfcc']:.4f} "
        f"(identity {metrics['val/d_mfcc_identity']:.4f})"
    )
    assert metrics["val/d_mfcc_identity"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["val/d_mfcc"] == pytest.approx(0.0, abs=1e-4)
    for clip in model.evaluated_clips().values():  # what the media logger writes and plots
        assert clip["output"].shape == clip["target"].shape == clip["input"].shape
        torch.testing.assert_close(clip["output"], clip["target"], rtol=0, atol=1e-7)


def test_afx_evaluate_scores_a_pure_delay_like_the_identity(tmp_path):
    """``afx evaluate`` renders through the Processor, which compensates the latency: the same 0 as identity."""
    from afx_lightning.data import synthesize
    from afx_lightning.inference import Processor

    audio = synthesize(np.random.default_rng(1), 2 * SR, SR)[None].astype(np.float32)
    for name in ("input", "target"):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / "a.wav", audio[0], SR, subtype="FLOAT")
    model = _pure_delay_model(num_eval_slots=1)
    processor = Processor(model, context_size=2048)
    report = evaluate(paired_files(tmp_path, None), lambda a, r: processor.process_array(a, r)[0])
    assert report.files[0].identity["d_mfcc"] == pytest.approx(0.0, abs=1e-6)
    assert report.files[0].model["d_mfcc"] == pytest.approx(0.0, abs=1e-4)
