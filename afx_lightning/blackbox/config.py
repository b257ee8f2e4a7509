"""The black-box layer as a config part (``model.fx`` in a recipe): which chain, how its gradient is estimated, how its
worker pool runs.

The audio format (sample rate, frame size, channels) and the slot counts are not here: they are facts of the data,
linked from ``data.*`` onto the model by the CLI, and handed to :meth:`FxConfig.build`. Kept torch-free (the
``blackbox`` package is imported by worker processes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .layer import BlackBoxLayer


@dataclass(frozen=True)
class FxConfig:
    """How the plugins are driven (``BlackBoxLayer``'s options under their recipe names).

    Args:
        chain: registered effect chain (``afx effects list``), a chain declaration file (``my_chain.yaml``) or the
            declaration inline (a mapping, see ``afx_lightning.effects.declared``); in Python also a chain factory.
        gradient, epsilon, num_perturbations: SPSA (paper eq. 2; official ε = 0.01) or FD, and K pairs.
        perturbations: SPSA's K directions, ``random`` (independent signs, the paper's) or ``orthogonal`` (rows of a
            Hadamard matrix: the gradient without SPSA's cross-talk when K is a power of two >= the chain's P).
        discrete_epsilon: perturbation step of the discrete parameters' relaxed columns.
        workers: plugin worker processes (None: this rank's share of the CPUs).
        timeout_s, max_retries: longest one render may take, and how often a failed row is retried.
        build_timeout_s: longest building one fresh row's plugin instances may take (timed apart from ``timeout_s``:
            FD on a VST3 chain builds 2P + 1 instances at ~0.45 s each).
        seed: seeds the SPSA perturbation directions, independent per DDP rank (the stream position is saved in
            checkpoints).
    """

    chain: str | dict[str, Any] = "pb_mb_compressor"
    gradient: Literal["spsa", "fd"] = "spsa"
    epsilon: float = 0.01
    num_perturbations: int = 1
    perturbations: Literal["random", "orthogonal"] = "random"
    discrete_epsilon: float = 0.2
    workers: int | None = None
    timeout_s: float = 30.0
    max_retries: int = 1
    build_timeout_s: float = 120.0
    seed: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> FxConfig:
        """From :meth:`get_config`'s mapping; unknown keys are a one-line error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"model.fx has no option {', '.join(unknown)} (options: {', '.join(sorted(names))})")
        return cls(**{**config, **overrides})

    def get_config(self) -> dict[str, Any]:
        """Plain data (the chain as given: a name, a path or a mapping; see ``DeepAFx.get_config`` for checkpoints)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> FxConfig:
        return dataclasses.replace(self, **changes)

    def build(
        self, sample_rate: int, frame_size: int, channels: int = 1, num_slots: int = 100, num_eval_slots: int = 8
    ) -> BlackBoxLayer:
        """The layer, for audio at ``sample_rate`` in frames of ``frame_size`` with ``num_slots`` training rows."""
        from .layer import BlackBoxLayer

        return BlackBoxLayer(
            self.chain,
            sample_rate=sample_rate,
            block_size=frame_size,
            channels=channels,
            num_slots=num_slots,
            num_eval_slots=num_eval_slots,
            gradient=self.gradient,
            epsilon=self.epsilon,
            num_perturbations=self.num_perturbations,
            num_workers=self.workers,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            seed=self.seed,
            build_timeout_s=self.build_timeout_s,
            discrete_epsilon=self.discrete_epsilon,
            perturbations=self.perturbations,
        )
