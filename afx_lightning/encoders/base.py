"""What every parameter encoder is: log-mel front end -> trainable body -> dense ``P`` -> sigmoid (paper §2.1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .frontend import LogMelFrontend


class ParameterEncoder(nn.Module):
    """Base class: maps an audio context ``[B, C, T]`` to plugin parameters ``[B, num_params]`` in (0, 1).

    Subclasses build ``self.body`` (log-mel ``[B, 1, n_mels, frames]`` -> features ``[B, F]``) and call
    :meth:`_build_head` with ``F``. The constructor convention ``(num_params, sample_rate, ...)`` with typed keyword
    arguments is what lets LightningCLI / jsonargparse expose every encoder the same way. :meth:`get_config` is
    what a checkpoint stores to rebuild it: a subclass with options of its own adds them in :meth:`config_args`.
    A subclass that gains an option whose default changes what a trained network computes names it in
    :attr:`options_since` with the value older checkpoints were trained with.
    """

    options_since: dict[str, object] = {}
    """Options added after checkpoints of the class were first written -> the value those checkpoints were trained
    with (a checkpoint that does not name the option is rebuilt with it, not with today's default)."""

    def __init__(self, num_params: int, sample_rate: int = 22050, n_mels: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        if num_params < 1:
            raise ValueError(f"num_params must be >= 1, got {num_params}")
        self.num_params = num_params
        self.sample_rate = sample_rate
        self.n_mels, self.dropout_p = n_mels, float(dropout)
        self.frontend = LogMelFrontend(sample_rate=sample_rate, n_mels=n_mels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.body: nn.Module = nn.Identity()
        self.head: nn.Linear | None = None

    def config_args(self) -> dict:
        """The constructor's options (all but ``num_params``) as plain data."""
        return {"sample_rate": int(self.sample_rate), "n_mels": int(self.n_mels), "dropout": self.dropout_p}

    def get_config(self) -> dict:
        """``{"class_path", "init_args"}``: how to rebuild this encoder, as plain data (checkpoints store it)."""
        import inspect

        cls = type(self)
        init_args = {**self.config_args(), "num_params": int(self.num_params)}
        missing = [
            n
            for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in init_args
        ]
        if missing:  # a checkpoint would rebuild it with their defaults: wrong, silently or at load time
            raise TypeError(f"{cls.__qualname__}.config_args() does not return its option(s) {', '.join(missing)}")
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}

    def differences_from(self, spec: object) -> list[str]:
        """How this encoder's options differ from a checkpoint's description of the same class (``name: trained
        with A, configured B``; options it does not name count with :attr:`options_since`). Empty when they
        agree or when ``spec`` describes another class (its weights will not load anyway)."""
        mine = self.get_config()
        if not isinstance(spec, dict) or spec.get("class_path") != mine["class_path"]:
            return []
        trained = {**type(self).options_since, **(spec.get("init_args") or {})}
        return [
            f"{name}: trained with {trained[name]!r}, configured {value!r}"
            for name, value in mine["init_args"].items()
            if name in trained and _plain_value(trained[name]) != _plain_value(value)
        ]

    def _build_head(self, in_features: int) -> None:
        self.head = nn.Linear(in_features, self.num_params)

    def logits(self, context: Tensor) -> Tensor:
        """Pre-sigmoid outputs ``[B, num_params]``; useful for losses that want logits."""
        return self.logits_from_log_mel(self.frontend.log_mel(context))

    def logits_from_log_mel(self, log_mel: Tensor) -> Tensor:
        """Logits of contexts given as their un-normalised log-mel ``[B, 1, n_mels, frames]`` (the front end's
        :meth:`~LogMelFrontend.log_mel`): what :meth:`logits` does after the fixed mel projection."""
        if self.head is None:
            raise RuntimeError(f"{type(self).__name__} did not build its head")
        return self.head(self.dropout(self.body(self.frontend.norm(log_mel))))

    def logits_at(self, log_mel: Tensor, starts: Tensor, window: int) -> Tensor:
        """Logits ``[len(starts), P]`` of the contexts whose log-mel frames are ``log_mel[..., s : s + window]``
        for each ``s`` in ``starts``, from one stretch of a file's log-mel ``[1, 1, n_mels, K]`` (inference: the
        front end runs once per file, not once per overlapping context).

        This default cuts the windows out and runs them as a batch, which is exactly :meth:`logits_from_log_mel`
        on each; an encoder whose outputs can share work across overlapping windows overrides it
        (:class:`~afx_lightning.encoders.TemporalConvEncoder`).
        """
        index = starts.to(log_mel.device)[:, None] + torch.arange(window, device=log_mel.device)
        windows = log_mel[0, 0][:, index].permute(1, 0, 2).unsqueeze(1)  # [Q, 1, n_mels, window]
        return self.logits_from_log_mel(windows)

    def forward(self, context: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(context))

    @torch.no_grad()
    def init_output_bias(self, values: Tensor, weight_scale: float = 0.0) -> None:
        """Start an untrained encoder at given normalised parameters (e.g. the chain's defaults).

        Sets the last dense bias to ``logit(clip(values, 0.01, 0.99))`` and multiplies its weights by
        ``weight_scale``. With the default 0 the output is exactly those values for any input; the head's weights
        still receive gradients (its input features are non-zero), so training moves off the defaults after one
        step. This is a cheap alternative to the paper's MSE pretraining towards the defaults.
        """
        if self.head is None:
            raise RuntimeError(f"{type(self).__name__} did not build its head")
        values = torch.as_tensor(values, dtype=self.head.bias.dtype, device=self.head.bias.device).flatten()
        if values.numel() == 1:
            values = values.expand(self.num_params)
        if values.numel() != self.num_params:
            raise ValueError(f"expected {self.num_params} values, got {values.numel()}")
        self.head.bias.copy_(torch.logit(values.clamp(0.01, 0.99)))
        self.head.weight.mul_(weight_scale)


def _plain_value(value: object) -> object:
    return [_plain_value(v) for v in value] if isinstance(value, (list, tuple)) else value


def build_encoder(make_encoder: Any, num_params: int, sample_rate: int, chain: Any) -> nn.Module:
    """``make_encoder(num_params)``, checked against the chain it is to drive (named ``chain`` in the error) and
    the audio rate: an encoder built for another P or rate fails here with the option's name, not in a matmul."""
    encoder = make_encoder(num_params)
    if getattr(encoder, "num_params", num_params) != num_params:
        raise ValueError(f"model.encoder predicts {encoder.num_params} parameters but chain {chain!r} has {num_params}")
    if getattr(encoder, "sample_rate", sample_rate) != sample_rate:
        raise ValueError(f"model.encoder runs at {encoder.sample_rate} Hz but the data is at {sample_rate} Hz")
    return encoder


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as the mel filterbank are not parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias: the batch norm has one) -> BatchNorm -> ReLU, 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )
