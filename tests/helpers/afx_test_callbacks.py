"""Helpers for tests/test_training.py that CLI subprocesses import by class path (PYTHONPATH=tests/helpers)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl

from afx_lightning.encoders import SmallEncoder


class BatchRecorder(pl.Callback):
    """Appends one JSON line per training batch: global step, the batch's slot/clip/position/fresh columns and
    the step's training loss (``loss``).

    With ``kill_at_step`` >= 0 the process SIGKILLs itself when training batch ``kill_at_step`` is about to
    start, i.e. after the optimizer step ``kill_at_step`` and every ``on_train_batch_end`` hook of the previous
    batch (``ModelCheckpoint`` included) have run: a hard crash right after a checkpoint was written.
    With ``restart_plugins_at_step`` >= 0 the plugin workers are stopped before that batch, so its rows meet
    fresh plugin instances mid-clip: what a resumed run meets (plugin state is not in checkpoints).
    """

    def __init__(self, path: str, kill_at_step: int = -1, restart_plugins_at_step: int = -1) -> None:
        self.path = Path(path)
        self.kill_at_step = kill_at_step
        self.restart_plugins_at_step = restart_plugins_at_step
        self._row: dict = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if trainer.global_step == self.restart_plugins_at_step:
            pl_module.fx.close()
        self._row = {"step": int(trainer.global_step)}
        for key in ("slot", "clip", "position", "fresh"):
            self._row[key] = [int(v) for v in batch[key].tolist()]

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        with self.path.open("a") as f:
            f.write(json.dumps({**self._row, "loss": float(loss)}) + "\n")


class WrongSizeEncoder(SmallEncoder):
    """An encoder that ignores the ``num_params`` it is given and predicts ``forced`` parameters instead."""

    def __init__(self, num_params: int, sample_rate: int = 22050, forced: int = 5) -> None:
        super().__init__(forced, sample_rate=sample_rate, width=4)


class RankBatchRecorder(pl.Callback):
    """Per-rank ``BatchRecorder`` for DDP runs: rank ``r`` appends to ``<path>.rank<r>.jsonl``.

    One JSON line per training batch (``kind: train``) and per validation batch (``kind: val``, sanity checks
    skipped): global step, rank, world size and the batch's slot/clip/position/fresh columns.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, kind: str, batch) -> None:
        row = {
            "kind": kind,
            "step": int(trainer.global_step),
            "rank": int(trainer.global_rank),
            "world_size": int(trainer.world_size),
        }
        pool = getattr(getattr(pl_module, "fx", None), "_pool", None)  # started by the first render
        row["fx_workers"] = pool.num_workers if pool is not None else None
        for key in ("slot", "clip", "position", "fresh"):
            row[key] = [int(v) for v in batch[key].tolist()]
        with Path(f"{self.path}.rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self._write(trainer, pl_module, "train", batch)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, pl_module, "val", batch)
