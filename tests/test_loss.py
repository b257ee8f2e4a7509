"""Delay-invariant loss: alignment, polarity, discrimination, gradients, batching."""

from __future__ import annotations

import pytest
import torch

from afx_lightning.loss import DelayInvariantLoss, LossConfig, estimate_delay

N = 1024
START = 2048


def _audio(batch: int, length: int, seed: int) -> torch.Tensor:
    """Music-like test audio: two decaying harmonic tones over coloured noise, different per row."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 22050.0
    f0 = 110.0 + 330.0 * torch.rand(batch, 1, generator=g)
    tone = sum(torch.sin(2 * torch.pi * k * f0 * t + k) / k for k in (1, 2, 3))
    env = torch.exp(-((t * 3.0) % 1.0) * 4.0)
    white = torch.randn(batch, length, generator=g)
    coloured = white + 0.7 * torch.roll(white, 1, dims=-1)  # gentle low-pass
    return 0.3 * tone * env + 0.05 * coloured


def _windows(delay: int, seed: int = 0, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) [B, 1, N] cut from one longer signal, pred lagging target by ``delay`` samples."""
    x = _audio(batch, 4 * N, seed)
    target = x[:, START : START + N]
    pred = x[:, START - delay : START - delay + N]
    return pred[:, None], target[:, None]


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("delay", [0, 7, 63])
def test_delayed_copy_scores_near_zero_and_delay_is_found(delay: int, normalized: bool) -> None:
    loss = DelayInvariantLoss(normalized_xcorr=normalized)
    pred, target = _windows(delay)
    out = loss.per_item(pred, target)
    assert out.delay.tolist() == [delay] * 3
    assert torch.all(out.loss < 1e-3), out.loss
    assert not out.inverted.any()
    # Without alignment a 7-sample lag would already be heavily penalised: the alignment is doing the work.
    if delay:
        unaligned = DelayInvariantLoss(max_shift=0).per_item(pred, target).loss
        assert torch.all(unaligned > 100 * out.loss.clamp_min(1e-4))


@pytest.mark.parametrize("delay", [0, 63])
def test_polarity_inverted_copy_scores_near_zero(delay: int) -> None:
    loss = DelayInvariantLoss()
    pred, target = _windows(delay)
    out = loss.per_item(-pred, target)
    assert out.delay.tolist() == [delay] * 3
    assert out.inverted.all()
    assert torch.all(out.loss < 1e-3), out.loss


def test_different_signal_scores_much_higher() -> None:
    loss = DelayInvariantLoss()
    pred, target = _windows(7)
    other = _audio(3, N, seed=123)[:, None]
    same = loss.per_item(pred, target).loss
    diff = loss.per_item(other, target).loss
    assert torch.all(diff > 1.0)
    assert torch.all(diff > 1000 * same)
    # A small gain error lies in between: the loss is graded, not a match/no-match switch.
    close = loss.per_item(0.9 * pred, target).loss
    assert torch.all((close > 10 * same) & (close < diff))


def test_delay_beyond_max_shift_is_not_recovered() -> None:
    loss = DelayInvariantLoss(max_shift=20)
    pred, target = _windows(50)
    out = loss.per_item(pred, target)
    assert torch.all(out.delay <= 20)
    assert torch.all(out.loss > 1.0)
    assert torch.all(DelayInvariantLoss(max_shift=100).per_item(pred, target).loss < 1e-3)


@pytest.mark.parametrize("normalized", [True, False])
def test_max_shift_larger_than_frame_is_clamped(normalized: bool) -> None:
    x = _audio(4, 96, seed=5)[:, None]
    assert estimate_delay(x, x, max_shift=10_000, normalized=normalized).tolist() == [0] * 4
    assert estimate_delay(x[..., 10:74], x[..., 20:84], 10_000, normalized).tolist() == [10] * 4
    y = _audio(4, 64, seed=6)[:, None]  # unrelated: any answer, but a quarter of the frame is still compared
    assert estimate_delay(x[..., :64], y, 10_000, normalized).max() <= 48


def test_gradient_matches_autograd_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    loss = DelayInvariantLoss(max_shift=4, n_fft=16).double()
    src = torch.randn(2, 1, 40, generator=g, dtype=torch.float64)
    target = src[..., 8:32]
    pred = (src[..., 5:29] + 0.3 * torch.randn(2, 1, 24, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert loss.per_item(pred, target).delay.tolist() == [3, 3]  # a non-trivial trim is exercised
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,), eps=1e-6, atol=1e-5)


def test_gradient_flows_to_pred_only_through_the_compared_samples() -> None:
    loss = DelayInvariantLoss()
    pred, target = _windows(63)
    pred = (pred + 0.01 * torch.randn_like(pred)).requires_grad_(True)
    loss(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad[..., 63:].abs().sum() > 0
    # pred[:tau] is trimmed away, so it cannot influence the loss.
    assert torch.all(pred.grad[..., :63] == 0)


def test_perfect_match_has_finite_gradient() -> None:
    pred, target = _windows(0)
    pred = pred.clone().requires_grad_(True)
    DelayInvariantLoss()(pred, target).backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("spectral_distance", ["rms", "mse"])
def test_batch_equals_items_one_by_one(spectral_distance: str) -> None:
    loss = DelayInvariantLoss(spectral_distance=spectral_distance)
    preds, targets, delays = [], [], [0, 7, 63, 20]
    for i, d in enumerate(delays):
        p, t = _windows(d, seed=i, batch=1)
        p = p + 0.02 * _audio(1, N, seed=100 + i)[:, None]  # imperfect, so losses are non-trivial
        preds.append(torch.cat([p, -0.5 * p], dim=1))  # stereo, second channel scaled and inverted
        targets.append(torch.cat([t, -0.5 * t], dim=1))
    batch = loss.per_item(torch.cat(preds), torch.cat(targets))
    single = [loss.per_item(p, t) for p, t in zip(preds, targets)]
    assert batch.delay.tolist() == delays == [s.delay.item() for s in single]
    torch.testing.assert_close(batch.loss, torch.cat([s.loss for s in single]))
    torch.testing.assert_close(loss(torch.cat(preds), torch.cat(targets)), batch.loss.mean())


def test_loss_does_not_scale_with_frame_length() -> None:
    x = _audio(2, 16 * N, seed=3)
    y = x + 0.05 * _audio(2, 16 * N, seed=4)
    loss = DelayInvariantLoss()
    short = loss(x[:, None, :N], y[:, None, :N])
    long = loss(x[:, None, : 8 * N], y[:, None, : 8 * N])
    assert 0.5 < (long / short).item() < 2.0


@pytest.mark.parametrize("delay", [0, 63])
def test_time_term_is_mean_over_compared_samples(delay: int) -> None:
    """A constant 0.1 error must cost exactly 0.1 in L_time whatever the trim (mean over N - tau, not N)."""
    pred, target = _windows(delay)
    out = DelayInvariantLoss().per_item(pred + 0.1, target)
    assert out.delay.tolist() == [delay] * 3
    torch.testing.assert_close(out.time, torch.full((3,), 0.1), rtol=1e-4, atol=1e-6)


def test_normalized_xcorr_survives_a_loud_event_at_the_frame_end() -> None:
    """A loud low-frequency onset in the trimmed tail fools the raw correlation (it picks ~2 here), not ours."""
    g = torch.Generator().manual_seed(0)
    s = 0.05 * torch.randn(1, 1, 3000, generator=g, dtype=torch.float64)
    burst = torch.arange(1000 + N - 100, 1000 + N + 50)
    s[..., burst] += torch.sin(2 * torch.pi * 40 * burst.double() / 22050)
    target, pred = s[..., 1000 : 1000 + N], s[..., 1000 - 60 : 1000 - 60 + N]
    assert estimate_delay(pred, target, 100, normalized=True).item() == 60
    assert DelayInvariantLoss().per_item(pred, target).loss.item() < 1e-3


def _lowpass(x: torch.Tensor, passes: int = 8) -> torch.Tensor:
    """A darker copy: repeated two-tap averaging (about -6 dB at 5 kHz after 8 passes)."""
    for _ in range(passes):
        x = 0.5 * (x + torch.roll(x, 1, dims=-1))
    return x


def test_timbre_term_ignores_level_and_delay_but_sees_the_spectral_envelope() -> None:
    loss = LossConfig(mfcc_weight=2.0).build()
    pred, target = _windows(delay=23)
    same = loss.per_item(0.25 * pred, target)  # quieter and late, same timbre
    darker = loss.per_item(0.25 * _lowpass(pred), target)
    assert same.mfcc.max() < 0.05
    assert darker.mfcc.min() > 10 * same.mfcc.max()
    base = DelayInvariantLoss().per_item(0.25 * _lowpass(pred), target)
    torch.testing.assert_close(darker.loss, base.loss + 2.0 * darker.mfcc)


def test_timbre_term_gradient_matches_finite_differences() -> None:
    loss = LossConfig(mfcc_weight=1.0, time_weight=0.0, freq_weight=0.0).build()
    pred, target = (x.double() for x in _windows(delay=0, batch=1))
    pred = _lowpass(pred, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: loss.per_item(p, target).mfcc, (pred,), eps=1e-6, atol=1e-5)


def test_timbre_weight_is_checked_and_kept_in_the_config() -> None:
    with pytest.raises(ValueError, match="model.loss.mfcc_weight must be >= 0"):
        LossConfig(mfcc_weight=-1.0).build()
    config = LossConfig(mfcc_weight=3.0).get_config()
    assert config["mfcc_weight"] == 3.0 and LossConfig.from_config(config).build().mfcc_weight == 3.0
    assert DelayInvariantLoss().per_item(*_windows(delay=0)).mfcc.abs().max() == 0.0  # off: not computed
