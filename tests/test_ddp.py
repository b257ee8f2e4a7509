"""DDP: `afx fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu` on two CPU ranks (gloo).

Lightning's subprocess launcher re-runs the command line for rank 1 (``python <venv>/bin/afx fit ...``), so the
installed console script is what both ranks run. ``RankBatchRecorder`` (tests/helpers) writes every training
and validation batch of each rank. Checked: both ranks train, their training and validation clips do not
overlap, each rank's plugin pool has its share of the CPUs, and a resume from a mid-epoch checkpoint (written
by rank 0 only) continues both ranks' streams exactly as the uninterrupted run; each rank draws its own SPSA
directions and the rank-0 checkpoint resumes every rank's. Run with ``-s`` for timings.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_data import CONTEXT, TRAIN_LENGTHS, VAL_LENGTHS, N, ramp_clips, schedule, take
from test_training import CONFIGS, QUICKSTART, cli_command, cli_env

from afx_lightning.blackbox import FxConfig, GradientEstimator, PerturbationStream, default_num_workers
from afx_lightning.data import AudioFxDataModule
from afx_lightning.data.streams import SlotStream, shard_frame_counts
from afx_lightning.encoders import SmallEncoder
from afx_lightning.module import DeepAFx
from afx_lightning.testing import reference_chain

# ------------------------------------------------------------------------------------------------ in-process parts


class FakeTrainer:
    """What the data module reads from a trainer: rank, world size, optimizer steps."""

    def __init__(self, rank: int, world_size: int, global_step: int = 0):
        self.global_rank, self.world_size, self.global_step, self.accumulate_grad_batches = (
            rank,
            world_size,
            global_step,
            1,
        )


def rank_dm(rank: int, world_size: int, **kwargs) -> AudioFxDataModule:
    dm = AudioFxDataModule.from_clips(
        ramp_clips(TRAIN_LENGTHS, "train"),
        ramp_clips(VAL_LENGTHS, "val"),
        batch_size=2,
        val_batch_size=3,
        steps_per_epoch=5,
        frame_size=N,
        context_size=CONTEXT,
        seed=0,
        **kwargs,
    )
    dm.trainer = FakeTrainer(rank, world_size)
    dm.setup("fit")
    return dm


def test_shards_are_disjoint_round_robin_over_playable_clips():
    counts = [3, 0, 2, 5, 1, 4, 0, 2]  # clips 1 and 6 are shorter than a frame
    shards = [shard_frame_counts(counts, r, 3)[0] for r in range(3)]
    owned = [{i for i, n in enumerate(s) if n} for s in shards]
    assert owned == [{0, 4}, {2, 5}, {3, 7}]  # playable clips 0 2 3 4 5 7, dealt 0 1 2 0 1 2
    assert all(s[i] == counts[i] for s, o in zip(shards, owned) for i in o)
    assert shard_frame_counts(counts, 0, 1) == (counts, False)
    with pytest.warns(UserWarning, match="2 playable clips for 3 ranks"):
        assert shard_frame_counts([1, 0, 1], 2, 3) == ([1, 0, 1], False)


def test_each_rank_trains_and_validates_on_its_own_clips():
    dms = [rank_dm(r, 2) for r in range(2)]
    train = [{c for b in take(dm, 12) for c in b["clip"].tolist()} for dm in dms]
    val = [{c for b in dm.val_dataloader() for c in b["clip"].tolist()} for dm in dms]
    playable_train = {i for i, n in enumerate(TRAIN_LENGTHS) if n >= N}
    playable_val = {i for i, n in enumerate(VAL_LENGTHS) if n >= N}
    assert not train[0] & train[1] and train[0] | train[1] == playable_train
    assert not val[0] & val[1] and val[0] | val[1] == playable_val
    # rank 0 of a DDP run keeps the single-process seed; rank 1 has its own generator
    assert SlotStream([2] * 4, 1, seed=0, rank=0)._rng.integers(1 << 30) == SlotStream(
        [2] * 4, 1, seed=0
    )._rng.integers(1 << 30)
    assert SlotStream([2] * 4, 1, seed=0, rank=1)._rng.integers(1 << 30) != SlotStream(
        [2] * 4, 1, seed=0
    )._rng.integers(1 << 30)


@pytest.mark.parametrize("consumed", [3, 8])
def test_rank_zero_checkpoint_state_resumes_every_rank(consumed):
    """Lightning saves rank 0's data state and every rank loads it: the other ranks fast-forward their own stream."""
    references = [take(rank_dm(r, 2), consumed + 6) for r in range(2)]
    rank0 = rank_dm(0, 2)
    take(rank0, consumed + 1)  # the loader prefetched one batch beyond those the model took
    rank0.trainer.global_step = consumed
    buffer = io.BytesIO()
    torch.save(rank0.state_dict(), buffer)
    for rank in range(2):
        buffer.seek(0)
        resumed = AudioFxDataModule.from_clips(
            ramp_clips(TRAIN_LENGTHS, "train"),
            ramp_clips(VAL_LENGTHS, "val"),
            batch_size=2,
            val_batch_size=3,
            steps_per_epoch=5,
            frame_size=N,
            context_size=CONTEXT,
            seed=0,
        )
        resumed.trainer = FakeTrainer(rank, 2, consumed)
        resumed.setup("fit")
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        assert resumed._train.steps == consumed  # so the epoch boundaries stay where they were
        assert schedule(take(resumed, 6)) == schedule(references[rank][consumed:]), f"rank {rank}"


def test_resume_with_another_world_size_keeps_the_step_count_and_warns():
    dm = rank_dm(0, 2)
    take(dm, 4)
    dm.trainer.global_step = 3
    state = dm.state_dict()
    other = rank_dm(1, 3)
    with pytest.warns(UserWarning, match="written with 2 rank"):
        other.load_state_dict(state)
    assert other._train.steps == 3


def test_fx_workers_share_the_cpus_among_local_ranks(monkeypatch):
    for var in ("LOCAL_WORLD_SIZE", "SLURM_JOB_ID", "SLURM_CPUS_PER_TASK", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert default_num_workers() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_num_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert default_num_workers() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    assert default_num_workers() == 8
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")  # the task is already bound to its own 16 CPUs
    assert default_num_workers() == 16


def directions(stream, draws: int = 3, m: int = 16, p: int = 8) -> list[torch.Tensor]:
    """The SPSA step signs (θ⁺ − θ⁻ > 0) of the next ``draws`` training steps of ``stream``."""
    estimator = GradientEstimator("spsa", 0.01, num_perturbations=2)
    theta = torch.full((m, p), 0.5)
    return [estimator.perturb(theta, stream.next_generator())[1] > 0 for _ in range(draws)]


def test_spsa_directions_differ_between_ranks_and_reproduce_on_each():
    rank0, rank1 = directions(PerturbationStream(seed=0, rank=0)), directions(PerturbationStream(seed=0, rank=1))
    for step, (a, b) in enumerate(zip(rank0, rank1)):
        agreement = (a == b).float().mean().item()
        assert 0.35 < agreement < 0.65, f"step {step}: ranks share {agreement:.0%} of their signs"  # independent
    assert all(torch.equal(a, b) for a, b in zip(rank1, directions(PerturbationStream(seed=0, rank=1))))
    assert not torch.equal(rank0[0], rank0[1])  # and a rank's steps differ from each other
    # outside DDP the stream reads rank 0: a single process draws what rank 0 of a DDP run draws
    assert all(torch.equal(a, b) for a, b in zip(rank0, directions(PerturbationStream(seed=0))))
    assert not torch.equal(rank0[0], directions(PerturbationStream(seed=1, rank=0))[0])


@pytest.mark.parametrize("resumed_world_size", [2, 3])
def test_a_rank_zero_checkpoint_resumes_every_ranks_spsa_stream(resumed_world_size):
    """Lightning writes the checkpoint from rank 0 only: that one state continues each rank's own stream, at the
    same or another world size, through a weights-only load."""
    uninterrupted = {r: directions(PerturbationStream(seed=5, rank=r), draws=7) for r in range(resumed_world_size)}
    writer = PerturbationStream(seed=5, rank=0)
    directions(writer, draws=4)
    checkpoint: dict = {}
    writer.save_to(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    for rank in range(resumed_world_size):
        buffer.seek(0)
        resumed = PerturbationStream(seed=0, rank=rank)  # the checkpoint's seed wins, as its generator state did
        resumed.load_from(torch.load(buffer, weights_only=True))
        after = directions(resumed, draws=3)
        assert all(torch.equal(a, b) for a, b in zip(after, uninterrupted[rank][4:])), f"rank {rank}"


def test_the_model_restores_its_spsa_stream_and_warns_on_a_shared_legacy_generator():
    model = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4),
        fx=FxConfig(chain=reference_chain, seed=3),
        num_slots=2,
        num_eval_slots=1,
    )
    model.on_load_checkpoint({PerturbationStream.CHECKPOINT_KEY: {"seed": 3, "draws": 11}})
    assert model.fx.directions.state_dict() == {"seed": 3, "draws": 11}
    fresh = DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4),
        fx=FxConfig(chain=reference_chain, seed=3),
        num_slots=2,
        num_eval_slots=1,
    )
    with pytest.warns(UserWarning, match="single SPSA generator shared by all ranks"):
        fresh.on_load_checkpoint({"afx_spsa_generator": torch.Generator().manual_seed(3).get_state()})
    assert fresh.fx.directions.state_dict() == {"seed": 3, "draws": 0}


GLOO_RANK = """
import json, sys, torch, torch.distributed as dist
from afx_lightning.blackbox import GradientEstimator, PerturbationStream
dist.init_process_group("gloo", init_method=sys.argv[1], rank=int(sys.argv[2]), world_size=2)
stream, estimator = PerturbationStream(seed=0), GradientEstimator("spsa", 0.01, 2)
steps = [estimator.perturb(torch.full((16, 8), 0.5), stream.next_generator())[1] > 0 for _ in range(3)]
print(json.dumps([s.int().tolist() for s in steps]))
dist.destroy_process_group()
"""


def test_two_gloo_ranks_draw_their_own_spsa_directions(tmp_path):
    """The rank is read from torch.distributed, as under Lightning's DDP: two real ranks, one rendezvous."""
    init = f"file://{tmp_path / 'rendezvous'}"
    ranks = [
        subprocess.Popen([sys.executable, "-c", GLOO_RANK, init, str(r)], stdout=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    drawn = []
    for proc in ranks:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        drawn.append([torch.tensor(s, dtype=torch.bool) for s in json.loads(out)])
    assert all(torch.equal(a, b) for a, b in zip(drawn[0], directions(PerturbationStream(seed=0, rank=0))))
    assert all(torch.equal(a, b) for a, b in zip(drawn[1], directions(PerturbationStream(seed=0, rank=1))))
    assert not any(torch.equal(a, b) for a, b in zip(*drawn))


# ------------------------------------------------------------------------------------------------ two CPU ranks

DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
BASE = ["fit", "--config", QUICKSTART, "--config", CONFIGS / "ddp_short.yaml", *DDP]
MAX_STEPS, RESUME_AT, WORLD = 4, 2, 2


def run_ddp(cwd: Path, record: str, *extra) -> float:
    cwd.mkdir(parents=True, exist_ok=True)
    args = [
        *BASE,
        "--trainer.callbacks+=afx_test_callbacks.RankBatchRecorder",
        "--trainer.callbacks.path",
        record,
        *extra,
    ]
    t0 = time.monotonic()
    result = subprocess.run(
        cli_command(*args, script="afx"), cwd=cwd, env=cli_env(cwd), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    return time.monotonic() - t0


def read_rank(path: Path) -> tuple[dict[int, dict], list[dict]]:
    """(training rows by global step, validation rows) of one rank's recording."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    steps = [r["step"] for r in train]
    assert len(steps) == len(set(steps)), f"a global step was recorded twice in {path}: {steps}"
    return {r["step"]: r for r in train}, [r for r in rows if r["kind"] == "val"]


def batch_columns(row: dict) -> dict:
    return {k: row[k] for k in ("slot", "clip", "position", "fresh")}


@pytest.mark.slow
def test_two_cpu_ranks_train_on_disjoint_streams_and_resume_them(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    wall_whole = run_ddp(whole, "whole")

    reference = {r: read_rank(whole / f"whole.rank{r}.jsonl") for r in range(WORLD)}
    cpus = len(os.sched_getaffinity(0))
    train_clips, val_clips = {}, {}
    for rank, (train, val) in reference.items():
        assert sorted(train) == list(range(MAX_STEPS)), f"rank {rank} trained steps {sorted(train)}"
        assert all(r["rank"] == rank and r["world_size"] == WORLD for r in train.values())
        assert all(len(r["slot"]) == 4 for r in train.values())
        train_clips[rank] = {c for r in train.values() for c in r["clip"]}
        val_clips[rank] = {c for r in val for c in r["clip"]}
        assert val, f"rank {rank} did not validate"
        # each rank runs its own pool, sized to its share of the CPUs (model.fx.workers is not set)
        workers = {r["fx_workers"] for r in train.values() if r["step"] > 0}
        assert workers == {max(1, cpus // WORLD)}, (rank, workers, cpus)
    assert train_clips[0] and train_clips[1] and not train_clips[0] & train_clips[1], train_clips
    assert train_clips[0] | train_clips[1] <= set(range(8))
    assert not val_clips[0] & val_clips[1], val_clips
    assert reference[0][0][0]["clip"] != reference[1][0][0]["clip"]

    # resume from the mid-epoch step-2 checkpoint; Lightning wrote only rank 0's data module state in it
    (checkpoint,) = (whole / "ckpt").glob(f"*step={RESUME_AT}.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["global_step"] == RESUME_AT
    (data_state,) = [v for k, v in saved.items() if k.endswith("AudioFxDataModule")]
    assert (data_state["world_size"], data_state["train_steps"]) == (WORLD, RESUME_AT)
    # one SPSA draw per training step: the draw count resumes each rank's own direction stream
    assert saved[PerturbationStream.CHECKPOINT_KEY]["draws"] == RESUME_AT
    wall_resumed = run_ddp(resumed, "resumed", "--ckpt_path", checkpoint)

    print(
        f"\n[ddp] 2 CPU ranks x {MAX_STEPS} steps: {wall_whole:.1f} s; resumed run from step {RESUME_AT}: "
        f"{wall_resumed:.1f} s; {cpus} CPUs -> {max(1, cpus // WORLD)} fx worker(s) per rank"
    )
    for rank in range(WORLD):
        after, val_after = read_rank(resumed / f"resumed.rank{rank}.jsonl")
        assert sorted(after) == list(range(RESUME_AT, MAX_STEPS)), f"rank {rank} replayed or skipped steps"
        for step in range(RESUME_AT, MAX_STEPS):
            assert batch_columns(after[step]) == batch_columns(reference[rank][0][step]), (
                f"rank {rank}, step {step}: {batch_columns(after[step])} != uninterrupted {batch_columns(reference[rank][0][step])}"
            )
        assert [batch_columns(r) for r in val_after] == [batch_columns(r) for r in reference[rank][1]]
        # the compared steps include clip swaps from a reshuffled deck, not only mid-clip frames
        assert any(any(after[s]["fresh"]) for s in after)
