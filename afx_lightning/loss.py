"""Delay-invariant loss (paper §2.4): align by the cross-correlation peak, then time + spectral distances.

Plugins, multiband ones above all, delay their output (filter group delay, look-ahead, reported latency) and may
invert its polarity. Comparing the rendered frame with the target sample by sample would then punish a correct
parameter setting, so each item is first aligned:

* ``tau = argmax_s |xcorr(pred, target)[s]|`` over ``0 <= s <= max_shift`` with ``pred[t + s] ~ target[t]`` (the
  plugin can only delay). Absolute value, so an inverted output aligns too. By default the correlation is
  normalised by the energies of the overlapping parts (see :func:`estimate_delay`). One delay per item, shared by
  its channels (correlation magnitudes summed over channels). Computed by FFT for the whole batch at once and not
  differentiated (it is an index).
* ``pred[tau:]`` is compared with ``target[:N - tau]``. The trim is a gather, so gradients reach ``pred``.

Distances on the aligned pair (``C`` channels, ``M = N - tau`` valid samples):

* ``L_time = min(mean|p - y|, mean|p + y|)`` — mean over the ``C * M`` valid samples, so it does not grow with
  ``N``; the min over polarities is taken per item (the official code takes it over the whole batch).
* ``L_freq = D(|P|, |Y|) + D(log|P|, log|Y|)``, with ``|P|`` the magnitude of an ``n_fft``-point FFT of the
  Hann-windowed, zero-padded aligned frame (frames longer than ``n_fft`` are cut into consecutive ``n_fft`` chunks,
  the last one zero-padded; the paper's 1024-sample frame is one chunk). Window and scale follow the official code
  (``tf.signal.stft``: periodic Hann, unnormalised FFT), against which the paper's weights (10, 1) were tuned.
  ``|X|`` is ``sqrt(re^2 + im^2 + eps)``, smooth at zero, and the natural log is taken of that (official:
  ``log(|X| + 1e-5)``). ``D`` is chosen by ``spectral_distance``:

  - ``"rms"`` (default): ``sqrt(mean(d^2) + eps)``, the paper's L2 norm divided by ``sqrt(#bins)``: same shape as a
    norm, but independent of ``N``, ``n_fft`` and the channel count;
  - ``"mse"``: ``mean(d^2)``, what the official DeepAFx code computes.

``L = time_weight * L_time + freq_weight * L_freq + mfcc_weight * L_mfcc``.

The third term (off by default, 0 in the paper) weighs timbre apart from level: ``L_mfcc`` is
:func:`~afx_lightning.metrics.mfcc_l1_distance` on the aligned pair, the mean absolute difference of the 13 MFCCs of
the level-matched frames (the features of d_MFCC, in units of 10 dB). ``L_time`` and the linear half of ``L_freq``
are dominated by the loudest bins, so a model trained on them alone gets the level right long before the spectral
envelope; the fidelity goals are stated in d_MFCC, whose features this term compares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .constants import LOSS_MAX_SHIFT, N_FFT, SAMPLE_RATE
from .metrics import mfcc_l1_distance


@dataclass
class DelayInvariantLossOutput:
    """Per-item breakdown, for logging and tests (all tensors ``[B]``)."""

    loss: Tensor
    time: Tensor
    freq: Tensor
    mfcc: Tensor  # the timbre term (zeros when mfcc_weight is 0: not computed)
    delay: Tensor  # samples by which pred lags target (int64)
    inverted: Tensor  # True where the polarity-inverted comparison was the smaller one


def _as_bcn(x: Tensor) -> Tensor:
    if x.dim() == 1:
        return x[None, None]
    if x.dim() == 2:
        return x[:, None]
    if x.dim() == 3:
        return x
    raise ValueError(f"expected audio [B, C, N], [B, N] or [N], got shape {tuple(x.shape)}")


@torch.no_grad()
def estimate_delay(pred: Tensor, target: Tensor, max_shift: int, normalized: bool = True) -> Tensor:
    """Delay ``tau`` in ``[0, max_shift]`` by which ``pred`` lags ``target`` (``pred[t + tau] ~ target[t]``), per item.

    Maximises ``sum_c |xcorr_c[s]|`` with ``xcorr_c[s] = sum_t pred[c, t + s] target[c, t]``; ``normalized``
    divides by ``sqrt(E_pred(s) E_target(s))``, the energies of exactly the samples compared after trimming by
    ``s``. Unnormalised, a shorter shift can win just because its longer overlap takes in more energy (e.g. a loud
    low-frequency onset in the tail that the true shift trims away); normalised, an exact delayed copy scores 1,
    the Cauchy-Schwarz maximum, so it is always found.
    ``pred`` and ``target`` are ``[B, C, N]``; returns int64 ``[B]``. One batched real FFT of length ``>= 2N``
    (no circular wrap-around), in float64. Shifts are capped at ``3N / 4``, so at least a quarter of the frame is
    compared (a normalised correlation over a handful of samples is meaningless: one sample always scores 1).
    """
    n = pred.shape[-1]
    max_shift = max(0, min(int(max_shift), (3 * n) // 4))
    p, y = pred.detach().double(), target.detach().double()
    n_fft = 1 << (2 * n - 1).bit_length()
    spec = torch.fft.rfft(p, n=n_fft) * torch.fft.rfft(y, n=n_fft).conj()
    score = torch.fft.irfft(spec, n=n_fft)[..., : max_shift + 1].abs().sum(dim=1)  # [B, S]
    if normalized:
        p2, y2 = p.square().sum(dim=1), y.square().sum(dim=1)  # [B, N]
        suffix = p2.flip(-1).cumsum(-1).flip(-1)  # suffix[s] = sum_{t >= s} pred[t]^2
        prefix = y2.cumsum(-1)  # prefix[k] = sum_{t <= k} target[t]^2
        shifts = torch.arange(max_shift + 1, device=p.device)
        energy = suffix[:, shifts] * prefix[:, n - 1 - shifts]
        score = score / energy.sqrt().clamp_min(1e-30)
    return score.argmax(dim=-1)


class DelayInvariantLoss(nn.Module):
    """The paper's loss: ``time_weight * L_time + freq_weight * L_freq`` after delay/polarity alignment.

    Args:
        max_shift: largest delay searched, in samples (official code: 100; 300 suits mastering chains).
        time_weight: weight of the polarity-invariant L1 term (paper: 10).
        freq_weight: weight of the spectral term (paper: 1).
        n_fft: FFT size of the spectral term (paper: 1024).
        eps: floor inside the magnitude's square root and the RMS (keeps log and gradients finite on silence).
        spectral_distance: ``"rms"`` (length-independent form of the paper's L2 norm) or ``"mse"`` (official code).
        normalized_xcorr: pick the delay by normalised cross-correlation (see :func:`estimate_delay`); ``False``
            uses the raw cross-correlation, as the paper and official code do.
        mfcc_weight: weight of the timbre term ``L_mfcc`` (0: the paper's loss).
        sample_rate: the audio's rate (the timbre term's mel filterbank).
    """

    def __init__(
        self,
        max_shift: int = LOSS_MAX_SHIFT,
        time_weight: float = 10.0,
        freq_weight: float = 1.0,
        n_fft: int = N_FFT,
        eps: float = 1e-8,
        spectral_distance: Literal["rms", "mse"] = "rms",
        normalized_xcorr: bool = True,
        mfcc_weight: float = 0.0,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        super().__init__()
        if mfcc_weight < 0:
            raise ValueError(f"model.loss.mfcc_weight must be >= 0, got {mfcc_weight}")
        if spectral_distance not in ("rms", "mse"):
            raise ValueError(f"spectral_distance must be 'rms' or 'mse', got {spectral_distance!r}")
        self.max_shift = max_shift
        self.time_weight = time_weight
        self.freq_weight = freq_weight
        self.n_fft = n_fft
        self.eps = eps
        self.spectral_distance = spectral_distance
        self.normalized_xcorr = normalized_xcorr
        self.mfcc_weight = mfcc_weight
        self.sample_rate = sample_rate
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean of the per-item losses over the batch (a scalar)."""
        return self.per_item(pred, target).loss.mean()

    def per_item(self, pred: Tensor, target: Tensor) -> DelayInvariantLossOutput:
        """Per-item losses, their time/frequency parts, the chosen delays and polarities."""
        pred, target = _as_bcn(pred), _as_bcn(target).to(pred.dtype)
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        b, c, n = pred.shape
        delay = estimate_delay(pred, target, self.max_shift, self.normalized_xcorr)

        # Align: p[t] = pred[t + tau], y[t] = target[t], both zeroed for t >= N - tau (a differentiable gather).
        t = torch.arange(n, device=pred.device)
        valid = t[None, :] < (n - delay)[:, None]  # [B, N]
        idx = (t[None, :] + delay[:, None]).clamp(max=n - 1)
        mask = valid[:, None, :].to(pred.dtype)
        p = torch.gather(pred, 2, idx[:, None, :].expand(b, c, n)) * mask
        y = target * mask

        count = (c * (n - delay)).to(pred.dtype)
        l1_same = (p - y).abs().sum(dim=(1, 2)) / count
        l1_inv = (p + y).abs().sum(dim=(1, 2)) / count
        time = torch.minimum(l1_same, l1_inv)

        mag_p, mag_y = self._magnitude(p), self._magnitude(y)
        freq = self._distance(mag_p, mag_y) + self._distance(mag_p.log(), mag_y.log())

        loss = self.time_weight * time + self.freq_weight * freq
        if self.mfcc_weight > 0:
            timbre = mfcc_l1_distance(p, y, self.sample_rate)
            loss = loss + self.mfcc_weight * timbre
        else:
            timbre = torch.zeros_like(loss)
        return DelayInvariantLossOutput(
            loss=loss, time=time, freq=freq, mfcc=timbre, delay=delay, inverted=l1_inv < l1_same
        )

    def _magnitude(self, x: Tensor) -> Tensor:
        """``[B, C, N]`` -> ``[B, C, chunks, n_fft // 2 + 1]`` windowed FFT magnitudes."""
        n = x.shape[-1]
        chunks = -(-n // self.n_fft)
        x = nn.functional.pad(x, (0, chunks * self.n_fft - n))
        x = x.unflatten(-1, (chunks, self.n_fft)) * self.window.to(x)
        spec = torch.fft.rfft(x, dim=-1)
        return torch.sqrt(spec.real.square() + spec.imag.square() + self.eps)

    def _distance(self, a: Tensor, b: Tensor) -> Tensor:
        mse = (a - b).square().flatten(1).mean(dim=1)
        return torch.sqrt(mse + self.eps) if self.spectral_distance == "rms" else mse


@dataclass(frozen=True)
class LossConfig:
    """The loss as a config part (``model.loss`` in a recipe): :class:`DelayInvariantLoss`'s options.

    ``max_shift`` is the extra alignment search in samples: :meth:`build` adds the chain's reported latency, which
    is known only once the chain is built.
    """

    max_shift: int = LOSS_MAX_SHIFT
    time_weight: float = 10.0
    freq_weight: float = 1.0
    spectral_distance: Literal["rms", "mse"] = "rms"
    normalized_xcorr: bool = True
    mfcc_weight: float = 0.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LossConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"model.loss has no option {', '.join(unknown)} (options: {', '.join(sorted(names))})")
        return cls(**config)

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def build(self, latency: int = 0, sample_rate: int = SAMPLE_RATE) -> DelayInvariantLoss:
        return DelayInvariantLoss(
            int(self.max_shift) + int(latency),
            self.time_weight,
            self.freq_weight,
            spectral_distance=self.spectral_distance,
            normalized_xcorr=self.normalized_xcorr,
            mfcc_weight=self.mfcc_weight,
            sample_rate=sample_rate,
        )
