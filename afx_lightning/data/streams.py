"""Which clip and frame each slot plays next: the scheduler that keeps stateful plugins honest.

The black-box layer keeps one set of plugin instances per slot (batch row). A plugin's state is only right if
its slot hears consecutive, non-overlapping frames of one clip, so a :class:`SlotStream` plays each slot's clip
from frame 0 to its last full frame before swapping in another clip and flagging the row ``fresh``.
The stream works in frame units and never touches audio; its whole state is a few plain ints and lists, so it
checkpoints with ``torch.load(weights_only=True)``.

Distributed training (DDP). Every rank builds its own training stream over a disjoint shard of the clips
(:func:`shard_frame_counts`: playable clip ``i`` of the list goes to rank ``i % world_size``; the others get
frame count 0 and are never dealt, so clip ids stay those of the whole split) with a generator seeded by
``(seed, rank)``. A rank's stream is thus a pure function of ``(clips, slots, seed, rank, world_size)`` and of
how many steps it has played, which is what lets a checkpoint written by rank 0 alone resume every rank
(:meth:`SlotStream.fast_forward`, see the data module).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

StreamMode = Literal["train", "eval"]
IDLE = -1  # slot_clip value: the slot has no clip (not started yet, or nothing left to play)


def shard_frame_counts(
    frame_counts: Sequence[int], rank: int, world_size: int, what: str = "clips"
) -> tuple[list[int], bool]:
    """This rank's view of a split: the frame counts of the clips it does not own set to 0.

    Playable clips (at least one frame) are dealt round-robin: the ``i``-th playable clip goes to rank
    ``i % world_size``. With fewer playable clips than ranks no disjoint split exists: a warning, and every rank
    keeps all clips (training streams still differ through their ``(seed, rank)`` generators). Returns the
    counts and whether they were sharded.
    """
    counts = [int(n) for n in frame_counts]
    if world_size <= 1:
        return counts, False
    playable = [i for i, n in enumerate(counts) if n >= 1]
    if len(playable) < world_size:
        warnings.warn(
            f"data: {len(playable)} playable {what} for {world_size} ranks: every rank uses all of them "
            "(training ranks shuffle them with different seeds; evaluation is repeated on every rank)",
            stacklevel=2,
        )
        return counts, False
    mine = set(playable[rank::world_size])
    return [n if i in mine else 0 for i, n in enumerate(counts)], True


@dataclass(frozen=True)
class StreamStep:
    """One batch worth of schedule: the rows of the slots that play this step (ascending slot ids)."""

    slots: np.ndarray  # int64 (R,)
    clips: np.ndarray  # int64 (R,)
    frames: np.ndarray  # int64 (R,), frame index inside the clip
    fresh: np.ndarray  # bool (R,), the slot starts a new clip: reset its plugin instances

    def __len__(self) -> int:
        return int(self.slots.size)


class SlotStream:
    """A stateful schedule over ``num_slots`` slots and clips of ``frame_counts[i]`` full frames each.

    - ``train``: endless; a free slot takes the next clip of a shuffled deck of all playable clips (every clip
      is dealt once before any is dealt again), reshuffled from the seeded generator when empty. Every step has
      ``num_slots`` rows.
    - ``eval``: finite and deterministic; playable clips are dealt in order, each to the lowest free slot, and
      each played once from its start. Slots with nothing left go idle and their rows are dropped, so the last
      steps have fewer rows (slot ids stay those of the playing slots). Iteration stops when all are idle.

    Clips shorter than one frame are never dealt. ``rank`` (DDP) seeds the train deck with ``(seed, rank)``;
    rank 0 keeps the plain ``seed`` stream of a single-process run.
    """

    def __init__(
        self, frame_counts: Sequence[int], num_slots: int, mode: StreamMode = "train", seed: int = 0, rank: int = 0
    ):
        if mode not in ("train", "eval"):
            raise ValueError(f"stream mode must be 'train' or 'eval', got {mode!r}")
        if num_slots < 1:
            raise ValueError(f"a stream needs at least one slot, got {num_slots}")
        self.frame_counts = [int(n) for n in frame_counts]
        self.playable = [i for i, n in enumerate(self.frame_counts) if n >= 1]
        if not self.playable:
            raise ValueError("no clip is at least one frame long")
        self.num_slots = int(num_slots)
        self.mode: StreamMode = mode
        self.rank = int(rank)
        self._rng = np.random.default_rng(seed if self.rank == 0 else [int(seed), self.rank])
        self.slot_clip = [IDLE] * self.num_slots
        self.slot_frame = [0] * self.num_slots
        self.steps = 0
        self._deck: list[int] = []
        self._next_clip = 0

    # ----------------------------------------------------------------------------------------- scheduling

    def _deal(self) -> int:
        if self.mode == "eval":
            if self._next_clip >= len(self.playable):
                return IDLE
            self._next_clip += 1
            return self.playable[self._next_clip - 1]
        if not self._deck:
            self._deck = [int(i) for i in self._rng.permutation(self.playable)]
        return self._deck.pop()

    def __iter__(self) -> SlotStream:
        return self

    def __next__(self) -> StreamStep:
        rows: list[tuple[int, int, int]] = []
        for s in range(self.num_slots):
            clip = self.slot_clip[s]
            if clip == IDLE or self.slot_frame[s] >= self.frame_counts[clip]:
                clip = self.slot_clip[s] = self._deal()
                self.slot_frame[s] = 0
                if clip == IDLE:
                    continue
            rows.append((s, clip, self.slot_frame[s]))
            self.slot_frame[s] += 1
        if not rows:
            raise StopIteration
        self.steps += 1
        table = np.asarray(rows, dtype=np.int64)
        return StreamStep(table[:, 0], table[:, 1], table[:, 2], table[:, 2] == 0)

    def fast_forward(self, steps: int) -> None:
        """Play ``steps`` steps of schedule without making batches (cheap: a few ints per slot and step)."""
        if self.mode != "train":
            raise ValueError("only a train stream is fast-forwarded")
        for _ in range(int(steps)):
            next(self)

    def count_steps(self) -> int:
        """How many steps an eval stream yields from its current state (it is not advanced)."""
        if self.mode != "eval":
            raise ValueError("a train stream is endless")
        probe = copy.deepcopy(self)
        return sum(1 for _ in probe)


class TrainStream:
    """One rank's endless training schedule and its resume state: a checkpoint holds the batch count only.

    A rank's stream is a pure function of ``(frame_counts, num_slots, seed, rank, world_size)`` and of the steps
    played, so :meth:`load_state_dict` rebuilds it and fast-forwards (scheduling only, no audio). The state may
    arrive before the stream is built (Lightning restores the data module before its first loader): it is kept
    and applied by :meth:`build`. Building again for another placement (the rank became known later) keeps
    the step count.
    """

    def __init__(self, num_slots: int, seed: int = 0):
        self.num_slots = int(num_slots)
        self.seed = int(seed)
        self.placement: tuple[int, int] = (0, 1)  # (rank, world size) the stream was built for
        self.frame_counts: list[int] = []
        self._stream: SlotStream | None = None
        self._pending: dict | None = None

    @property
    def built(self) -> bool:
        return self._stream is not None

    @property
    def steps(self) -> int:
        """Steps played (batches made, including any the loader fetched ahead)."""
        return self._stream.steps if self._stream is not None else 0

    def _new(self, rank: int, world_size: int) -> SlotStream:
        counts, _ = shard_frame_counts(self.frame_counts, rank, world_size, "training clips")
        return SlotStream(counts, self.num_slots, "train", self.seed, rank=rank)

    def build(self, frame_counts: Sequence[int], rank: int = 0, world_size: int = 1) -> None:
        """The stream over clips of ``frame_counts`` for this placement (no-op when it is built for it)."""
        placement = (int(rank), int(world_size))
        if self._stream is not None and placement == self.placement:
            return
        self.frame_counts = [int(n) for n in frame_counts]
        played = self.steps
        rebuilt = self._stream is not None
        self._stream, self.placement = self._new(*placement), placement
        if rebuilt:
            self._stream.fast_forward(played)
        elif self._pending is not None:
            self._apply(self._pending)

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> StreamStep:
        if self._stream is None:
            raise RuntimeError("TrainStream.build must be called before the stream is played")
        return next(self._stream)

    def epoch(self, steps_per_epoch: int) -> int:
        """Steps left until the global step count reaches the next multiple of ``steps_per_epoch``."""
        return steps_per_epoch - self.steps % steps_per_epoch

    def state_dict(self, consumed: int | None = None) -> dict:
        """What a checkpoint stores: the batches the model consumed (``consumed``; default: the steps played)."""
        if self._stream is None:
            return copy.deepcopy(self._pending) if self._pending is not None else {}
        return {
            "train_steps": self.steps if consumed is None else int(consumed),
            "num_slots": self.num_slots,
            "num_clips": len(self.frame_counts),
            "seed": self.seed,
            "world_size": self.placement[1],
        }

    def load_state_dict(self, state: dict) -> None:
        if not state or "train_steps" not in state:
            return
        self._pending = copy.deepcopy(state)
        if self._stream is not None:
            self._apply(self._pending)

    def _apply(self, state: dict) -> None:
        from .datasets import DataError

        saved_clips, clips = int(state["num_clips"]), len(self.frame_counts)
        if int(state["num_slots"]) != self.num_slots:
            raise DataError(
                f"data: the checkpoint's stream has {state['num_slots']} slots, this run {self.num_slots} "
                "(data.batch_size changed?): it cannot resume the same stream"
            )
        if saved_clips != clips or int(state["seed"]) != self.seed:
            raise DataError(
                f"data: the checkpoint was trained on {saved_clips} clips with data.seed {state['seed']}, this run has "
                f"{clips} clips and seed {self.seed}: it cannot resume the same stream"
            )
        if int(state["world_size"]) != self.placement[1]:
            warnings.warn(
                f"data: the checkpoint was written with {state['world_size']} rank(s), this run has "
                f"{self.placement[1]}: the batch count and epoch boundaries continue, the clip order does not",
                stacklevel=3,
            )
        with warnings.catch_warnings():  # the shard warning was given when the stream was first built
            warnings.simplefilter("ignore")
            stream = self._new(*self.placement)
        stream.fast_forward(int(state["train_steps"]))
        self._stream = stream
        self._pending = None
