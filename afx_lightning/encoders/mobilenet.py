"""MobileNetV2 encoder, the paper's second encoder (≈2.2 M parameters at width 1.0, like the official Keras model)."""

from __future__ import annotations

from torch import nn

from .base import ParameterEncoder


class MobileNetV2Encoder(ParameterEncoder):
    """torchvision's MobileNetV2 feature stack on the log-mel "image", with a 1-channel stem and a dense P head.

    ``width_mult=1.0`` is what the official code uses (Keras ``alpha=1.0``): ≈2.22 M body parameters plus
    ``1281 * num_params`` in the head. No pretrained weights are used or downloaded (ImageNet statistics do not
    transfer to log-mel spectrograms with a 1-channel input anyway).
    """

    def __init__(
        self,
        num_params: int,
        sample_rate: int = 22050,
        width_mult: float = 1.0,
        n_mels: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(num_params, sample_rate=sample_rate, n_mels=n_mels, dropout=dropout)
        self.width_mult = width_mult
        from torchvision.models import mobilenet_v2  # imported here: torchvision is slow to import, needed only here

        net = mobilenet_v2(weights=None, width_mult=width_mult)
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(
            1, stem.out_channels, stem.kernel_size, stride=stem.stride, padding=stem.padding, bias=False
        )
        nn.init.kaiming_normal_(net.features[0][0].weight, mode="fan_out")
        self.body = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._build_head(net.last_channel)

    def config_args(self) -> dict:
        return {**super().config_args(), "width_mult": self.width_mult}
