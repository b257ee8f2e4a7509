"""Train-time input augmentation, ``afx predict`` (same code path as ``afx process``) and an end-to-end
folder run: fit -> checkpoint -> ``afx process`` on a 3-minute file -> ``afx evaluate`` against identity."""

from __future__ import annotations

import functools
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_data import make_dm, schedule, take
from test_training import cli_command, cli_env

from afx_lightning.data import AudioFxDataModule
from afx_lightning.data.datasets import DataError, render, synthesize

SR = 22050
AUG = dict(augment_noise_snr_db=[10.0, 20.0], augment_gain_db=[-6.0, 6.0])


# ------------------------------------------------------------------------------------------------ augmentation


def _raw_rows(dm: AudioFxDataModule, batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the batch would hold without augmentation (cut from the clips by clip and position)."""
    n, before, width = dm.frame_size, dm.context_before, dm.context_size
    frames, contexts, targets = [], [], []
    for c, pos in zip(batch["clip"].tolist(), batch["position"].tolist()):
        clip = dm.train_clips[c]
        frames.append(clip.input[:, pos : pos + n])
        targets.append(clip.target[:, pos : pos + n])
        ctx = np.zeros((clip.num_channels, width), dtype=np.float32)
        lo = pos - before
        a, b = max(lo, 0), min(lo + width, clip.num_samples)
        ctx[:, a - lo : b - lo] = clip.input[:, a:b]
        contexts.append(ctx)
    return np.stack(frames), np.stack(contexts), np.stack(targets)


def test_augmentation_changes_train_inputs_deterministically_and_never_targets_or_validation():
    plain, one, two = make_dm(seed=3), make_dm(seed=3, **AUG), make_dm(seed=3, **AUG)
    a, b, p = take(one, 12), take(two, 12), take(plain, 12)
    assert schedule(a) == schedule(p)  # augmentation does not touch the schedule
    for x, y, raw in zip(a, b, p):
        for key in ("context", "frame", "target"):
            assert torch.equal(x[key], y[key]), key  # same seed: identical batches
        frame, context, target = _raw_rows(one, x)
        assert np.array_equal(x["target"].numpy(), target)  # the target stays the target
        assert np.array_equal(raw["frame"].numpy(), frame)
        assert not np.allclose(x["frame"].numpy(), frame)
        # the frame is the context's middle: both see the same augmented signal
        n, before = one.frame_size, one.context_before
        assert np.allclose(x["context"][..., before : before + n], x["frame"])
        # padding outside the clip stays zero
        assert np.array_equal(x["context"].numpy() == 0, context == 0)
    other = take(make_dm(seed=4, **AUG), 1)[0]
    assert not torch.equal(other["frame"], a[0]["frame"])

    # a clip played again (another slot or a later deal) gets another draw
    gains = {}
    for batch in a:
        frame, _, _ = _raw_rows(one, batch)
        ratio = (batch["frame"].numpy() / frame).reshape(len(frame), -1).mean(axis=1)
        for c, fresh, r, _slot in zip(batch["clip"].tolist(), batch["fresh"].tolist(), ratio, batch["slot"].tolist()):
            if fresh:
                gains.setdefault(c, []).append(round(float(r), 3))
    assert any(len(set(v)) > 1 for v in gains.values()), gains

    # validation is never augmented
    for dm in (one, plain):
        dm.setup("validate")
    for x, y in zip(one.val_dataloader(), plain.val_dataloader()):
        for key in ("context", "frame", "target"):
            assert torch.equal(x[key], y[key])


def test_augmented_stream_resumes_on_identical_batches():
    whole = take(make_dm(seed=5, **AUG), 14)
    first = make_dm(seed=5, **AUG)
    head = take(first, 9)
    state = first.state_dict()  # no trainer: the live stream, right after batch 9
    resumed = make_dm(seed=5, **AUG)
    resumed.load_state_dict(state)
    tail = take(resumed, 5)
    for x, y in zip(head + tail, whole):
        for key in ("context", "frame", "target", "clip", "position"):
            assert torch.equal(x[key], y[key]), key


@pytest.mark.parametrize("bad", [[5.0], [20.0, 10.0], ["a", "b"]])
def test_bad_augmentation_ranges_fail_with_one_line(bad):
    with pytest.raises(DataError, match="augment_noise_snr_db"):
        AudioFxDataModule(augment_noise_snr_db=bad)


# ------------------------------------------------------------------------------------------------ predict


def test_predict_needs_files_and_an_existing_output_dir(tmp_path):
    with pytest.raises(DataError, match="predict_files is empty"):
        AudioFxDataModule(predict_output_dir=str(tmp_path)).setup("predict")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(100, dtype=np.float32), SR)
    with pytest.raises(DataError, match="predict_output_dir .* does not exist"):
        AudioFxDataModule(predict_files=[str(wav)], predict_output_dir=str(tmp_path / "nope")).setup("predict")
    with pytest.raises(DataError, match="predict_output_dir is not set"):
        AudioFxDataModule(predict_files=[str(wav)]).setup("predict")
    with pytest.raises(DataError, match="does not exist"):
        AudioFxDataModule(predict_files=[str(tmp_path / "x.wav")], predict_output_dir=str(tmp_path)).setup("predict")


PREDICT_CONFIG = """
trainer:
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks: []
model:
  encoder:
    class_path: afx_lightning.encoders.SmallEncoder
    init_args: {width: 8}
  fx: {chain: pb_mb_compressor, workers: 1}
  plateau_patience: 0
data:
  dataset: demo
  batch_size: 2
  val_batch_size: 1
  context_size: 8192
"""


def _fit_small(ckpt: Path) -> None:
    """Two training steps in-process, saved with trainer.save_checkpoint (shared with tests/test_inference.py)."""
    from afx_lightning.testing import fit_tiny_checkpoint

    fit_tiny_checkpoint(ckpt)


def _run(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(*map(str, args), script="afx"),
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_afx_predict_writes_what_afx_process_writes(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    _fit_small(ckpt)
    rng = np.random.default_rng(7)
    a = tmp_path / "a.wav"
    b = tmp_path / "b.wav"
    sf.write(a, 0.3 * synthesize(rng, int(2.3 * 44100), 44100), 44100, subtype="FLOAT")  # another rate
    sf.write(b, np.stack([synthesize(rng, int(1.7 * SR), SR)] * 2, axis=1), SR, subtype="PCM_16")  # stereo
    # in a sub-folder: RunConfigSaver copies --config files into the run folder (here the cwd, no logger) and
    # fails with SameFileError when the config already lies there (a lightning_cli.py issue, reported)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "cfg.yaml").write_text(PREDICT_CONFIG)
    out = tmp_path / "out"
    out.mkdir()

    pred = _run(
        "predict",
        "--config",
        "cfg/cfg.yaml",
        "--ckpt_path",
        ckpt,
        "--data.predict_files",
        f"[{a},{b}]",
        "--data.predict_output_dir",
        out,
        cwd=tmp_path,
    )
    assert pred.returncode == 0, pred.stderr[-3000:]
    for src in (a, b):
        proc = _run("process", "--ckpt", ckpt, src, tmp_path / f"ref_{src.name}", "--no-progress", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got, ref = sf.read(out / src.name, always_2d=True), sf.read(tmp_path / f"ref_{src.name}", always_2d=True)
        info_in, info_out = sf.info(str(src)), sf.info(str(out / src.name))
        assert got[0].shape == ref[0].shape == (info_in.frames, info_in.channels)
        assert got[1] == ref[1] == info_in.samplerate and info_out.subtype == info_in.subtype
        assert np.array_equal(got[0], ref[0]), np.abs(got[0] - ref[0]).max()

    again = _run(
        "predict",
        "--config",
        "cfg/cfg.yaml",
        "--ckpt_path",
        ckpt,
        "--data.predict_files",
        f"[{a}]",
        "--data.predict_output_dir",
        out,
        cwd=tmp_path,
    )
    assert again.returncode != 0 and "already exists" in again.stderr
    empty = _run(
        "predict", "--config", "cfg/cfg.yaml", "--ckpt_path", ckpt, "--data.predict_output_dir", out, cwd=tmp_path
    )
    assert empty.returncode != 0 and "predict_files is empty" in empty.stderr.strip().splitlines()[-1]
    missing = _run(
        "predict",
        "--config",
        "cfg/cfg.yaml",
        "--ckpt_path",
        ckpt,
        "--data.predict_files",
        f"[{a}]",
        "--data.predict_output_dir",
        tmp_path / "nope",
        cwd=tmp_path,
    )
    assert missing.returncode != 0 and "does not exist" in missing.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------ end to end


def write_known_answer_folder(root: Path, seed: int = 1, spread: float = 1.0) -> np.ndarray:
    """train/val/test input+target WAVs: synthesized inputs, targets through pb_mb_compressor held at the demo
    task's base point for ``seed`` moved ``spread`` of the way from the defaults (as the known-answer test)."""
    from afx_lightning.effects.params import defaults_normalized
    from afx_lightning.registry import build_chain

    chain = build_chain("pb_mb_compressor", sample_rate=SR, block_size=1024)
    try:
        defaults = defaults_normalized(chain.params).astype(np.float64)
        goal = np.random.default_rng([seed, 0xBA5E]).uniform(0.0, 1.0, chain.num_params)
        theta = (defaults + spread * (goal - defaults)).astype(np.float32)
        sizes = {"train": (8, 1.0), "val": (2, 1.0), "test": (2, 3.0)}
        for split, (count, seconds) in sizes.items():
            for sub in ("input", "target"):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, ("train", "val", "test").index(split), i])
                total = int(seconds * SR * (1.0 + 0.25 * rng.uniform(-1, 1)))
                x = synthesize(rng, total, SR)[None]
                y = render(chain, x, np.repeat(theta[None], -(-total // 1024), axis=0), 1024)
                sf.write(root / split / "input" / f"{split}{i}.wav", x[0], SR, subtype="FLOAT")
                sf.write(root / split / "target" / f"{split}{i}.wav", y[0], SR, subtype="FLOAT")
    finally:
        chain.close()
    return theta


@pytest.mark.slow
def test_folder_fit_then_process_a_long_file_and_evaluate_beats_identity(tmp_path):
    from lightning.pytorch import Trainer, seed_everything

    from afx_lightning.blackbox import FxConfig
    from afx_lightning.cli import main as afx_main
    from afx_lightning.encoders import SmallEncoder
    from afx_lightning.module import DeepAFx

    t0 = time.monotonic()
    root = tmp_path / "data"
    write_known_answer_folder(root)
    steps, batch = 120, 8
    seed_everything(0)
    dm = AudioFxDataModule(
        dataset="folder",
        root=str(root),
        batch_size=batch,
        val_batch_size=2,
        steps_per_epoch=steps,
        context_size=8192,
        seed=1,
    )
    # K=2 SPSA directions per row: with K=1, 120 steps beat identity for 3 of 4 direction seeds (seed 0: d_MFCC
    # 0.091 vs 0.080); with K=2 for 4 of 4 (0.045-0.064), so the test checks the path, not one seed's luck.
    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=8),
        fx=FxConfig(chain="pb_mb_compressor", workers=2, num_perturbations=2, seed=0),
        num_slots=batch,
        num_eval_slots=2,
        lr=2e-3,
        plateau_patience=0,
    )
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        callbacks=[],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    model.fx.close()
    t1 = time.monotonic()

    long_in, long_out = tmp_path / "long.wav", tmp_path / "long_out.wav"
    rng = np.random.default_rng(11)
    sf.write(long_in, synthesize(rng, 180 * 44100, 44100), 44100, subtype="PCM_16")  # 3 minutes, another rate
    assert afx_main(["process", "--ckpt", str(ckpt), str(long_in), str(long_out), "--no-progress"]) == 0
    info = sf.info(str(long_out))
    assert (info.samplerate, info.frames, info.channels) == (44100, 180 * 44100, 1)
    t2 = time.monotonic()

    report = tmp_path / "eval.json"
    assert (
        afx_main(["evaluate", "--ckpt", str(ckpt), "--data", str(root), "--split", "test", "--json", str(report)]) == 0
    )
    mean = json.loads(report.read_text())["mean"]
    t3 = time.monotonic()
    print(
        f"\n[e2e] d_MFCC model {mean['model']['d_mfcc']:.4f} vs identity {mean['identity']['d_mfcc']:.4f}; "
        f"MR-STFT model {mean['model']['mrstft']:.3f} vs identity {mean['identity']['mrstft']:.3f}\n"
        f"[e2e] wall: data+fit {t1 - t0:.1f} s, process 3 min {t2 - t1:.1f} s, evaluate {t3 - t2:.1f} s"
    )
    assert mean["model"]["d_mfcc"] < mean["identity"]["d_mfcc"]
    assert mean["model"]["mrstft"] < mean["identity"]["mrstft"]
