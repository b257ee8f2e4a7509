"""Helpers for tests/test_training.py that CLI subprocesses import by class path (PYTHONPATH=tests/helpers)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl

from afx_lightning.encoders import SmallEncoder


class BatchRecorder(pl.Callback):
    """Appends one JSON line per training batch: global step and the batch's slot/clip/position/fresh columns.

    With ``kill_at_step`` >= 0 the process SIGKILLs itself when training batch ``kill_at_step`` is about to
    start, i.e. after the optimizer step ``kill_at_step`` and every ``on_train_batch_end`` hook of the previous
    batch (``ModelCheckpoint`` included) have run: a hard crash right after a checkpoint was written.
    """

    def __init__(self, path: str, kill_at_step: int = -1) -> None:
        self.path = Path(path)
        self.kill_at_step = kill_at_step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        row = {"step": int(trainer.global_step)}
        for key in ("slot", "clip", "position", "fresh"):
            row[key] = [int(v) for v in batch[key].tolist()]
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


class WrongSizeEncoder(SmallEncoder):
    """An encoder that ignores the ``num_params`` it is given and predicts ``forced`` parameters instead."""

    def __init__(self, num_params: int, sample_rate: int = 22050, forced: int = 5) -> None:
        super().__init__(forced, sample_rate=sample_rate, width=4)
