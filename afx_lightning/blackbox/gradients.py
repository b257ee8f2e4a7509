"""Gradient estimators for a black box: SPSA (paper eq. 2) and two-sided finite differences (eq. 1).

Both perturb θ into pairs θ⁺, θ⁻ (clipped to [0, 1]), render each pair through its own plugin instances,
and turn the projections s = <∂L/∂y, y⁺ − y⁻> into a gradient. The divisor is the realised perturbation
(θ⁺ − θ⁻)_i: it equals 2εΔ_i (the paper's formula) away from the box edges and stays a correct
one-sided difference at the edges, where clipping shortens the step.

Columns that drive discrete parameters (``discrete`` in :meth:`GradientEstimator.perturb`) take a larger step
of their own (``discrete_epsilon`` of one value step, see ``effects.discrete``), and on one side of each pair
only, drawn at random: the other render keeps the forward's discrete values, so every pair still holds a
continuous difference without a jump in it, while the two one-sided differences average to the central one. The
renders differ in a discrete value only when a sampling threshold falls inside that step, which happens with
probability about discrete_epsilon per parameter: it sets how often a pair carries their signal.

SPSA's K directions are either drawn independently (``random``: Rademacher signs, the paper's) or ``orthogonal``:
K rows of a Sylvester-Hadamard matrix, on P of its columns with random signs. The estimate averages
Δ_k Δ_kᵀ ∇L over the pairs; independent signs leave cross terms Δ_ki Δ_kj ∇L_j of zero mean but the size of the
gradient itself (SPSA's noise, ~sqrt((P - 1) / K) of it), orthogonal rows cancel them. When K is a power of two
and K ≥ P the rows are a full orthogonal design, ΣΔ_kΔ_kᵀ = K·I, and the estimate is the central-difference
gradient (up to curvature) at SPSA's cost; with K < P it is still unbiased (the column signs are independent)
and no direction of a step repeats another or its negative (Bhatnagar et al. 2003, deterministic perturbations
for SPSA).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch

from ..constants import SPSA_EPSILON

Method = Literal["spsa", "fd"]
Perturbations = Literal["random", "orthogonal"]


@functools.lru_cache(maxsize=8)
def sylvester_hadamard(n: int) -> torch.Tensor:
    """The n x n ±1 Hadamard matrix of Sylvester's construction (n a power of two): H Hᵀ = n·I. Cached (one per
    order, built once, never written to): every training step of an orthogonal run indexes it."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"a Sylvester-Hadamard matrix needs a power-of-two order, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def orthogonal_directions(m: int, k: int, p: int, generator: torch.Generator) -> torch.Tensor:
    """[m, k, p] ±1 directions: per row, k distinct rows and p distinct columns of the smallest Sylvester-Hadamard
    matrix of order >= max(k, p), the columns' signs flipped at random (which keeps them orthogonal)."""
    n = 1
    while n < max(k, p):
        n *= 2
    h = sylvester_hadamard(n)
    rows = torch.argsort(torch.rand(m, n, generator=generator), dim=1)[:, :k]
    cols = torch.argsort(torch.rand(m, n, generator=generator), dim=1)[:, :p]
    signs = torch.randint(0, 2, (m, 1, p), generator=generator).float() * 2 - 1
    return h[rows[:, :, None], cols[:, None, :]] * signs


@dataclass(frozen=True)
class GradientEstimator:
    method: Method = "spsa"
    epsilon: float = SPSA_EPSILON
    num_perturbations: int = 1  # K, averaged (SPSA only)
    discrete_epsilon: float = 0.2  # the one-sided step of discrete parameters' columns, in value steps
    perturbations: Perturbations = "random"  # SPSA's K directions: independent signs or orthogonal rows

    def __post_init__(self) -> None:
        if self.method not in ("spsa", "fd"):
            raise ValueError(f"gradient method must be 'spsa' or 'fd', got {self.method!r}")
        if not 0 < self.epsilon < 0.5:
            raise ValueError(f"epsilon must lie in (0, 0.5), got {self.epsilon}")
        if self.num_perturbations < 1:
            raise ValueError(f"num_perturbations must be >= 1, got {self.num_perturbations}")
        if not 0 < self.discrete_epsilon <= 0.5:
            raise ValueError(f"discrete_epsilon must lie in (0, 0.5], got {self.discrete_epsilon}")
        if self.perturbations not in ("random", "orthogonal"):
            raise ValueError(f"perturbations must be 'random' or 'orthogonal', got {self.perturbations!r}")

    def num_pairs(self, num_params: int) -> int:
        return self.num_perturbations if self.method == "spsa" else num_params

    def num_instances(self, num_params: int) -> int:
        """Plugin instances per slot: forward + one per perturbed evaluation ((2K+1) SPSA, (2P+1) FD)."""
        return 1 + 2 * self.num_pairs(num_params)

    def perturb(
        self,
        theta: torch.Tensor,
        generator: torch.Generator,
        sizes: torch.Tensor | None = None,
        discrete: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """θ [M, P] -> (params [M, 1 + 2D, P]: θ, θ⁺ x D, θ⁻ x D; step [M, D, P] = θ⁺ − θ⁻).

        ``sizes`` [P]: a step per column (``ParamCodec.perturbation_sizes``); default ``epsilon`` everywhere.
        ``discrete`` [P] bool: columns stepped on one side of each pair only (θ⁺ or θ⁻, drawn per pair).
        """
        m, p = theta.shape
        if self.method == "spsa" and self.perturbations == "orthogonal":
            direction = orthogonal_directions(m, self.num_perturbations, p, generator).to(theta.dtype)
        elif self.method == "spsa":
            signs = torch.randint(0, 2, (m, self.num_perturbations, p), generator=generator, dtype=torch.int8)
            direction = signs.to(theta.dtype) * 2 - 1
        else:
            direction = torch.eye(p, dtype=theta.dtype).expand(m, p, p)
        delta = self.epsilon * direction if sizes is None else sizes.to(theta.dtype) * direction
        up = down = delta
        if discrete is not None and bool(discrete.any()):
            on_plus = torch.randint(0, 2, delta.shape[:2] + (1,), generator=generator, dtype=torch.int8).bool()
            zero = torch.zeros((), dtype=delta.dtype)
            up = torch.where(discrete & ~on_plus, zero, delta)
            down = torch.where(discrete & on_plus, zero, delta)
        base = theta.unsqueeze(1)
        plus = (base + up).clamp(0.0, 1.0)
        minus = (base - down).clamp(0.0, 1.0)
        return torch.cat([base, plus, minus], dim=1), plus - minus

    def combine(self, projections: torch.Tensor, step: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """s [M, D] and step [M, D, P] -> gradient estimate [M, P].

        ``keep`` [M, D, P]: the columns each pair informs (see ``layer``); the others get zero from it.
        """
        estimates = projections.unsqueeze(-1) / step
        if keep is not None:  # a one-sided step clipped to nothing at the box edge informs nothing either
            estimates = torch.where(keep & (step != 0), estimates, torch.zeros((), dtype=estimates.dtype))
        if self.method == "spsa":
            return estimates.mean(dim=1)
        return torch.diagonal(estimates, dim1=1, dim2=2)
