"""The paper's training schedule as configuration (issue 10): greedy plugin-by-plugin stages, an ε schedule on
plateau, and gradient-norm clipping of the SPSA gradients."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer

from afx_lightning.blackbox import FxConfig
from afx_lightning.data import ArrayClips, AudioFxDataModule, Clip
from afx_lightning.encoders import SmallEncoder
from afx_lightning.module import DeepAFx
from afx_lightning.schedule import EpsilonOnPlateau, GreedyStages, MatchedStart
from afx_lightning.testing import two_plugin_chain

SR, N = 22050, 512


def _model(epsilon: float = 0.01, **kwargs) -> DeepAFx:
    torch.manual_seed(0)
    return DeepAFx(
        encoder=functools.partial(SmallEncoder, width=4),
        fx=FxConfig(chain=two_plugin_chain, workers=1, epsilon=epsilon),
        frame_size=N,
        num_slots=2,
        num_eval_slots=1,
        lr=1e-2,
        plateau_patience=0,
        **kwargs,
    )


def _data() -> AudioFxDataModule:
    rng = np.random.default_rng(0)

    def clips(k: int) -> ArrayClips:
        made = []
        for i in range(k):
            x = (0.3 * rng.standard_normal((1, 6 * N))).astype(np.float32)
            made.append(Clip(f"c{i}", x, np.tanh(2 * x).astype(np.float32) * 0.5))
        return ArrayClips(made, SR)

    return AudioFxDataModule.from_clips(
        clips(2), clips(1), batch_size=2, val_batch_size=1, steps_per_epoch=2, frame_size=N, context_size=2048
    )


def _trainer(callbacks, **kwargs) -> Trainer:
    options = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    options.update(kwargs)
    return Trainer(callbacks=callbacks, **options)


class _ThetaProbe(Callback):
    """Records the θ each training and validation render got, with the global step it ran at."""

    def __init__(self):
        self.seen: list = []

    def setup(self, trainer, pl_module, stage):
        forward = pl_module.fx.forward

        def recording(audio, theta, slot, fresh):
            self.seen.append((trainer.global_step, pl_module.training, theta.detach().clone()))
            return forward(audio, theta, slot, fresh)

        pl_module.fx.forward = recording


def test_greedy_stages_hold_the_other_plugins_exactly_at_their_defaults_then_train_all():
    model = _model()
    defaults = model.defaults.clone()
    names = model.param_names  # reference.smoothing, reference.drive, reference.gain, trim.gain
    trim = torch.tensor([n.startswith("trim.") for n in names])
    probe = _ThetaProbe()
    trainer = _trainer([GreedyStages([["reference"], ["trim"]], stage_steps=2), probe], max_steps=6)
    trainer.fit(model, datamodule=_data())
    by_stage = {0: [], 1: [], 2: []}
    for step, training, theta in probe.seen:
        # a validation (after each epoch of 2 steps) scores the stage its last training step trained in
        stage = min(2, (step if training else step - 1) // 2)
        by_stage[stage].append(theta)
    first, second, together = (torch.cat(by_stage[k]) for k in (0, 1, 2))
    assert torch.equal(first[:, trim], defaults[trim].expand(len(first), -1))  # trim frozen: exactly the default
    assert not torch.equal(first[:, ~trim], defaults[~trim].expand(len(first), -1))
    assert torch.equal(second[:, ~trim], defaults[~trim].expand(len(second), -1))  # reference frozen
    assert not torch.equal(second[:, trim], defaults[trim].expand(len(second), -1))
    assert not (together == defaults).all(dim=0).any()  # all together: nothing held
    assert model._held is None  # released at the end of fit: the model is used whole afterwards


def test_greedy_stages_default_to_one_stage_per_plugin_and_name_an_unknown_plugin():
    model = _model()
    held = GreedyStages().held_columns(model)
    assert [h.tolist() for h in held] == [[False, False, False, True], [True, True, True, False]]
    assert GreedyStages([["trim.gain", "reference.drive"]]).held_columns(model)[0].tolist() == [
        True,
        False,
        True,
        False,
    ]
    with pytest.raises(ValueError) as err:
        GreedyStages([["reference"], ["limiter"]]).held_columns(model)
    assert "stage 2 names 'limiter'" in str(err.value) and "plugins: reference, trim" in str(err.value)
    assert "\n" not in str(err.value)


def test_epsilon_shrinks_after_the_patience_runs_out_down_to_its_floor():
    from types import SimpleNamespace

    model = _model(epsilon=0.01)
    callback = EpsilonOnPlateau(factor=0.5, patience=2, min_epsilon=0.003)
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), callback_metrics={})
    seen = []
    for loss in (1.0, 0.9, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9):
        trainer.callback_metrics["val/loss"] = torch.tensor(loss)
        callback.on_validation_end(trainer, model)
        seen.append(model.fx.estimator.epsilon)
    # 0.9 is the best; three validations without improvement (more than patience 2) halve epsilon, then again
    assert seen == [0.01] * 4 + [0.005] + [0.005] * 2 + [0.003] + [0.003] * 3
    # the perturbation directions use it: θ± = θ ± εΔ
    params, step = model.fx.estimator.perturb(torch.full((1, 4), 0.5), torch.Generator().manual_seed(0))
    torch.testing.assert_close(step.abs(), torch.full_like(step, 2 * 0.003))


def test_epsilon_schedule_is_restored_on_resume(tmp_path):
    class Probe(Callback):
        def on_train_start(self, trainer, pl_module):
            self.epsilon = pl_module.fx.estimator.epsilon

    # threshold 1: no validation ever improves on the first, so with patience 0 each later one halves epsilon
    shrink = EpsilonOnPlateau(factor=0.5, patience=0, min_epsilon=1e-4, threshold=1.0)
    trainer = _trainer([shrink], max_epochs=2)
    trainer.fit(_model(epsilon=0.01), datamodule=_data())
    assert shrink.epsilon == pytest.approx(0.005)
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed, probe = EpsilonOnPlateau(factor=0.5, patience=0, min_epsilon=1e-4, threshold=1.0), Probe()
    model = _model(epsilon=0.01)
    _trainer([resumed, probe], max_epochs=3).fit(model, datamodule=_data(), ckpt_path=str(ckpt), weights_only=False)
    assert probe.epsilon == pytest.approx(0.005)  # not the model's 0.01: the checkpoint's
    assert resumed.epsilon == pytest.approx(0.0025) and model.fx.estimator.epsilon == pytest.approx(0.0025)


def test_gradient_clipping_clips_the_spsa_gradients():
    """trainer.gradient_clip_val applies to the encoder gradients SPSA produced (they exist before the clip and
    are rescaled to the limit after it)."""

    class Norms(Callback):
        def __init__(self):
            self.before, self.after = [], []

        @staticmethod
        def norm(module):
            return float(torch.norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None])))

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.before.append(self.norm(pl_module))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.after.append(self.norm(pl_module))

    norms = Norms()
    _trainer([norms], max_steps=2, gradient_clip_val=1e-3, limit_val_batches=0).fit(_model(), datamodule=_data())
    assert len(norms.before) == 2 and min(norms.before) > 1e-3
    assert max(norms.after) <= 1e-3 * (1 + 1e-4)


def test_matched_start_moves_the_anchor_to_the_static_match_and_a_resumed_run_keeps_it(tmp_path):
    """The static search finds the data's tanh(2x)/2 far better than the defaults; training starts there (θ at the
    first step is the anchor's, not the defaults'), the prior pulls toward it, and a resume neither searches again
    nor loses it."""
    model = _model(prior_weight=1.0)
    defaults = model.defaults.clone()
    start = MatchedStart(excerpts=2, seconds=1.0, budget=120, max_seconds=60, time_share=0.25, seed=0)
    probe = _ThetaProbe()
    trainer = _trainer([start, probe], max_steps=1, limit_val_batches=0, max_time="00:00:02:00")
    trainer.fit(model, datamodule=_data())
    assert 1.0 <= start.result["max_seconds"] <= 30.0  # a quarter of the 120 s max_time at most, not 60
    scores = start.result["scores"]
    assert scores["match"]["mrstft"] < 0.5 * scores["defaults"]["mrstft"]
    assert model.anchor_origin == "MatchedStart"
    drive = model.param_names.index("reference.drive")
    assert abs(float(model.anchor[drive] - defaults[drive])) > 0.1  # the data asks for drive 2, the default is 1
    first = next(theta for step, training, theta in probe.seen if training and step == 0)
    assert (first - model.anchor).abs().max() < 0.05 < (first - defaults).abs().max()

    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    anchor = model.anchor.clone()
    again, resumed = MatchedStart(excerpts=2, seconds=1.0, budget=120, max_seconds=60), _model(prior_weight=1.0)
    _trainer([again], max_steps=2, limit_val_batches=0).fit(
        resumed, datamodule=_data(), ckpt_path=str(ckpt), weights_only=False
    )
    assert again.result is None  # no second search
    assert torch.equal(resumed.anchor, anchor) and resumed.anchor_origin == "MatchedStart"


def test_matched_start_checks_its_options_and_names_them():
    with pytest.raises(ValueError, match="MatchedStart: init must be 'center' or 'defaults', got 'middle'"):
        MatchedStart(init="middle")
    with pytest.raises(ValueError, match="excerpts=0"):
        MatchedStart(excerpts=0)
    model = _model()
    with pytest.raises(ValueError, match=r"an anchor must be shaped \(4,\)"):
        model.start_at(torch.zeros(3), origin="test")
