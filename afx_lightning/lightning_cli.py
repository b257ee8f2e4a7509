"""LightningCLI for afx: ``afx fit --config recipes/breath.yaml`` (also available as ``lightning``).

Adds on top of LightningCLI: registered recipes by name (``--recipe NAME``), links from the data's audio
format to the model, W&B offline logging by default, and one-line errors for bad configurations.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from . import registry
from .data import AudioFxDataModule
from .module import DeepAFx

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"project": "afx-lightning", "offline": True, "save_dir": "runs"},
}


def default_callbacks() -> list:
    """Added to every run (recipes add checkpointing and early stopping of their own)."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    from .callbacks import MediaLogger

    return [LearningRateMonitor(), MediaLogger()]


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config next to the checkpoints and, for W&B, into the run with the recipe files."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)
                for cfg in self.config.get("config", None) or []:
                    path = Path(str(getattr(cfg, "absolute", cfg)))
                    if path.is_file():
                        logger.experiment.save(str(path), base_path=str(path.parent), policy="now")


class AfxCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.sample_rate", "model.sample_rate")
        parser.link_arguments("data.frame_size", "model.frame_size")
        parser.link_arguments("data.batch_size", "model.num_slots")
        parser.link_arguments("data.val_batch_size", "model.num_eval_slots")


def expand_recipe(argv: Sequence[str]) -> List[str]:
    """``--recipe NAME`` -> ``--config <its registered YAML>``."""
    out: List[str] = []
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


def make_cli(argv: Optional[Sequence[str]] = None, run: bool = True) -> AfxCLI:
    # We always pass the (recipe-expanded) arguments explicitly; LightningCLI warns about that when
    # sys.argv holds the same words.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return AfxCLI(
        DeepAFx,
        AudioFxDataModule,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"logger": DEFAULT_LOGGER, "callbacks": default_callbacks()},
        args=list(argv) if argv is not None else None,
        run=run,
        parser_kwargs={"prog": "afx"},
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
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"afx: error: {message}  ({type(exc).__name__}; AFX_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return 0
