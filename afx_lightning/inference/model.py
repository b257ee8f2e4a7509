"""What processing needs of a trained model: its encoder, its plugin layer and the facts of its training audio.

``afx process`` and ``afx evaluate`` run on :class:`InferenceModel`, not on the training module: building it needs
neither Lightning nor the loss, so those commands start in seconds rather than after Lightning's import (about
7 s on 2 cores). ``DeepAFx`` has the same attributes, so the :class:`~afx_lightning.inference.Processor` takes
either (``afx predict`` passes the training module itself).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..constants import PREDICT_SMOOTHING_HZ
from ..data.preprocess import Preprocessing


class InferenceModel(nn.Module):
    """A trained encoder and the plugin layer it drives, ready to process audio.

    Args:
        encoder: the parameter encoder (context audio [M, C, T] -> normalised parameters [M, P]).
        fx: the black-box layer (``blackbox.BlackBoxLayer``) over the chain the encoder was trained for.
        sample_rate, frame_size: the audio format the plugins run at.
        smoothing_hz: the automation low-pass the model was trained to be used with (its recipe's).
        context_size: the encoder context of its training data (None: unknown, the Processor's default).
        preprocessing: what its inputs went through in training (None: nothing).
    """

    def __init__(
        self,
        encoder: nn.Module,
        fx: Any,
        sample_rate: int,
        frame_size: int,
        smoothing_hz: float = PREDICT_SMOOTHING_HZ,
        context_size: int | None = None,
        preprocessing: Preprocessing | None = None,
    ):
        super().__init__()
        if smoothing_hz < 0:
            raise ValueError(f"model.smoothing_hz must be >= 0 (0: no smoothing), got {smoothing_hz}")
        self.encoder = encoder
        self.fx = fx
        self.sample_rate = int(sample_rate)
        self.frame_size = int(frame_size)
        self.smoothing_hz = float(smoothing_hz)
        self.context_size = context_size
        self.preprocessing = preprocessing

    @property
    def param_names(self) -> list[str]:
        return self.fx.info.param_names

    def forward(self, context: Tensor) -> Tensor:
        """Context audio [M, C, T] -> normalised parameters [M, P]."""
        return self.encoder(context)
