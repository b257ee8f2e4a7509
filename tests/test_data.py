"""The data side: per-slot consecutive frames, determinism, exact resume, evaluation coverage, loaders."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter

from afx_lightning.data import (
    ArrayClips,
    AudioFxDataModule,
    Clip,
    DataError,
    DemoClips,
    PairedFolder,
    SlotStream,
)
from afx_lightning.effects import Chain, FunctionEffect, ParamSpec

N = 16  # tiny frames and contexts keep every test fast
CONTEXT = 64
BEFORE = (CONTEXT - N) // 2
SR = 8000


def _smooth_gain(audio: np.ndarray, values: dict, state: dict) -> np.ndarray:
    """A stateful toy effect: one-pole low-pass, then gain."""
    a = values["smooth"]
    zi = state.get("zi", np.zeros((audio.shape[0], 1)))
    y, state["zi"] = lfilter([1.0 - a], [1.0, -a], audio, axis=1, zi=zi)
    return (values["gain"] * y).astype(np.float32)


def toy_chain(sample_rate: int, block_size: int) -> Chain:
    params = [ParamSpec("gain", 0.25, 2.0, 1.0), ParamSpec("smooth", 0.0, 0.9, 0.5)]
    return Chain([FunctionEffect("toy", _smooth_gain, params, sample_rate)], name="toy")


def ramp_clips(lengths: list[int], name: str = "ramps") -> ArrayClips:
    """Clip i's input sample t is 1000 i + t + 1 (never 0, so zero padding is visible); target = -input."""
    clips = []
    for i, n in enumerate(lengths):
        x = (1000.0 * i + np.arange(n, dtype=np.float32) + 1.0)[None, :]
        clips.append(Clip(f"c{i}", x, -x))
    return ArrayClips(clips, SR, name)


TRAIN_LENGTHS = [3 * N + 5, 5 * N, 2 * N + 1, 7 * N + 3, N - 2, 4 * N + 9]  # one clip shorter than a frame
VAL_LENGTHS = [2 * N, 4 * N + 3, 3 * N, N - 1, 6 * N + 2, 1 * N, 5 * N]


def make_dm(seed: int = 0, batch_size: int = 4, steps_per_epoch: int = 7, **kwargs) -> AudioFxDataModule:
    dm = AudioFxDataModule.from_clips(
        ramp_clips(TRAIN_LENGTHS, "train"),
        ramp_clips(VAL_LENGTHS, "val"),
        batch_size=batch_size,
        val_batch_size=3,
        steps_per_epoch=steps_per_epoch,
        frame_size=N,
        context_size=CONTEXT,
        seed=seed,
        **kwargs,
    )
    dm.setup("fit")
    return dm


def take(dm: AudioFxDataModule, count: int) -> list[dict]:
    """``count`` training batches, re-iterating the loader across epoch ends as Lightning does."""
    loader, out = dm.train_dataloader(), []
    while len(out) < count:
        for batch in loader:
            out.append(batch)
            if len(out) == count:
                break
    return out


def schedule(batches: list[dict]) -> list[tuple]:
    return [(b["slot"].tolist(), b["clip"].tolist(), b["position"].tolist(), b["fresh"].tolist()) for b in batches]


# ---------------------------------------------------------------------------------------------------- streams


def test_default_context_geometry():
    dm = AudioFxDataModule(frame_size=1024, context_size=40960)
    assert dm.context_before == 19968
    assert dm.context_size - dm.context_before == 20992


def test_train_slots_play_consecutive_frames_with_correct_audio():
    dm = make_dm()
    clips = dm.train_clips
    last: dict[int, tuple[int, int]] = {}
    saw_left_pad = saw_right_pad = False
    for batch in take(dm, 40):
        assert batch["slot"].tolist() == list(range(4))
        assert batch["context"].shape == (4, 1, CONTEXT) and batch["frame"].shape == (4, 1, N)
        assert batch["context"].dtype == torch.float32 and batch["slot"].dtype == torch.int64
        for r, (slot, c, pos, fresh) in enumerate(
            zip(batch["slot"].tolist(), batch["clip"].tolist(), batch["position"].tolist(), batch["fresh"].tolist())
        ):
            clip = clips[c]
            assert clip.num_samples >= N, "a clip shorter than a frame was played"
            assert pos % N == 0 and pos + N <= clip.num_samples
            if fresh:
                assert pos == 0
                if slot in last:  # the previous clip was played to its last full frame
                    prev_clip, prev_pos = last[slot]
                    assert prev_pos == (clips[prev_clip].num_samples // N - 1) * N
            else:
                assert last[slot] == (c, pos - N)
            last[slot] = (c, pos)
            np.testing.assert_array_equal(batch["frame"][r].numpy(), clip.input[:, pos : pos + N])
            np.testing.assert_array_equal(batch["target"][r].numpy(), clip.target[:, pos : pos + N])
            padded = np.pad(clip.input, ((0, 0), (BEFORE, CONTEXT)))
            context = batch["context"][r].numpy()
            np.testing.assert_array_equal(context, padded[:, pos : pos + CONTEXT])
            np.testing.assert_array_equal(context[:, BEFORE : BEFORE + N], batch["frame"][r].numpy())
            saw_left_pad |= pos < BEFORE and context[0, 0] == 0
            saw_right_pad |= pos - BEFORE + CONTEXT > clip.num_samples and context[0, -1] == 0
    assert saw_left_pad and saw_right_pad


def test_streams_are_deterministic_per_seed():
    counts = [3, 5, 2, 7, 4]

    def run(seed):
        return [(s.clips.tolist(), s.frames.tolist()) for s, _ in zip(SlotStream(counts, 4, "train", seed), range(30))]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert schedule(take(make_dm(seed=3), 12)) == schedule(take(make_dm(seed=3), 12))


def test_train_deck_deals_every_clip_before_repeating():
    stream = SlotStream([2, 2, 2, 2, 2], 1, "train", seed=0)
    dealt = [int(s.clips[0]) for s in (next(stream) for _ in range(20)) if s.fresh[0]]
    assert sorted(dealt[:5]) == [0, 1, 2, 3, 4] and sorted(dealt[5:10]) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------- resume


class FakeTrainer:
    """What the data module reads of a trainer: the optimizer steps taken (and rank 0 of 1)."""

    def __init__(self, global_step: int, accumulate: int = 1):
        self.global_step, self.accumulate_grad_batches = global_step, accumulate
        self.global_rank, self.world_size = 0, 1


@pytest.mark.parametrize("consumed", [3, 5, 7])
def test_resume_without_lightning_replays_exactly(consumed):
    reference = take(make_dm(), consumed + 12)

    first = make_dm()
    loader = first.train_dataloader()
    batches = iter(loader)
    for _ in range(consumed + 1):  # the model took `consumed` batches, the loader prefetched one more
        next(batches, None)
    first.trainer = FakeTrainer(consumed)
    state = first.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)

    resumed = make_dm()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    after = take(resumed, 12)
    assert schedule(after) == schedule(reference[consumed:])
    epoch_rest = make_dm()
    epoch_rest.load_state_dict(state)
    assert len(list(epoch_rest.train_dataloader())) == 7 - consumed % 7, "epoch boundaries moved on resume"
    for a, b in zip(after, reference[consumed:]):
        for key in ("context", "frame", "target"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_state_dict_follows_trainer_global_step_not_the_prefetching_loader():
    dm = make_dm()
    batches = iter(dm.train_dataloader())
    for _ in range(3):
        next(batches)
    dm.trainer = FakeTrainer(2)
    assert dm.state_dict()["train_steps"] == 2
    dm.trainer = FakeTrainer(2, accumulate=2)
    assert dm.state_dict()["train_steps"] == 4


def test_resume_with_other_data_fails_clearly():
    dm = make_dm()
    take(dm, 2)
    with pytest.raises(DataError, match="data.seed 0, this run has .* seed 3"):
        make_dm(seed=3).load_state_dict(dm.state_dict())


def test_resume_with_other_batch_size_fails_clearly():
    dm = make_dm()
    take(dm, 2)
    with pytest.raises(DataError, match="slots"):
        make_dm(batch_size=5).load_state_dict(dm.state_dict())


def test_resume_through_lightning_checkpoint(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(N, 1)
            self.seen: list[tuple] = []
            self.val_seen: list[tuple] = []

        def training_step(self, batch, batch_idx):
            self.seen.append(
                (tuple(batch["clip"].tolist()), tuple(batch["position"].tolist()), tuple(batch["fresh"].tolist()))
            )
            return self.layer(batch["frame"]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.val_seen.append((tuple(batch["clip"].tolist()), tuple(batch["position"].tolist())))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def fit(ckpt_path=None, callbacks=()):
        model = Tiny()
        trainer = pl.Trainer(
            max_steps=10,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=list(callbacks),
            enable_checkpointing=bool(callbacks),
        )
        trainer.fit(model, datamodule=make_dm(steps_per_epoch=4), ckpt_path=ckpt_path)
        return model

    checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    uninterrupted = fit(callbacks=[checkpoints])
    assert len(uninterrupted.seen) == 10
    assert (
        uninterrupted.val_seen[: len(uninterrupted.val_seen) // 2]
        == uninterrupted.val_seen[len(uninterrupted.val_seen) // 2 :]
    )
    (mid_epoch,) = tmp_path.glob("*step=6*.ckpt")  # epoch 1 covers steps 4..7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = fit(ckpt_path=str(mid_epoch))
    assert not [w for w in caught if "resum" in str(w.message) and "ModelCheckpoint" not in str(w.message)]
    assert resumed.seen == uninterrupted.seen[6:]


# ---------------------------------------------------------------------------------------------------- evaluation


def test_validation_plays_every_clip_once_and_repeats():
    dm = make_dm()
    loader = dm.val_dataloader()
    runs = [schedule(list(loader)) for _ in range(2)]
    assert runs[0] == runs[1]
    assert len(loader) == len(runs[0])
    frames: dict[int, list[tuple[int, int]]] = {}
    for slots, clip_ids, positions, fresh in runs[0]:
        assert len(slots) <= 3 and slots == sorted(slots) and set(slots) <= {0, 1, 2}
        for slot, c, pos, f in zip(slots, clip_ids, positions, fresh):
            frames.setdefault(c, []).append((slot, pos))
            assert f == (pos == 0)
    playable = [i for i, n in enumerate(VAL_LENGTHS) if n >= N]
    assert sorted(frames) == playable
    for c, played in frames.items():
        assert len({slot for slot, _ in played}) == 1, "a clip moved between slots"
        assert [pos for _, pos in played] == [k * N for k in range(VAL_LENGTHS[c] // N)]
    assert len(runs[0][-1][0]) < 3, "this layout should end with a partial batch"


# ---------------------------------------------------------------------------------------------------- folders


def write_pair(root: Path, name: str, x: np.ndarray, y: np.ndarray | None = None, sr: int = SR, split: str = "train"):
    for sub, data in (("input", x), ("target", y if y is not None else 0.5 * x)):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
        sf.write(root / split / sub / name, data, sr, subtype="FLOAT")


def test_folder_loads_pairs_and_downmixes(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (300, 2)).astype(np.float32)
    write_pair(tmp_path, "a.wav", stereo)
    write_pair(tmp_path, "b.wav", stereo[:, 0])
    write_pair(tmp_path, "c.wav", stereo[:, 0], stereo[:290, 0])  # 10 samples apart: trimmed
    clips = PairedFolder(tmp_path, "train", sample_rate=SR)
    assert [c.name for c in clips] == ["a", "b", "c"]
    np.testing.assert_allclose(clips[0].input[0], stereo.mean(axis=1), atol=1e-7)
    assert clips[0].input.dtype == np.float32 and clips[2].num_samples == 290


def test_folder_skips_silent_clips(tmp_path):
    write_pair(tmp_path, "loud.wav", np.full(100, 0.1, np.float32))
    write_pair(tmp_path, "quiet.wav", np.zeros(100, np.float32))
    with pytest.warns(UserWarning, match="quiet.wav"):
        assert [c.name for c in PairedFolder(tmp_path, "train", sample_rate=SR)] == ["loud"]


@pytest.mark.parametrize("problem", ["missing target", "channels", "not audio", "length", "nan", "no split"])
def test_folder_errors_name_the_file(tmp_path, problem):
    x = np.full(200, 0.1, np.float32)
    write_pair(tmp_path, "ok.wav", x)
    bad = tmp_path / "train" / "input" / "bad.wav"
    expected = [str(bad)]
    channels = 1
    if problem == "missing target":
        sf.write(bad, x, SR)
        expected = [str(tmp_path / "train" / "target" / "bad.wav"), "missing target"]
    elif problem == "channels":  # other rates are resampled, mono is spread, but 3 channels into 2 is no guess of ours
        channels = 2
        write_pair(tmp_path, "bad.wav", np.full((200, 3), 0.1, np.float32))
        expected = [str(bad), "3 channels", "data.channels is 2"]
    elif problem == "not audio":
        write_pair(tmp_path, "bad.wav", x)
        bad.write_text("this is not a wave file")
    elif problem == "length":
        write_pair(tmp_path, "bad.wav", np.full(3000, 0.1, np.float32), x)
        expected = [str(bad), "3000", "200"]
    elif problem == "nan":
        write_pair(tmp_path, "bad.wav", np.where(np.arange(200) == 7, np.nan, x).astype(np.float32))
        expected = [str(bad), "NaN"]
    else:
        expected = [str(tmp_path / "val" / "input")]
    with pytest.raises(DataError) as err:
        len(PairedFolder(tmp_path, "val" if problem == "no split" else "train", sample_rate=SR, channels=channels))
    message = str(err.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_folder_root_must_be_set():
    with pytest.raises(DataError, match=r"data\.root is not set"):
        AudioFxDataModule(dataset="folder").setup("fit")
    with pytest.raises(DataError, match=r"data\.root"):
        len(PairedFolder("/nonexistent/afx-data", "train"))
    with pytest.raises(DataError, match=r"data\.dataset"):
        AudioFxDataModule(dataset="nope")


def test_folder_datamodule_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            write_pair(tmp_path, f"{i}.wav", rng.uniform(-0.5, 0.5, 5 * N + 3).astype(np.float32), split=split)
    dm = AudioFxDataModule(
        dataset="folder",
        root=str(tmp_path),
        sample_rate=SR,
        batch_size=2,
        val_batch_size=2,
        frame_size=N,
        context_size=CONTEXT,
        steps_per_epoch=3,
    )
    dm.setup("fit")
    assert dm.num_channels == 1 and dm.sample_rate == SR
    assert "train 3 clips" in dm.describe() and "val 2 clips" in dm.describe()
    assert len(list(dm.train_dataloader())) == 3
    with pytest.raises(DataError, match="test"):
        dm.setup("test")


# ---------------------------------------------------------------------------------------------------- demo


def test_demo_clips_are_a_deterministic_known_answer_task():
    def make(seed):
        return DemoClips(toy_chain, num_clips=2, clip_seconds=0.5, sample_rate=SR, seed=seed, block_size=256)

    a, b, other = make(0), make(0), make(1)
    for ca, cb in zip(a, b):
        np.testing.assert_array_equal(ca.input, cb.input)
        np.testing.assert_array_equal(ca.target, cb.target)
    assert not np.allclose(a[0].input[:, :1000], other[0].input[:, :1000])
    chain = toy_chain(SR, 256)
    for clip, theta in zip(a, a.trajectories):
        assert theta.shape == (-(-clip.num_samples // 256), 2)
        assert theta.min() >= 0 and theta.max() <= 1
        assert np.abs(np.diff(theta, axis=0)).max() < 0.05, "the hidden trajectory is not smooth"
        assert np.ptp(theta, axis=0).min() > 0, "the hidden trajectory does not vary"
        assert np.abs(clip.target - clip.input).mean() > 1e-3 * np.abs(clip.input).mean()
        assert np.abs(clip.input).max() > 0.05
        # the trajectory is the answer: re-rendering the input with it reproduces the target
        chain.reset()
        blocks = [
            chain.process(
                np.pad(clip.input[:, k * 256 : (k + 1) * 256], ((0, 0), (0, max(0, (k + 1) * 256 - clip.num_samples)))),
                t,
            )
            for k, t in enumerate(theta)
        ]
        np.testing.assert_allclose(np.concatenate(blocks, axis=1)[:, : clip.num_samples], clip.target, atol=1e-6)


def test_demo_datamodule_shares_the_task_across_splits(monkeypatch):
    import afx_lightning.registry as registry

    monkeypatch.setattr(registry, "get_chain_factory", lambda name: toy_chain)
    dm = AudioFxDataModule(
        dataset="demo",
        demo_chain="toy",
        sample_rate=SR,
        frame_size=N,
        context_size=CONTEXT,
        demo_clips=2,
        demo_val_clips=1,
        demo_seconds=0.2,
        batch_size=2,
        steps_per_epoch=2,
    )
    dm.setup("fit")
    train, val = dm.train_clips, dm.val_clips
    np.testing.assert_array_equal(train.base, val.base)
    assert not np.array_equal(train[0].input[:, :500], val[0].input[:, :500])
    assert train.trajectories[0].shape[0] == -(-train[0].num_samples // N)
    assert len(list(dm.train_dataloader())) == 2 and len(list(dm.val_dataloader())) >= 1


def test_a_truncated_wav_in_a_paired_folder_is_named(tmp_path):
    """The one whole-file reader checks the WAV header: libsndfile alone would read a cut file as shorter."""
    import soundfile as sf

    from afx_lightning.data.datasets import read_audio

    path = tmp_path / "cut.wav"
    sf.write(path, np.zeros(4096, np.float32), 22050, subtype="FLOAT")
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DataError, match=r"cut.wav: truncated WAV"):
        read_audio(path)
