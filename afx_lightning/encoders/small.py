"""A tiny CNN encoder for CPU demos and tests, where the paper's encoders would dominate the run time."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ParameterEncoder, conv_bn_relu


class _MeanMaxPool(nn.Module):
    """Global average and max pooling, concatenated: the max keeps short events (a breath) visible.

    ``centre``: also the average and max over frequency of the middle time column, where the frame being
    processed sits in its context (the data module centres it), so an event in the frame is told apart from
    the same event elsewhere in the context.
    """

    def __init__(self, centre: bool = False) -> None:
        super().__init__()
        self.centre = centre

    def forward(self, x: Tensor) -> Tensor:
        pooled = [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        if self.centre:
            middle = x[..., x.shape[-1] // 2]  # [B, C, F]
            pooled += [middle.mean(dim=2), middle.amax(dim=2)]
        return torch.cat(pooled, dim=1)


class SmallEncoder(ParameterEncoder):
    """Four conv-BN-ReLU + max-pool stages, widths ``width * (1, 2, 4, 6)``: ≈80 k parameters at width 16.

    ``centre=True`` adds the features of the context's middle (the current frame) to the global pooling: what a
    task that acts on short events needs (breath removal), where global pooling alone cannot say *when*.
    """

    def __init__(
        self,
        num_params: int,
        sample_rate: int = 22050,
        width: int = 16,
        n_mels: int = 128,
        dropout: float = 0.0,
        centre: bool = False,
    ) -> None:
        super().__init__(num_params, sample_rate=sample_rate, n_mels=n_mels, dropout=dropout)
        self.width = width
        chans = [1, width, 2 * width, 4 * width, 6 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            # ceil_mode keeps a 1-frame input at 1 frame instead of pooling it away.
            layers += [conv_bn_relu(cin, cout, 3), nn.MaxPool2d(2, ceil_mode=True)]
        layers.append(_MeanMaxPool(centre))
        self.body = nn.Sequential(*layers)
        self._build_head((4 if centre else 2) * chans[-1])
        self.centre = centre

    def config_args(self) -> dict:
        return {**super().config_args(), "width": self.width, "centre": self.centre}
