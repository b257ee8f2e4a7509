"""The paper's training schedule as Lightning callbacks: greedy plugin-by-plugin stages and an ε schedule.

The rest of the schedule is configuration already: default-parameter pretraining (``model.pretrain_steps``,
``model.pretrain_lr``), K perturbation pairs (``model.fx.num_perturbations``), ReduceLROnPlateau on the learning rate
(``model.plateau_*``) and gradient-norm clipping (Lightning's ``trainer.gradient_clip_val``, which clips the SPSA
estimate like any other gradient: it is the encoder's parameter gradients that get clipped). In a recipe::

    trainer:
      gradient_clip_val: 1.0
      callbacks:
        - class_path: afx_lightning.schedule.GreedyStages
          init_args: {stages: [[compressor], [eq]], stage_steps: 5000}
        - class_path: afx_lightning.schedule.EpsilonOnPlateau
          init_args: {factor: 0.5, patience: 10, min_epsilon: 0.001}
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def plugin_of(param_name: str, chain_name: str) -> str:
    """The plugin a chain parameter belongs to: the effect name a multi-effect chain qualifies it with, else the
    chain itself (a single-effect chain's names are not qualified)."""
    return param_name.split(".", 1)[0] if "." in param_name else chain_name


class GreedyStages(Callback):
    """Trains the chain plugin by plugin, as the official DeepAFx code does, then all together.

    During stage k (``stage_steps`` training steps each, counted after ``model.pretrain_steps``) only the
    parameters named in ``stages[k]`` come from the encoder; every other parameter is held at the chain's
    default (the encoder's output for it is replaced by the default, in training and validation, so it does not
    move and gets no gradient). After the last stage every parameter trains. The stage follows from the global
    step, so a resumed run continues in its stage.

    Args:
        stages: per stage, the plugins (effect names: the part of a parameter name before its first ``.``) or
            single parameters it trains; None: one stage per plugin, in chain order.
        stage_steps: training steps per stage.
    """

    def __init__(self, stages: list[list[str]] | None = None, stage_steps: int = 1000):
        if stage_steps < 1:
            raise ValueError(f"GreedyStages: stage_steps must be at least 1, got {stage_steps}")
        self.stages = [list(s) for s in stages] if stages is not None else None
        self.stage_steps = int(stage_steps)
        self._held: list[torch.Tensor] | None = None  # per stage, the encoder columns held at their defaults

    def held_columns(self, pl_module: LightningModule) -> list[torch.Tensor]:
        """Per stage, a bool mask over the encoder's outputs: True where the output is held at its default."""
        if self._held is None:
            fx = pl_module.fx
            names, chain = fx.info.param_names, fx.info.name
            plugins = list(dict.fromkeys(plugin_of(n, chain) for n in names))
            stages = self.stages if self.stages is not None else [[p] for p in plugins]
            held = []
            for k, stage in enumerate(stages):
                trained = torch.zeros(len(names), dtype=torch.bool)
                for item in stage:
                    match = torch.tensor([n == item or plugin_of(n, chain) == item for n in names], dtype=torch.bool)
                    if not match.any():
                        raise ValueError(
                            f"GreedyStages: stage {k + 1} names {item!r}, which is neither a plugin nor a parameter of "
                            f"chain {chain!r} (plugins: {', '.join(plugins)})"
                        )
                    trained |= match
                columns = torch.zeros(fx.num_params, dtype=torch.bool)  # parameters -> encoder columns
                for i, cols in enumerate(fx.codec.columns):
                    columns[cols] = not bool(trained[i])
                held.append(columns)
            self._held = held
        return self._held

    def stage(self, pl_module: LightningModule, global_step: int) -> int | None:
        """The stage at a global step (None: pretraining, or every stage done)."""
        step = global_step - int(pl_module.hparams.get("pretrain_steps", 0))
        k = step // self.stage_steps
        return k if 0 <= k < len(self.held_columns(pl_module)) else None

    def _apply(self, pl_module: LightningModule, step: int) -> None:
        k = self.stage(pl_module, step)
        pl_module.hold_at_defaults(None if k is None else self.held_columns(pl_module)[k])

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.held_columns(pl_module)  # a misnamed plugin fails before training starts

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._apply(pl_module, trainer.global_step)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit":  # validation inside fit scores the stage of the last training step
            self._apply(pl_module, max(0, trainer.global_step - 1))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.hold_at_defaults(None)


class EpsilonOnPlateau(Callback):
    """Shrinks the SPSA step ε when ``monitor`` stops improving (DeepAFx-ST's schedule), as ReduceLROnPlateau
    does the learning rate: after more than ``patience`` validations without a relative improvement of
    ``threshold``, ε becomes ``max(ε · factor, min_epsilon)``. ε, the best value and the count are saved in
    checkpoints and restored on resume. ``fx/epsilon`` is logged with the training steps.
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        factor: float = 0.5,
        patience: int = 10,
        min_epsilon: float = 1e-3,
        threshold: float = 1e-4,
        mode: str = "min",
    ):
        if not 0 < factor < 1:
            raise ValueError(f"EpsilonOnPlateau: factor must lie in (0, 1), got {factor}")
        if patience < 0 or min_epsilon <= 0:
            raise ValueError(
                f"EpsilonOnPlateau: patience must be >= 0 and min_epsilon > 0, got {patience}, {min_epsilon}"
            )
        if mode not in ("min", "max"):
            raise ValueError(f"EpsilonOnPlateau: mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.min_epsilon, self.threshold, self.mode = float(min_epsilon), float(threshold), mode
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.epsilon: float | None = None  # the current ε once changed or restored; None: the model's own

    @property
    def state_key(self) -> str:
        return f"EpsilonOnPlateau[{self.monitor}]"

    def _improved(self, value: float) -> bool:
        """Better than the best by more than ``threshold`` of it (ReduceLROnPlateau's relative mode)."""
        if math.isinf(self.best):
            return math.isfinite(value)
        margin = abs(self.best) * self.threshold
        return value < self.best - margin if self.mode == "min" else value > self.best + margin

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.epsilon is not None:  # restored from a checkpoint
            pl_module.fx.set_epsilon(self.epsilon)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pl_module.log("fx/epsilon", float(pl_module.fx.estimator.epsilon), batch_size=1)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            self.wait = 0
            old = float(pl_module.fx.estimator.epsilon)
            self.epsilon = max(old * self.factor, self.min_epsilon)
            pl_module.fx.set_epsilon(self.epsilon)

    def state_dict(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "best": self.best, "wait": self.wait}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epsilon = state_dict.get("epsilon")
        self.best = float(state_dict.get("best", self.best))
        self.wait = int(state_dict.get("wait", 0))
