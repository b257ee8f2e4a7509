"""Inception-style encoder, the paper's first encoder (≈2.8 M parameters; Lee et al., ISMIR 2020 family)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ParameterEncoder, conv_bn_relu


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1, 1x1->5x5, 1x1->3x3->3x3, avgpool->1x1) concatenated: ``4 * width`` channels.

    Mixing receptive fields in one layer lets the encoder see both short transients (breaths, pops) and longer
    spectral shapes without choosing one kernel size.
    """

    def __init__(self, in_ch: int, width: int) -> None:
        super().__init__()
        w, w34, w32, w2 = width, width * 3 // 4, width * 3 // 2, width // 2
        self.b1 = conv_bn_relu(in_ch, w, 1)
        self.b5 = nn.Sequential(conv_bn_relu(in_ch, w34, 1), conv_bn_relu(w34, w, 5))
        self.b3 = nn.Sequential(conv_bn_relu(in_ch, w, 1), conv_bn_relu(w, w32, 3), conv_bn_relu(w32, w32, 3))
        self.bp = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), conv_bn_relu(in_ch, w2, 1)
        )
        self.out_channels = w + w + w32 + w2

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b5(x), self.b3(x), self.bp(x)], dim=1)


class ReductionBlock(nn.Module):
    """Halves both axes with strided conv branches plus a max-pool pass-through (Inception grid reduction)."""

    def __init__(self, in_ch: int, width: int) -> None:
        super().__init__()
        w, w34, w32 = width, width * 3 // 4, width * 3 // 2
        self.b3 = conv_bn_relu(in_ch, w34, 1, stride=2)
        self.b3dbl = nn.Sequential(
            conv_bn_relu(in_ch, w, 1), conv_bn_relu(w, w32, 3), conv_bn_relu(w32, w32, 3, stride=2)
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = w34 + w32 + in_ch

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b3(x), self.b3dbl(x), self.pool(x)], dim=1)


class InceptionEncoder(ParameterEncoder):
    """Stem conv -> ``num_stages`` x (reduction + inception) -> 1x1 embedding -> global average pool -> dense.

    At the defaults (width 64, 6 stages) this is ≈2.8 M parameters, the size the paper reports; the 128 mel bands
    are reduced to 1 and the 157 frames of a 40 960-sample context to 2 before pooling.

    ``channels_last`` (default on) runs the convolutions on NHWC tensors, which oneDNN's CPU kernels prefer: a
    paper-configuration encoder step (M = 100, forward + backward) took 5.6 s instead of 9.7 s on 2 cores, with the
    outputs equal within 2e-6 (same weights; ``benchmarks/train_step.py --encoders inception_nchw``). Weights and
    checkpoints are the same either way.
    """

    def __init__(
        self,
        num_params: int,
        sample_rate: int = 22050,
        width: int = 64,
        num_stages: int = 6,
        n_mels: int = 128,
        dropout: float = 0.0,
        channels_last: bool = True,
    ) -> None:
        super().__init__(num_params, sample_rate=sample_rate, n_mels=n_mels, dropout=dropout)
        self.width, self.num_stages, self.channels_last = width, num_stages, bool(channels_last)
        layers: list[nn.Module] = [conv_bn_relu(1, width, 5), nn.MaxPool2d(3, stride=2, padding=1)]
        ch = width
        for _ in range(num_stages):
            red = ReductionBlock(ch, width)
            inc = InceptionBlock(red.out_channels, width)
            layers += [red, inc]
            ch = inc.out_channels
        embed = 4 * width
        layers += [nn.Conv2d(ch, embed, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        if self.channels_last:
            self.body.to(memory_format=torch.channels_last)
        self._build_head(embed)

    def logits_from_log_mel(self, log_mel: Tensor) -> Tensor:
        if self.channels_last:
            log_mel = log_mel.contiguous(memory_format=torch.channels_last)
        return super().logits_from_log_mel(log_mel)

    def config_args(self) -> dict:
        return {
            **super().config_args(),
            "width": self.width,
            "num_stages": self.num_stages,
            "channels_last": self.channels_last,
        }
