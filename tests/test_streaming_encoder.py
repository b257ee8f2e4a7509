"""The streaming encoder (issue 14): per-context training outputs equal one pass over the whole file's log-mel."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from afx_lightning.blackbox import FxConfig
from afx_lightning.encoders import TemporalConvEncoder, count_parameters, declared_encoders
from afx_lightning.inference import Processor, _array_source
from afx_lightning.module import DeepAFx


def _randomised(enc: TemporalConvEncoder) -> TemporalConvEncoder:
    """Eval mode with non-trivial batch-norm statistics and head, as after training."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        enc.head.weight.normal_(0.0, 0.5, generator=g)
    return enc.eval()


@pytest.mark.parametrize("centre", [False, True])
def test_one_pass_over_the_file_gives_each_contexts_own_outputs(centre: bool) -> None:
    """``logits_at`` on a stretch of log-mel equals encoding each window alone (1e-5), and the contexts differ."""
    torch.manual_seed(0)
    enc = _randomised(TemporalConvEncoder(num_params=5, channels=16, dilations=(1, 2, 4), stride=2, centre=centre))
    assert enc.receptive_field == 30  # 15 columns of 2 mel frames
    mel = torch.randn(1, 1, 128, 95)
    window = 41  # an odd window: its last frame is beyond the stem's grid, alone and in the stretch
    for starts in (torch.tensor([0, 4, 8, 38, 54]), torch.tensor([0, 3, 54])):  # on the grid / off it (fallback)
        with torch.no_grad():
            fast = enc.logits_at(mel, starts, window)
            alone = torch.cat([enc.logits_from_log_mel(mel[..., s : s + window]) for s in starts.tolist()])
        torch.testing.assert_close(fast, alone, atol=1e-5, rtol=0)
        assert (alone[0] - alone[-1]).abs().max() > 1e-2


def test_afx_process_with_the_streaming_encoder_matches_per_context_encoding() -> None:
    torch.manual_seed(0)
    factory = functools.partial(TemporalConvEncoder, channels=16, dilations=(1, 2, 4))
    model = DeepAFx(fx=FxConfig(chain="pb_mb_compressor", workers=1), encoder=factory, num_slots=1, num_eval_slots=1)
    try:
        _randomised(model.encoder)
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((1, 22050 * 2 + 333)) * np.geomspace(0.01, 1, 22050 * 2 + 333)).astype(np.float32)
        source = _array_source(x, 22050)
        kwargs = dict(smoothing_hz=0, context_size=16384, batch_size=3)
        fast = Processor(model, **kwargs).predict(source).raw
        slow = Processor(model, share_log_mel=False, **kwargs).predict(source).raw
        np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=0)
        assert np.ptp(slow, axis=0).max() > 1e-2
    finally:
        model.fx.close()


def test_it_trains_is_declared_and_refuses_a_context_shorter_than_its_receptive_field() -> None:
    enc = TemporalConvEncoder(num_params=3)
    assert enc.receptive_field == 124  # inside a 40 960-sample context's 157 frames
    assert 200_000 < count_parameters(enc) < 500_000
    out = enc(0.1 * torch.randn(2, 1, 40960))
    assert out.shape == (2, 3) and torch.all((out > 0) & (out < 1))
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    assert (
        declared_encoders()["afx_lightning.encoders.TemporalConvEncoder"]
        == "afx_lightning.encoders.tcn:TemporalConvEncoder"
    )
    with pytest.raises(
        ValueError, match=r"context of 37 mel frames is shorter than its receptive field of 124 .*data.context_size"
    ):
        enc(torch.zeros(1, 1, 1024 + 36 * 256))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        TemporalConvEncoder(num_params=3, kernel_size=2)
    with pytest.raises(ValueError, match="feature_scale must be positive, got 0"):
        TemporalConvEncoder(num_params=3, feature_scale=0)


def test_centre_adds_the_column_under_the_frame_being_processed() -> None:
    """The middle output column is the one centred on the context's middle, where the data module puts the frame."""
    enc = _randomised(TemporalConvEncoder(num_params=2, channels=8, dilations=(1,), stride=2, centre=True))
    assert enc.head.in_features == 3 * 8 and enc.get_config()["init_args"]["centre"] is True
    mel = torch.zeros(1, 1, 128, 40)
    with torch.no_grad():
        columns = enc.columns(enc.frontend.norm(mel))  # [1, 8, 40 // 2 - 3 + 1 = 18]
        features = enc.body(enc.frontend.norm(mel))
        edge, middle = mel.clone(), mel.clone()
        edge[..., 0:4] = 3.0  # an event under the first output columns only (receptive field 6 mel frames)
        middle[..., 18:22] = 3.0  # the same event under the middle column (stem columns 9-11)
        at_edge = enc.body(enc.frontend.norm(edge)) - features
        at_middle = enc.body(enc.frontend.norm(middle)) - features
    torch.testing.assert_close(features[:, 16:], 0.1 * columns[..., 9])
    assert at_edge[:, :16].abs().max() > 1e-3 and at_edge[:, 16:].abs().max() == 0  # pooled features only
    assert at_middle[:, 16:].abs().max() > 1e-3


def test_the_feature_scale_bounds_how_far_one_adam_step_moves_the_outputs() -> None:
    """From the defaults start (head weights 0), Adam's first step moves every head weight by ~lr, so the logits
    move by ~lr x the pooled features' L1 norm: over a logit unscaled, a tenth of that at the default 0.1."""
    audio = 0.1 * torch.randn(4, 1, 40960, generator=torch.Generator().manual_seed(0))

    def first_step_move(feature_scale: float) -> float:
        torch.manual_seed(0)
        enc = TemporalConvEncoder(num_params=3, feature_scale=feature_scale)
        enc.init_output_bias(torch.full((3,), 0.5))
        opt = torch.optim.Adam(enc.parameters(), lr=2e-3)
        before = enc.logits(audio)
        (before * torch.tensor([1.0, -1.0, 1.0])).sum().backward()
        opt.step()
        return (enc.logits(audio) - before.detach()).abs().mean().item()

    unscaled, default = first_step_move(1.0), first_step_move(0.1)
    assert unscaled > 1.0 and default < 0.25 * unscaled


@pytest.mark.slow
def test_a_compiled_encoder_gives_the_same_theta_on_padded_batches() -> None:
    """``Processor(compile=True)``: torch.compile with frozen weights, short batches padded to one shape (issue 14)."""
    from afx_lightning.encoders import SmallEncoder

    torch.manual_seed(0)
    model = DeepAFx(
        fx=FxConfig(chain="pb_mb_compressor", workers=1),
        encoder=functools.partial(SmallEncoder, width=4),
        num_slots=1,
        num_eval_slots=1,
    )
    try:
        with torch.no_grad():
            model.encoder.head.weight.normal_(0.0, 30.0)
        x = (0.1 * np.random.default_rng(0).standard_normal((1, 22050 + 77))).astype(np.float32)
        source = _array_source(x, 22050)
        kwargs = dict(smoothing_hz=0, context_size=8192, batch_size=8, predict_hop=3)
        compiled = Processor(model, compile=True, **kwargs).predict(source).raw
        eager = Processor(model, **kwargs).predict(source).raw
        np.testing.assert_allclose(compiled, eager, atol=1e-5, rtol=0)
        assert np.ptp(eager, axis=0).max() > 1e-2
    finally:
        model.fx.close()
