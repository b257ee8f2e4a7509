"""LightningCLI for afx: ``afx fit --config recipes/breath.yaml`` (also available as ``lightning``).

Adds on top of LightningCLI: registered recipes by name (``--recipe NAME``), links from the data's audio
format to the model, W&B offline logging by default, default callbacks for the types a recipe does not configure
(each callback once: the recipe's settings win), the data checked before any logger creates a run folder, output
without Lightning's tips or W&B's deprecation chatter, a closing summary of ``fit``, and one-line errors for bad
configurations.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import traceback
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from . import registry
from .data import AudioFxDataModule
from .module import DeepAFx

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"project": "afx-lightning", "offline": True, "save_dir": "runs"},
}


def default_callbacks(
    given: Sequence[Callback] = (), trainer_config: Mapping[str, Any] | None = None, subcommand: str | None = None
) -> list:
    """The CLI's callbacks, one per type that ``given`` (the run's own) lacks, so a recipe's settings win.

    LearningRateMonitor (when there is a logger), MediaLogger, FitSummary, and (unless checkpointing is off) a
    ModelCheckpoint on ``val/loss`` plus a LatestCheckpoint that keeps ``last.ckpt`` current: every run leaves
    its best checkpoint for ``afx process`` and its latest for resuming. ``afx predict`` also gets the
    PredictionFileWriter that writes what ``DeepAFx.predict_step`` returns.
    """
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from .callbacks import FitSummary, LatestCheckpoint, MediaLogger
    from .data.writer import PredictionFileWriter

    config = dict(trainer_config or {})
    candidates: list = []
    if config.get("logger", True) not in (False, []):  # None: Lightning's default logger
        candidates.append(LearningRateMonitor())
    candidates += [MediaLogger(), FitSummary()]
    if config.get("enable_checkpointing", True) is not False:
        candidates += [ModelCheckpoint(monitor="val/loss", mode="min", save_last=True), LatestCheckpoint()]
    if subcommand == "predict":
        candidates.append(PredictionFileWriter())
    return [cb for cb in candidates if not any(isinstance(g, type(cb)) for g in given)]


class _NoTips(logging.Filter):
    """Lightning's "💡 Tip: ..." promotions (litlogger, litmodels) are not about this run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_lightning() -> None:
    """Keep the run's output to what is about the run: no tips, no warnings about Lightning's own internals."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in rank_zero.filters):
        rank_zero.addFilter(_NoTips())
    # "Seed set to 0": the seed is in the run's saved config; a failing start-up stays one line.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    # Lightning calling a torch API torch deprecated; nothing a user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # About num_workers > 1; the data module's loaders run in the main process (num_workers=0).
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


def _without_wandb_anonymous(trainer: Trainer) -> None:
    """WandbLogger hands wandb.init ``anonymous=None``, which wandb >= 0.19 warns is deprecated even when unset."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        init = getattr(logger, "_wandb_init", None) if isinstance(logger, WandbLogger) else None
        if isinstance(init, dict) and init.get("anonymous", "set") is None:
            del init["anonymous"]


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config and copies of the recipe files into the run's own folder.

    For W&B that is the run's files folder (synced with it; copies, not links, because an offline run is
    synced later, when a recipe may have changed); otherwise the logger's version folder. Lightning's default
    (``trainer.log_dir``) is shared by every W&B run and would be overwritten by the next one.
    """

    def save_config(self, trainer, pl_module, stage: str) -> None:
        from lightning.pytorch.loggers import WandbLogger

        from .callbacks import run_folder

        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        saved = [folder / "lightning_config.yaml"]
        self.parser.save(self.config, str(saved[0]), skip_none=False, overwrite=True, multifile=False)
        for cfg in self.config.get("config", None) or []:
            path = Path(str(getattr(cfg, "absolute", cfg)))
            if path.is_file():
                saved.append(folder / path.name)
                if path.resolve() != saved[-1].resolve():  # with no logger the run folder may be the cwd
                    shutil.copyfile(path, saved[-1])
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                run.config.update(self.config.as_dict(), allow_val_change=True)
                for path in saved:
                    run.save(str(path), base_path=str(folder), policy="now")


def check_moved_options(args: Any) -> None:
    """Fail in one line on a model option that moved into a part (``--model.chain X`` or ``model: {chain: X}`` in
    a ``--config`` file), naming its new key, rather than with jsonargparse's list of every accepted key."""
    import yaml

    from .description import moved_option_message

    if not isinstance(args, (list, tuple)):
        return
    args = [str(a) for a in args]
    for i, arg in enumerate(args):
        if arg.startswith("--model."):
            message = moved_option_message(arg[len("--model.") :].split("=", 1)[0].split(".", 1)[0], arg)
            if message:
                raise ValueError(message)
        if arg == "--config" and i + 1 < len(args) or arg.startswith("--config="):
            path = Path(arg.split("=", 1)[1] if "=" in arg else args[i + 1])
            try:
                model = (yaml.safe_load(path.read_text()) or {}).get("model") if path.is_file() else None
            except (OSError, yaml.YAMLError, AttributeError):
                continue  # jsonargparse reports an unreadable config itself
            for name in model if isinstance(model, dict) else ():
                message = moved_option_message(str(name), str(path))
                if message:
                    raise ValueError(message)


class AfxCLI(LightningCLI):
    def parse_arguments(self, parser, args) -> None:
        check_moved_options(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.sample_rate", "model.sample_rate")
        parser.link_arguments("data.frame_size", "model.frame_size")
        parser.link_arguments("data.channels", "model.channels")
        parser.link_arguments("data.batch_size", "model.num_slots")
        parser.link_arguments("data.val_batch_size", "model.num_eval_slots")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The run's callbacks plus :func:`default_callbacks` for the types it lacks (not both, as LightningCLI's
        ``trainer_defaults`` would: a recipe's MediaLogger(every_n_epochs=5) next to a default one logging every
        epoch)."""
        if self.subcommand is not None:
            self._check_data(self.subcommand)
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        given = config.get("callbacks")
        given = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
        kwargs["callbacks"] = given + default_callbacks(given, config, self.subcommand)
        trainer = super().instantiate_trainer(**kwargs)
        _without_wandb_anonymous(trainer)
        return trainer

    def _check_data(self, stage: str) -> None:
        """Load the splits a stage needs before there is a trainer: a data error is then the only line printed,
        and comes before any logger creates a run folder (W&B creates its run at the trainer's setup, before the
        data module's) and before DDP starts other ranks. The data module keeps what it loaded: its setup does
        not load it again."""
        dm = self.datamodule
        if stage == "predict":
            check = getattr(dm, "check_predict", None)
            if callable(check):
                check()
            return
        for split in {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ()):
            getattr(dm, f"{split}_clips", None)


def expand_recipe(argv: Sequence[str]) -> list[str]:
    """``--recipe NAME`` -> ``--config <its registered YAML>``."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--recipe" and i + 1 < len(args):
            out += ["--config", str(registry.recipe_path(args[i + 1]))]
            i += 2
            continue
        if arg.startswith("--recipe="):
            out += ["--config", str(registry.recipe_path(arg.split("=", 1)[1]))]
        else:
            out.append(arg)
        i += 1
    return out


def make_cli(argv: Sequence[str] | None = None, run: bool = True) -> AfxCLI:
    # We always pass the (recipe-expanded) arguments explicitly; LightningCLI warns about that when
    # sys.argv holds the same words.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    quiet_lightning()
    return AfxCLI(
        DeepAFx,
        AudioFxDataModule,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        # The run's full config goes to the log dir and W&B (RunConfigSaver). Lightning's own hparams logging would
        # merge model and data hparams into one flat dict and refuse the run when a shared name differs
        # (model.chain vs data.chain in recipes/breath.yaml, model.seed vs data.seed).
        # Callbacks are not trainer_defaults: AfxCLI.instantiate_trainer adds them per type (default_callbacks).
        trainer_defaults={"logger": DEFAULT_LOGGER, "enable_autolog_hparams": False},
        args=list(argv) if argv is not None else None,
        run=run,
        # Parse errors are raised, not printed with the whole usage: run_lightning_cli reports them in one line.
        parser_kwargs={"prog": "afx", "exit_on_error": False},
    )


def run_lightning_cli(argv: Sequence[str]) -> int:
    """Run LightningCLI; a failure prints one line (``AFX_DEBUG=1`` shows the traceback)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        make_cli(expand_recipe(argv))
    except SystemExit as exc:  # argparse/jsonargparse already printed their message
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        print("afx: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("AFX_DEBUG"):
            traceback.print_exc()
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        message = lines[0] if lines else type(exc).__name__
        if message.endswith(":") and len(lines) > 1:  # jsonargparse: 'Parser key "x":' + indented details
            rest = lines[1:]
            i = next((k for k, line in enumerate(rest) if line.startswith("- ")), 0)
            detail = rest[i].removeprefix("- ")
            if detail.endswith(":") and i + 1 < len(rest):
                detail += " " + rest[i + 1]
            message += " " + detail
        print(f"afx: error: {message}  ({type(exc).__name__}; AFX_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return 0
