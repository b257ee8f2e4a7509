"""The training schedule as Lightning callbacks: greedy plugin-by-plugin stages, an ε schedule (the paper's) and a
start at the chain's best static setting for the training pairs (``MatchedStart``).

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
import time
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities import rank_zero_info


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
        pl_module.hold_at_anchor(None if k is None else self.held_columns(pl_module)[k])

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.held_columns(pl_module)  # a misnamed plugin fails before training starts

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._apply(pl_module, trainer.global_step)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit":  # validation inside fit scores the stage of the last training step
            self._apply(pl_module, max(0, trainer.global_step - 1))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.hold_at_anchor(None)


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


class MatchedStart(Callback):
    """Starts training at the chain's best *static* setting for the training pairs, found by ``afx match``'s
    CMA-ES search, and moves the model's anchor there (``DeepAFx.start_at``): the output bias starts at it and
    ``model.prior_weight`` pulls toward it instead of toward the chain's defaults.

    Why: SPSA from the defaults spends most of a CPU budget finding the level and the rough setting a black-box
    search finds in a minute or a few (the fidelity amp set: one static setting matched on 12 training excerpts, 600
    renders, gives a test d_MFCC 24% below identity, where 300 s of training from the defaults gave 14%); the encoder then only has to
    learn how the setting should move with the input. A chain whose defaults are not transparent (a gate that
    gates at its defaults) starts near transparent on material that should pass.

    The search runs on ``excerpts`` windows of ``seconds`` from training clips (evenly chosen, random offsets from
    ``seed``), joined by short silences, through the preprocessing the model trains on. It runs once, at the first
    training batch of a fresh run (inside ``trainer.max_time``, which it counts against), on global rank 0 (the
    other ranks receive its result); a resumed run keeps the anchor its checkpoint saved.

    Args:
        excerpts, seconds: how much training audio the search renders per candidate.
        budget, max_seconds: the most objective evaluations and the search's wall-clock cap (whichever first).
        time_share: with a ``trainer.max_time``, the search also takes at most this share of the time left, so a
            short run still trains (a 45 s smoke run searches for 9 s).
        objective: ``afx match --objective``.
        init: where the search's mean starts, ``afx match --init``: ``"center"`` of the box (a chain whose defaults
            sit in a corner: a compressor at ratio 1) or ``"defaults"`` (a long chain that is near-transparent at
            its defaults: from the centre of a 32-band EQ's box a few hundred renders do not get back).
        start: starting values by name, in range units (``afx match --set``), evaluated first with the chain's
            defaults for the rest, so the result is never worse than that start on the objective: e.g. a gate's
            reduction depths at 0 dB, which makes it transparent.
        seed: excerpt offsets and CMA-ES.
    """

    GAP_SECONDS = 0.1

    def __init__(
        self,
        excerpts: int = 8,
        seconds: float = 4.0,
        budget: int = 400,
        max_seconds: float = 60.0,
        time_share: float = 0.2,
        objective: str = "mrstft+mfcc",
        init: str = "center",
        start: dict[str, float] | None = None,
        seed: int = 0,
    ):
        if excerpts < 1 or seconds <= 0 or budget < 1 or max_seconds <= 0 or not 0 < time_share <= 1:
            raise ValueError(
                "MatchedStart: excerpts and budget must be at least 1, seconds and max_seconds above 0, time_share in "
                f"(0, 1]; got excerpts={excerpts}, seconds={seconds}, budget={budget}, max_seconds={max_seconds}, "
                f"time_share={time_share}"
            )
        if init not in ("center", "defaults"):
            raise ValueError(f"MatchedStart: init must be 'center' or 'defaults', got {init!r}")
        self.excerpts, self.seconds, self.budget = int(excerpts), float(seconds), int(budget)
        self.max_seconds, self.time_share = float(max_seconds), float(time_share)
        self.objective, self.init, self.seed = objective, init, int(seed)
        self.start = {str(k): float(v) for k, v in (start or {}).items()}
        self.result: dict[str, Any] | None = None  # what the search found (rank 0), for logs and tests

    def excerpt_pair(self, clips: Any, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """(input, target) [C, T]: the excerpts joined by silences."""
        rng = np.random.default_rng(self.seed)
        count = min(self.excerpts, len(clips))
        chosen = np.unique(np.linspace(0, len(clips) - 1, count).round().astype(int))
        width, gap = int(self.seconds * sample_rate), int(self.GAP_SECONDS * sample_rate)
        inputs, targets = [], []
        for i in chosen:
            clip = clips[int(i)]
            n = min(width, clip.num_samples)
            offset = int(rng.integers(0, clip.num_samples - n + 1))
            silence = np.zeros((clip.num_channels, gap), dtype=np.float32)
            inputs += [clip.input[:, offset : offset + n], silence]
            targets += [clip.target[:, offset : offset + n], silence]
        return np.concatenate(inputs, axis=1), np.concatenate(targets, axis=1)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step > 0 or self.result is not None or pl_module.anchor_origin != "defaults":
            return  # resumed (the checkpoint's anchor stands) or done
        columns = None
        if trainer.is_global_zero:
            columns = self._search(trainer, pl_module)
        columns = trainer.strategy.broadcast(columns, src=0)
        pl_module.start_at(torch.as_tensor(columns), origin="MatchedStart")

    def _search(self, trainer: Trainer, pl_module: LightningModule) -> np.ndarray:
        from .match import match_static  # the search machinery: imported only when a run asks for it

        data = trainer.datamodule
        rate = int(data.sample_rate)
        x, y = self.excerpt_pair(data.train_clips, rate)
        max_seconds = self.max_seconds
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is not None:
            max_seconds = max(1.0, min(max_seconds, self.time_share * remaining))
        t0 = time.monotonic()
        found = match_static(
            pl_module.fx.chain_factory,
            x,
            y,
            input_rate=rate,
            target_rate=rate,
            budget=self.budget,
            max_seconds=max_seconds,
            objective=self.objective,
            init=self.init,
            start=self.start,
            sample_rate=rate,
            seed=self.seed,
        )
        names = pl_module.fx.info.param_names
        theta = np.array([found.segments[0].normalized[n] for n in names], dtype=np.float32)
        scores = found.scores
        self.result = {
            "params": found.params,
            "scores": scores,
            "evaluations": found.evaluations,
            "seconds": round(time.monotonic() - t0, 1),
            "max_seconds": max_seconds,
            "audio_seconds": round(x.shape[1] / rate, 1),
        }
        rank_zero_info(
            f"MatchedStart: static setting from {x.shape[1] / rate:.0f} s of training audio in "
            f"{self.result['seconds']:.0f} s ({found.evaluations} renders): d_MFCC "
            f"{scores['match']['d_mfcc']:.4f} (identity {scores['identity']['d_mfcc']:.4f}), MR-STFT "
            f"{scores['match']['mrstft']:.3f} (identity {scores['identity']['mrstft']:.3f})"
        )
        return pl_module.fx.codec.encode(theta)
