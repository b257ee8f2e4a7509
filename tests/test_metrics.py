"""d_MFCC: identity, gain invariance, ordering, shapes, and agreement with torchaudio's MFCC."""

from __future__ import annotations

import pytest
import torch
import torchaudio

from afx_lightning.metrics import mean_mfcc_distance, mfcc, mfcc_distance

SR = 22050


def _notes(batch: int, seconds: float, seed: int) -> torch.Tensor:
    """Harmonic notes with changing pitch and a little noise: MFCCs that vary over time."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    f0 = 100.0 + 400.0 * torch.rand(batch, 1, generator=g)
    f = f0 * (1 + 0.5 * (t * 2).floor() % 3)  # a new note every 0.5 s
    phase = 2 * torch.pi * torch.cumsum(f, dim=-1) / SR
    harm = torch.rand(batch, 5, 1, generator=g)
    x = sum(harm[:, k] * torch.sin((k + 1) * phase) / (k + 1) for k in range(5))
    env = torch.exp(-((t * 2) % 1) * 5)
    return 0.3 * x * env + 0.003 * torch.randn(batch, t.numel(), generator=g)


@pytest.mark.parametrize("over", ["frames", "coefficients"])
def test_identity_is_zero(over: str) -> None:
    x = _notes(3, 1.0, seed=0)
    d = mfcc_distance(x, x, SR, over=over)
    assert d.shape == (3,)
    assert torch.all(d.abs() < 1e-5)


@pytest.mark.parametrize("over", ["frames", "coefficients"])
def test_global_gain_is_ignored(over: str) -> None:
    x = _notes(3, 1.0, seed=0)
    noisy = x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    for gain in (1e-4, 0.1, 4.0):  # 1e-4 puts the raw signal under the -100 dB floor: normalisation matters
        assert torch.all(mfcc_distance(gain * x, x, SR, over=over).abs() < 1e-5)
        torch.testing.assert_close(
            mfcc_distance(gain * noisy, x, SR, over=over), mfcc_distance(noisy, x, SR, over=over), rtol=1e-3, atol=1e-6
        )


@pytest.mark.parametrize("over", ["frames", "coefficients"])
def test_different_signal_is_farther_than_noisy_copy(over: str) -> None:
    x = _notes(4, 1.0, seed=0)
    noisy = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))  # ~ -40 dB
    other = _notes(4, 1.0, seed=2)
    d_noisy = mfcc_distance(noisy, x, SR, over=over)
    d_other = mfcc_distance(other, x, SR, over=over)
    assert torch.all(d_noisy > 1e-6)
    assert torch.all(d_other > 2 * d_noisy), (d_noisy, d_other)


def test_channels_are_downmixed_and_batch_mean() -> None:
    x = _notes(2, 0.5, seed=0)
    y = _notes(2, 0.5, seed=3)
    stereo = torch.stack([x, x], dim=1)
    torch.testing.assert_close(mfcc_distance(stereo, y[:, None], SR), mfcc_distance(x, y, SR))
    torch.testing.assert_close(mean_mfcc_distance(x, y, SR), mfcc_distance(x, y, SR).mean())


def test_items_do_not_interact() -> None:
    """dB are relative to each item's own peak: a loud neighbour in the batch must not change a quiet item."""
    x = _notes(2, 0.5, seed=0)
    y = _notes(2, 0.5, seed=3)
    x_loud = x.clone()
    x_loud[1] *= 1000
    torch.testing.assert_close(mfcc(x_loud)[0], mfcc(x)[0])
    torch.testing.assert_close(mfcc_distance(x_loud, y, SR)[0], mfcc_distance(x, y, SR)[0])


def test_mfcc_is_relative_to_each_signals_peak() -> None:
    x = _notes(2, 0.5, seed=0)
    torch.testing.assert_close(mfcc(0.01 * x), mfcc(x), rtol=1e-4, atol=1e-3)


def test_reductions_match_a_direct_computation() -> None:
    """'frames': 1 - cos of 13-dim vectors, mean over frames; 'coefficients': of time rows, mean over the 13."""
    x, y = _notes(1, 0.5, seed=0), _notes(1, 0.5, seed=3)
    a, b = mfcc(x / x.abs().mean())[0], mfcc(y / y.abs().mean())[0]  # [13, frames]

    def cos_dist(u: torch.Tensor, v: torch.Tensor) -> float:
        return 1.0 - float(u @ v / (u.norm() * v.norm()))

    frames = sum(cos_dist(a[:, f], b[:, f]) for f in range(a.shape[1])) / a.shape[1]
    coeffs = sum(cos_dist(a[k], b[k]) for k in range(13)) / 13
    assert abs(frames - coeffs) > 1e-3  # the two definitions really differ on this pair
    assert mfcc_distance(x, y, SR, over="frames").item() == pytest.approx(frames, rel=1e-4)
    assert mfcc_distance(x, y, SR, over="coefficients").item() == pytest.approx(coeffs, rel=1e-4)


def test_mfcc_agrees_with_torchaudio_transform() -> None:
    """Same mel/DCT as torchaudio.transforms.MFCC; only c0 differs, by the peak-dB reference (librosa ref=np.max)."""
    x = _notes(1, 0.5, seed=0)
    ours = mfcc(x, SR)
    ta = torchaudio.transforms.MFCC(
        sample_rate=SR,
        n_mfcc=13,
        melkwargs=dict(
            n_fft=1024, hop_length=256, n_mels=128, center=True, pad_mode="constant", norm="slaney", mel_scale="slaney"
        ),
    )(x)
    assert ours.shape == ta.shape == (1, 13, x.shape[-1] // 256 + 1)
    torch.testing.assert_close(ours[:, 1:], ta[:, 1:], rtol=1e-4, atol=1e-3)
    offset = ours[:, 0] - ta[:, 0]  # constant: -peak_dB * sqrt(128)
    torch.testing.assert_close(offset, offset.mean().expand_as(offset), rtol=1e-4, atol=1e-3)
