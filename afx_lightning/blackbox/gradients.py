"""Gradient estimators for a black box: SPSA (paper eq. 2) and two-sided finite differences (eq. 1).

Both perturb θ into pairs θ⁺, θ⁻ (clipped to [0, 1]), render each pair through its own plugin instances,
and turn the projections s = <∂L/∂y, y⁺ − y⁻> into a gradient. The divisor is the realised perturbation
(θ⁺ − θ⁻)_i: it equals 2εΔ_i (the paper's formula) away from the box edges and stays a correct
one-sided difference at the edges, where clipping shortens the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Method = Literal["spsa", "fd"]


@dataclass(frozen=True)
class GradientEstimator:
    method: Method = "spsa"
    epsilon: float = 0.01
    num_perturbations: int = 1  # K, averaged (SPSA only)

    def __post_init__(self) -> None:
        if self.method not in ("spsa", "fd"):
            raise ValueError(f"gradient method must be 'spsa' or 'fd', got {self.method!r}")
        if not 0 < self.epsilon < 0.5:
            raise ValueError(f"epsilon must lie in (0, 0.5), got {self.epsilon}")
        if self.num_perturbations < 1:
            raise ValueError(f"num_perturbations must be >= 1, got {self.num_perturbations}")

    def num_pairs(self, num_params: int) -> int:
        return self.num_perturbations if self.method == "spsa" else num_params

    def num_instances(self, num_params: int) -> int:
        """Plugin instances per slot: forward + one per perturbed evaluation ((2K+1) SPSA, (2P+1) FD)."""
        return 1 + 2 * self.num_pairs(num_params)

    def perturb(self, theta: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """θ [M, P] -> (params [M, 1 + 2D, P]: θ, θ⁺ x D, θ⁻ x D; step [M, D, P] = θ⁺ − θ⁻)."""
        m, p = theta.shape
        if self.method == "spsa":
            signs = torch.randint(0, 2, (m, self.num_perturbations, p), generator=generator, dtype=torch.int8)
            direction = signs.to(theta.dtype) * 2 - 1
        else:
            direction = torch.eye(p, dtype=theta.dtype).expand(m, p, p)
        base = theta.unsqueeze(1)
        plus = (base + self.epsilon * direction).clamp(0.0, 1.0)
        minus = (base - self.epsilon * direction).clamp(0.0, 1.0)
        return torch.cat([base, plus, minus], dim=1), plus - minus

    def combine(self, projections: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """s [M, D] and step [M, D, P] -> gradient estimate [M, P]."""
        if self.method == "spsa":
            return (projections.unsqueeze(-1) / step).mean(dim=1)
        return projections / torch.diagonal(step, dim1=1, dim2=2)
