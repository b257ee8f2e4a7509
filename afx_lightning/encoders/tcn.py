"""A streaming encoder: dilated 1-D convolutions over mel frames, whose per-frame cost does not grow with the context.

Every convolution is unpadded ("valid"), so an output position depends only on the ``receptive_field`` mel frames
under it, wherever they sit: the outputs inside one context are the same numbers whether the network runs on that
context alone (training) or once over the whole file's log-mel (``afx process``, :meth:`TemporalConvEncoder.logits_at`).
A context's features are the mean and max of its outputs, so at inference each frame costs ``frame_size / hop``
new network columns plus a pooling, whatever the context size; a CNN over the mel image pays for the whole context
at every frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import ParameterEncoder


class _Residual(nn.Module):
    """``x[crop] + ReLU(BN(conv_dilated(x)))``, unpadded: the output is ``(kernel - 1) * dilation`` frames shorter."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm1d(channels)
        self.crop = (kernel_size - 1) * dilation // 2
        self.shrink = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.norm(self.conv(x)))
        return x[..., self.crop : x.shape[-1] - (self.shrink - self.crop)] + y


class _Columns(nn.Module):
    """Normalised log-mel ``[B, 1, n_mels, T]`` -> features ``[B, C, T // stride - span + 1]``: the stem reads
    ``stride`` mel frames per column, the blocks ``span`` columns per output."""

    def __init__(self, n_mels: int, channels: int, kernel_size: int, dilations: Sequence[int], stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.stem = nn.Sequential(
            nn.Conv1d(n_mels, channels, stride, stride=stride, bias=False), nn.BatchNorm1d(channels), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[_Residual(channels, kernel_size, d) for d in dilations])
        self.span = 1 + sum(b.shrink for b in self.blocks)
        self.receptive_field = stride * self.span  # mel frames

    def forward(self, mel: Tensor) -> Tensor:
        if mel.shape[-1] < self.receptive_field:
            raise ValueError(
                f"TemporalConvEncoder: a context of {mel.shape[-1]} mel frames is shorter than its receptive field of "
                f"{self.receptive_field} frames; use a longer data.context_size or fewer/smaller dilations"
            )
        return self.blocks(self.stem(mel[:, 0]))


class _Pool(nn.Module):
    """``[..., C, W]`` -> ``[..., 2C]``: mean and max over the columns (the max keeps short events visible, as in the
    SmallEncoder), with ``centre`` also the middle column (``[..., 3C]``), all times a fixed ``scale`` (see
    :class:`TemporalConvEncoder`'s ``feature_scale`` and ``centre``)."""

    def __init__(self, scale: float, centre: bool) -> None:
        super().__init__()
        self.scale, self.centre = scale, centre

    def forward(self, columns: Tensor) -> Tensor:
        pooled = [columns.mean(dim=-1), columns.amax(dim=-1)]
        if self.centre:
            pooled.append(columns[..., columns.shape[-1] // 2])
        return torch.cat(pooled, dim=-1) * self.scale


class TemporalConvEncoder(ParameterEncoder):
    """Stem 1x1 over the mel bands -> residual dilated convolutions -> mean+max over the context -> dense.

    The stem is strided by ``stride`` mel frames, the hop between consecutive frames' contexts at the defaults
    (1024 / 256 = 4), so a new frame costs one network column. At the defaults (128 channels, kernel 3,
    dilations 1, 2, 4, 8) the receptive field is 31 columns = 124 mel frames (≈1.5 s at 22.05 kHz), inside a
    40 960-sample context's 157 frames; ≈0.3 M parameters. ``streaming`` tells the ``Processor`` that longer
    stretches of log-mel per call are cheap.

    ``feature_scale`` multiplies the pooled features before the dense head. Adam moves every head weight by about
    the learning rate per step whatever its gradient, so the head's outputs move by about ``lr`` times the
    features' L1 norm: the residual stack's unnormalised sums (mean |feature| ≈ 2.8 over 256 features at init,
    against the SmallEncoder's 1.6 over 192 and Inception's 0.16) made each step swing the parameters by over a
    logit at lr 2e-3, and SPSA's noisy gradients turned that into noise. At 0.1 the quickstart (120 steps, seeds
    0-2) reaches val/loss 0.384 / 0.378 / 0.338 instead of 0.635 / 0.453 / 0.519 (Inception: 0.324 / 0.399 /
    0.481); 0.03 learns too slowly (0.55), 0.3 is in between. It changes how training moves, not what the network
    can express. Checkpoints written before the option existed were trained at 1.0 and load so
    (:attr:`options_since`).

    ``centre=True`` adds the middle output column to the pooled features, the one centred on the frame being
    processed (the data module centres it in its context): a per-frame decision such as cutting a breath needs
    what is in the frame, not only somewhere in the context (the SmallEncoder's ``centre`` does the same). Through
    the residual connections that column holds the stem's column of the frame itself plus the dilated context
    around it, and it is the same column in training and in one pass over a file.
    """

    streaming = True
    options_since = {"feature_scale": 1.0}

    def __init__(
        self,
        num_params: int,
        sample_rate: int = 22050,
        channels: int = 128,
        kernel_size: int = 3,
        dilations: Sequence[int] = (1, 2, 4, 8),
        stride: int = 4,
        n_mels: int = 128,
        dropout: float = 0.0,
        feature_scale: float = 0.1,
        centre: bool = False,
    ) -> None:
        super().__init__(num_params, sample_rate=sample_rate, n_mels=n_mels, dropout=dropout)
        if not feature_scale > 0:
            raise ValueError(f"TemporalConvEncoder: feature_scale must be positive, got {feature_scale}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"TemporalConvEncoder: kernel_size must be odd and positive, got {kernel_size}")
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(f"TemporalConvEncoder: dilations must be positive integers, got {list(dilations)}")
        if stride < 1:
            raise ValueError(f"TemporalConvEncoder: stride must be a positive number of mel frames, got {stride}")
        self.body = nn.Sequential(
            _Columns(n_mels, channels, kernel_size, [int(d) for d in dilations], int(stride)),
            _Pool(float(feature_scale), bool(centre)),
        )
        self._build_head((3 if centre else 2) * channels)
        self._options = {
            "channels": int(channels),
            "kernel_size": int(kernel_size),
            "dilations": [int(d) for d in dilations],
            "stride": int(stride),
            "feature_scale": float(feature_scale),
            "centre": bool(centre),
        }

    def config_args(self) -> dict:
        return {**super().config_args(), **self._options}

    @property
    def columns(self) -> _Columns:
        return self.body[0]

    @property
    def pool(self) -> _Pool:
        return self.body[1]

    @property
    def receptive_field(self) -> int:
        """Mel frames one output column sees."""
        return self.columns.receptive_field

    def logits_at(self, log_mel: Tensor, starts: Tensor, window: int) -> Tensor:
        """The network runs once over the stretch; each context pools its own ``window // stride - span + 1``
        outputs, the same ones it computes alone (see the module docstring). Windows that do not start on the
        stem's grid (a frame size that is no multiple of ``stride`` mel hops) are encoded one by one."""
        stride = self.columns.stride
        if bool((starts % stride != 0).any()):
            return super().logits_at(log_mel, starts, window)
        width = window // stride - self.columns.span + 1
        if width < 1:
            self.columns(log_mel[..., :window])  # raises the one-line error naming the context
        columns = self.columns(self.frontend.norm(log_mel))[0]  # [C, K // stride - span + 1]
        index = (starts.to(columns.device) // stride)[:, None] + torch.arange(width, device=columns.device)
        features = self.pool(columns[:, index].permute(1, 0, 2))  # [Q, C, W] -> [Q, 2C] (3C with centre)
        return self.head(self.dropout(features))
