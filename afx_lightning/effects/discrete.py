"""How the encoder's outputs θ drive discrete parameters: a distribution over their values, sampled in training
and decided by its most likely value in evaluation and inference.

The encoder predicts θ ∈ [0, 1]^W; the chain takes one normalised value u per parameter, u ∈ [0, 1]^P. A
continuous parameter is one column, passed through. A discrete parameter's columns define a distribution over its
n values (grid points u = k / (n - 1)):

- ``toggle``: one column, P(on) = θ.
- ``integer``: one column, x = θ (n - 1) rounded stochastically, P(⌈x⌉) = x - ⌊x⌋ (so E[k] = x).
- ``choice``: one score per option (W counts C columns), P(k) = θ_k / Σ θ: unordered, so any option can gain
  directly, not only the neighbours of the current one.

These probabilities are linear or nearly so in θ (an option at θ = 0.01 still has a gradient of order one), and
the expected loss Σ P(k) L(k) is smooth in θ, so the black-box layer can estimate its gradient with SPSA
differences, as for continuous parameters: every render of a row (forward and perturbed) draws its values with
the same uniform number (common random numbers), hence two renders differ in a discrete value only when the
perturbation moves its threshold across that number, and the mean of (L(y⁺) − L(y⁻)) / (θ⁺ − θ⁻) is the
difference quotient of the expected loss (see ``blackbox.layer``). An integer's two-point rounding keeps the
number of values the renders can play small; a choice's scores do not order its options. Numpy only: workers
and inference import it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .params import Kind, ParamSpec, defaults_normalized

MIN_SCORE = 1e-6  # floor of a choice's scores, so that Σθ > 0
PRIOR_SCORE = 0.5  # the encoder-side default score of a choice's non-default options (see ParamCodec.defaults)
PRIOR_TOGGLE = 0.6  # the encoder-side default P(default value) of a toggle


class ParamCodec:
    """The encoder's columns θ [..., W] <-> the chain's trainable parameters u [..., P].

    ``sample`` (training: a value drawn from each discrete parameter's distribution), ``decode`` (evaluation and
    inference: the most likely value), ``encode`` (the θ that decodes to given u with the most certainty, e.g. the
    defaults the encoder starts from). With no discrete parameters all three are the identity and W = P.
    """

    def __init__(self, specs: Sequence[ParamSpec]):
        self.specs: tuple[ParamSpec, ...] = tuple(p for p in specs if p.trainable)
        bounds = np.cumsum([0] + [p.width for p in self.specs])
        self.columns = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self.width = int(bounds[-1])
        self.num_params = len(self.specs)
        self.discrete = [i for i, p in enumerate(self.specs) if p.discrete]  # parameter indices, in order
        # the discrete parameter (position in ``discrete``) each θ column belongs to; -1: a continuous column
        self.owner = np.full(self.width, -1, dtype=np.int64)
        for j, i in enumerate(self.discrete):
            self.owner[self.columns[i]] = j

    @property
    def has_discrete(self) -> bool:
        return bool(self.discrete)

    @property
    def column_names(self) -> list[str]:
        """One name per θ column: the parameter's, or ``name=option`` for a choice's scores."""
        return [name for p in self.specs for name in ([f"{p.name}={c}" for c in p.choices] or [p.name])]

    # ------------------------------------------------------------------ the distribution
    def probabilities(self, theta: np.ndarray) -> list[np.ndarray]:
        """Per discrete parameter (in order), P(value k) shaped [..., n]."""
        theta = np.clip(np.asarray(theta, dtype=np.float64), 0.0, 1.0)
        out = []
        for i in self.discrete:
            spec, cols = self.specs[i], theta[..., self.columns[i]]
            if spec.kind is Kind.CHOICE:
                scores = np.maximum(cols, MIN_SCORE)
                out.append(scores / scores.sum(axis=-1, keepdims=True))
                continue
            n = spec.num_values
            x = cols[..., 0] * (n - 1)
            low = np.minimum(np.floor(x), n - 2).astype(np.int64)
            frac = x - low
            p = np.zeros(x.shape + (n,))
            np.put_along_axis(p, low[..., None], (1.0 - frac)[..., None], axis=-1)
            np.put_along_axis(p, low[..., None] + 1, frac[..., None], axis=-1)
            out.append(p)
        return out

    def sample(self, theta: np.ndarray, uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """θ [M, I, W] (I renders per row) and one uniform number per row and discrete parameter [M, D] ->
        (u [M, I, P] float32, the drawn value indices [M, I, D]).

        Inverse-CDF sampling with the row's number shared by its I renders, so they draw the same value unless
        their θ differ across its threshold.
        """
        theta = np.asarray(theta, dtype=np.float64)
        m, renders, _ = theta.shape
        u = self._passthrough(theta)
        index = np.zeros((m, renders, len(self.discrete)), dtype=np.int64)
        if not self.discrete:
            return u, index
        shared = np.asarray(uniform, dtype=np.float64)[:, None, :]  # [M, 1, D]
        theta = np.clip(theta, 0.0, 1.0)
        for j, i in enumerate(self.discrete):
            spec, cols, v = self.specs[i], theta[..., self.columns[i]], shared[..., j]
            n = spec.num_values
            if spec.kind is Kind.CHOICE:
                scores = np.maximum(cols, MIN_SCORE)
                below = np.cumsum(scores, axis=-1)[..., :-1] / scores.sum(axis=-1, keepdims=True)
                k = (below <= v[..., None]).sum(axis=-1)
            else:  # the upper neighbour of x when v >= 1 - frac(x): P = frac(x)
                x = cols[..., 0] * (n - 1)
                low = np.minimum(np.floor(x), n - 2)
                k = (low + (v >= 1.0 - (x - low))).astype(np.int64)
            index[..., j] = k
            u[..., i] = k / (n - 1)
        return u, index

    def decode(self, theta: np.ndarray) -> np.ndarray:
        """θ [..., W] -> u [..., P] with every discrete parameter at its most likely value."""
        theta = np.asarray(theta)
        u = self._passthrough(theta)
        for i in self.discrete:
            spec, cols = self.specs[i], np.clip(theta[..., self.columns[i]], 0.0, 1.0)
            n = spec.num_values
            k = np.argmax(cols, axis=-1) if spec.kind is Kind.CHOICE else _nearest(cols[..., 0], n)
            u[..., i] = k / (n - 1)
        return u

    def encode(self, u: np.ndarray) -> np.ndarray:
        """u [..., P] -> the θ [..., W] whose most likely values are u's (a choice: one-hot scores)."""
        u = np.asarray(u, dtype=np.float32)
        theta = np.zeros(u.shape[:-1] + (self.width,), dtype=np.float32)
        for i, (spec, cols) in enumerate(zip(self.specs, self.columns)):
            if not spec.discrete:
                theta[..., cols.start] = u[..., i]
                continue
            k = _nearest(u[..., i], spec.num_values)
            if spec.kind is Kind.CHOICE:
                theta[..., cols] = np.eye(spec.num_values, dtype=np.float32)[k]
            else:
                theta[..., cols.start] = k / (spec.num_values - 1)
        return theta

    @property
    def defaults(self) -> np.ndarray:
        """The encoder-side defaults [W] (targets of default pre-training, start of the output bias).

        A discrete default is the most likely value, not a certain one: a choice's default option scores 1 and
        the others ``PRIOR_SCORE`` (three options: P = 0.5, 0.25, 0.25), a toggle starts at P(default) = 0.6.
        Training must try the other values while the continuous parameters are still moving, or they settle
        around the default's optimum first (a low-pass's best cutoff is no band-pass's) and trap it there
        (``benchmarks/discrete.py``, 24 runs: started sure of the defaults, P = 0.98, the filter type was found
        only where it was the default, 8 times; from these defaults 24 times; a toggle started at 0.75 was found
        21 times, at 0.6 23 times).
        """
        theta = self.encode(defaults_normalized(self.specs))
        for i in self.discrete:
            spec, cols = self.specs[i], self.columns[i]
            if spec.kind is Kind.CHOICE:
                theta[cols] = np.maximum(theta[cols], PRIOR_SCORE)
            elif spec.kind is Kind.TOGGLE:
                theta[cols] = 0.5 + (theta[cols] - 0.5) * 2 * (PRIOR_TOGGLE - 0.5)
        return theta

    def _passthrough(self, theta: np.ndarray) -> np.ndarray:
        """The continuous columns into their parameters' places (discrete places are filled by the caller)."""
        starts = [c.start for c in self.columns]
        return np.asarray(theta, dtype=np.float64)[..., starts].astype(np.float32)

    # ------------------------------------------------------------------ what the gradient estimator needs
    def perturbation_sizes(self, epsilon: float, discrete_epsilon: float) -> np.ndarray:
        """The SPSA step of each θ column [W]: ``epsilon`` for a continuous one, ``discrete_epsilon`` of one value
        step for a discrete one (an integer's column: discrete_epsilon / (n - 1); a toggle's and a choice's
        scores: discrete_epsilon). A sampling threshold then falls inside a step with probability about
        discrete_epsilon, whatever the parameter."""
        sizes = np.full(self.width, float(epsilon))
        for i in self.discrete:
            spec = self.specs[i]
            step = 1.0 / (spec.num_values - 1) if spec.kind is Kind.INTEGER else 1.0
            sizes[self.columns[i]] = discrete_epsilon * step
        return sizes

    def jump_columns(self, index_plus: np.ndarray, index_minus: np.ndarray) -> np.ndarray:
        """The θ columns of the discrete parameters whose value differs between a pair's two renders
        [M, D pairs, W], from the value indices they drew [M, D, discrete]: the columns such a jump informs."""
        changed = np.asarray(index_plus) != np.asarray(index_minus)  # [M, D, discrete]
        columns = np.zeros(changed.shape[:2] + (self.width,), dtype=bool)
        discrete = self.owner >= 0
        columns[..., discrete] = changed[..., self.owner[discrete]]
        return columns


def _nearest(u: np.ndarray, num_values: int) -> np.ndarray:
    """``params.nearest_index`` over an array."""
    x = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0) * (num_values - 1)
    return np.minimum(np.floor(x + 0.5), num_values - 1).astype(np.int64)
