"""End to end: the ``amp_lv2`` recipe (Calf Multiband Compressor, LV2) trains through the plugin worker pool.

The demo dataset stands in for a folder of pairs (``--data.dataset demo --data.demo_chain calf_mb_compressor``), with
the small encoder and tiny sizes. The point is where the plugins live: every training and validation render
must happen in the worker processes. The trainer process builds the chain twice on its own, both before
training (once to read the layout, once to render the demo targets); from fit start on it must not instantiate
or run a single LV2 plugin, while each worker process must have the Calf library mapped.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest

from afx_lightning.effects import lilv_ctypes as lv

APT = "sudo apt-get install liblilv-0-0 calf-plugins"
if not lv.lilv_available():
    pytest.skip(f"liblilv-0.so.0 is not installed ({APT})", allow_module_level=True)

import lightning.pytorch as pl  # noqa: E402

from afx_lightning.effects.lv2 import LV2Effect  # noqa: E402
from afx_lightning.lightning_cli import make_cli  # noqa: E402
from effects_registry.lv2_chains import CALF_MB_COMPRESSOR  # noqa: E402

if not lv.has_plugin(CALF_MB_COMPRESSOR):
    pytest.skip(f"Calf Multiband Compressor is not installed ({APT})", allow_module_level=True)

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "amp_lv2.yaml"


class PluginWhereabouts(pl.Callback):
    """Counts LV2 work in this (the trainer's) process from fit start, and inspects the pool's workers."""

    def __init__(self):
        self.local_calls = {"instances": 0, "renders": 0}
        self.counting = False
        self.workers: dict[int, bool] = {}  # pid -> Calf library mapped
        self.procs: list = []
        self.steps_seen = 0

    def wrap(self, monkeypatch) -> None:
        for method, key in (("_new_instance", "instances"), ("_render", "renders")):
            original = getattr(LV2Effect, method)

            def counted(effect, *args, _original=original, _key=key, **kwargs):
                if self.counting:
                    self.local_calls[_key] += 1
                return _original(effect, *args, **kwargs)

            monkeypatch.setattr(LV2Effect, method, counted)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.counting = True

    def on_fit_end(self, trainer, pl_module) -> None:
        self.counting = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps_seen += 1
        for proc in pl_module.fx.pool._procs:
            if proc not in self.procs:
                self.procs.append(proc)
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            self.workers[proc.pid] = "calf" in maps.lower()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_amp_lv2_recipe_trains_with_the_plugins_in_worker_processes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = make_cli(
        [
            "--config",
            str(RECIPE),
            "--data.dataset",
            "demo",
            "--data.demo_chain",
            "calf_mb_compressor",
            "--data.demo_clips",
            "3",
            "--data.demo_val_clips",
            "2",
            "--data.demo_test_clips",
            "0",
            "--data.demo_seconds",
            "2.0",
            "--data.batch_size",
            "4",
            "--data.val_batch_size",
            "2",
            "--data.steps_per_epoch",
            "3",
            "--model.encoder",
            "afx_lightning.encoders.SmallEncoder",
            "--model.fx.workers",
            "2",
            "--trainer.max_steps",
            "6",
            "--trainer.limit_val_batches",
            "4",
            "--trainer.num_sanity_val_steps",
            "1",
            "--trainer.logger",
            "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "logs"),
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ],
        run=False,
    )
    assert cli.model.fx_config.chain == "calf_mb_compressor" and cli.model.fx.num_params == 21
    assert cli.model.loss.max_shift == 100  # the recipe's (paper) alignment search; Calf adds no latency
    probe = PluginWhereabouts()
    probe.wrap(monkeypatch)
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert cli.trainer.global_step == 6 and probe.steps_seen == 6
    # every render went through the pool, without a single fault, retry or restart
    assert not any(cli.model.fx.fault_stats.as_dict().values()), cli.model.fx.fault_stats
    # the plugin instances lived in the workers: separate processes, each with the Calf library mapped ...
    assert len(probe.workers) == 2 and os.getpid() not in probe.workers
    assert all(probe.workers.values()), probe.workers
    # ... and none were created or run in the trainer process once fitting started
    assert probe.local_calls == {"instances": 0, "renders": 0}
    assert all(proc.poll() is not None for proc in probe.procs)  # teardown stopped the workers

    metrics = list(csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv")))))
    train = [float(r["train/loss"]) for r in metrics if r.get("train/loss")]
    val = [float(r["val/loss"]) for r in metrics if r.get("val/loss")]
    assert len(train) == 6 and len(val) == 2  # validation after steps 3 and 6
    assert all(math.isfinite(v) and v > 0 for v in train + val), (train, val)
    plugin_cpu = [float(r["fx/plugin_cpu_s"]) for r in metrics if r.get("fx/plugin_cpu_s")]
    assert plugin_cpu and all(c > 0 for c in plugin_cpu)  # CPU time measured inside the workers
