"""The black-box layer: real plugins as a differentiable ``nn.Module``.

Forward renders each batch row through its slot's plugin instances in the worker pool. In training mode
every slot also owns the perturbed instances (θ⁺, θ⁻ per pair) and they render the same frame in the same
call, so all instances of a slot see identical consecutive frames; backward then needs no plugin at all and
only combines the saved differences with the incoming gradient. Evaluation uses its own slots with a single
instance each. The gradient w.r.t. the input audio is not estimated (the paper ignores it too).

Discrete parameters (integer, choice, toggle) are trained as SPSA on a relaxation, not by rounding: the encoder's
columns θ define a distribution over each one's values (``effects.discrete.ParamCodec``), every render of a training
row plays a value drawn from it with one uniform number per row and parameter shared by all its renders (common
random numbers), so the expected loss is smooth in θ and the pairs' differences estimate its gradient. No render is
added. The discrete columns are stepped on one side of each pair only (``gradients``), so one render of every pair
keeps the forward's discrete values: the continuous columns take the central difference when the other render
kept them too, else the one-sided difference against the forward render. The discrete columns take the pairs
whose two renders drew different values, from the true loss of both renders (:meth:`BlackBoxLayer.discrete_term`),
because a jump between filter types is no small change: the first-order ⟨∂L/∂y, y⁺ − y⁻⟩ misjudges it by orders
of magnitude (a log-spectral loss, linearised where a low-pass left no treble, rates any treble as enormous).
Evaluation plays the most likely values.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..effects.base import Chain, ParamLayout
from ..effects.discrete import ParamCodec
from ..effects.params import ParamSpec
from .channels import ChannelLayout
from .gradients import GradientEstimator, Perturbations
from .pool import BuildStats, FaultStats, FxWorkerPool, RenderResult, SlotGroup

log = logging.getLogger(__name__)

ChainSource = str | Callable[..., Chain]


@dataclass(frozen=True)
class ChainInfo(ParamLayout):
    """What the trainer needs to know about a chain, without holding a plugin."""

    name: str
    params: tuple[ParamSpec, ...]
    latency: int
    channels: int
    sample_rate: int


def resolve_chain(chain: ChainSource) -> Callable[..., Chain]:
    """A registered name, a chain declaration (``*.yaml`` path or mapping) or a factory -> a picklable factory."""
    if isinstance(chain, (str, Mapping)):
        from ..registry import chain_reference

        return chain_reference(chain)  # fails here, with the list of known names, rather than inside a worker
    if not callable(chain):
        raise TypeError(f"chain must be a registered name or a factory, got {type(chain).__name__}")
    return chain


def describe_chain(factory: Callable[..., Chain], sample_rate: int, block_size: int) -> ChainInfo:
    """Build one chain briefly to read its parameters and latency, then release it."""
    chain = factory(sample_rate=sample_rate, block_size=block_size)
    try:
        return ChainInfo(chain.name, chain.params, chain.latency, chain.channels, chain.sample_rate)
    finally:
        chain.close()


def distributed_rank() -> int:
    """This process's global rank once ``torch.distributed`` is initialised (DDP), else 0."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class PerturbationStream:
    """The SPSA directions of one process: draw ``d`` on global rank ``r`` uses a generator seeded from
    ``SeedSequence([seed, r, d])``.

    Why counter-based rather than one long-lived generator: ranks get independent directions (the
    estimator's noise averages over ranks instead of adding up), a single process is rank 0 of the same
    scheme, and a rank's whole stream position is the draw count, which is the same on every rank (one draw
    per training forward). So the checkpoint Lightning writes from rank 0 alone restores every rank's stream
    exactly, whatever the world size of the resumed run. ``rank=None`` reads the rank at each draw.
    """

    CHECKPOINT_KEY = "afx_spsa_directions"
    LEGACY_CHECKPOINT_KEY = "afx_spsa_generator"  # one torch generator state, the same on every rank

    def __init__(self, seed: int = 0, rank: int | None = None):
        self.seed, self.rank, self.draws = int(seed), rank, 0

    def next_generator(self) -> torch.Generator:
        """The generator of the next draw (advances the stream by one)."""
        rank = distributed_rank() if self.rank is None else self.rank
        entropy = np.random.SeedSequence([self.seed, int(rank), self.draws]).generate_state(2, np.uint32)
        self.draws += 1
        return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "draws": self.draws}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.draws = int(state["seed"]), int(state["draws"])

    def save_to(self, checkpoint: MutableMapping[str, Any]) -> None:
        checkpoint[self.CHECKPOINT_KEY] = self.state_dict()

    def load_from(self, checkpoint: MutableMapping[str, Any]) -> None:
        """Continue the stream a checkpoint was written at (checkpoints from before per-rank streams: warn, restart)."""
        if self.CHECKPOINT_KEY in checkpoint:
            self.load_state_dict(checkpoint[self.CHECKPOINT_KEY])
        elif self.LEGACY_CHECKPOINT_KEY in checkpoint:
            warnings.warn(
                "checkpoint holds a single SPSA generator shared by all ranks (written before per-rank streams): "
                f"perturbation directions restart from spsa_seed {self.seed}",
                stacklevel=2,
            )


def to_device(rendered: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Rendered CPU audio to the encoder's device: through pinned memory and without a sync on CUDA."""
    if like.device.type == "cuda":
        return rendered.pin_memory().to(device=like.device, dtype=like.dtype, non_blocking=True)
    return rendered.to(dtype=like.dtype)


@dataclass
class _Jumps:
    """What the last training forward left for :meth:`BlackBoxLayer.discrete_term`."""

    theta: torch.Tensor  # [M, W], in the encoder's graph
    plus: torch.Tensor  # [M, D, C, N] renders of θ⁺ (on the output's device)
    minus: torch.Tensor  # [M, D, C, N] renders of θ⁻
    step: torch.Tensor  # [M, D, W]
    keep: torch.Tensor  # [M, D, W]: the discrete columns whose parameter's value differs between the pair's renders
    failed: torch.Tensor  # [M]


class _BlackBoxFunction(torch.autograd.Function):
    """y = f(x, θ) through plugins; ∂L/∂θ from the perturbed renders saved at forward time."""

    @staticmethod
    def forward(ctx, theta, audio, layer: BlackBoxLayer, slots, fresh):  # type: ignore[override]
        generator = layer.directions.next_generator()
        params, step = layer.estimator.perturb(
            theta.detach().to("cpu", torch.float32), generator, layer._sizes, layer._discrete_columns
        )
        pairs = step.shape[1]
        codec = layer.codec
        index = None
        if codec.has_discrete:  # one uniform per row and discrete parameter, drawn after the directions
            uniform = torch.rand((params.shape[0], len(codec.discrete)), generator=generator, dtype=torch.float64)
            values, index = codec.sample(params.numpy(), uniform.numpy())
            index = torch.from_numpy(index)
        result = layer._render("train", slots, fresh, audio, params if index is None else torch.from_numpy(values))
        out = torch.from_numpy(result.out)
        plus, minus = out[:, 1 : 1 + pairs], out[:, 1 + pairs :]  # [M, D, C, N]
        ctx.failed = torch.from_numpy(result.failed)
        ctx.estimator = layer.estimator
        ctx.keep = None
        if index is None:
            ctx.difference, ctx.step = plus - minus, step
        else:
            # The continuous columns: each pair's renders that drew the forward's discrete values (both: the
            # central difference; one: the one-sided difference with the forward render; with the one-sided
            # discrete steps one of them always did).
            same = index[:, 1:] == index[:, :1]  # [M, 2D, discrete]
            same_plus, same_minus = same[:, :pairs].all(-1), same[:, pairs:].all(-1)  # [M, D]
            base = out[:, :1].expand_as(plus)
            hi = torch.where(same_plus[..., None, None], plus, base)
            lo = torch.where(same_minus[..., None, None], minus, base)
            ctx.difference = hi - lo
            theta0 = params[:, :1].expand_as(step)
            ctx.step = torch.where(same_plus[..., None], params[:, 1 : 1 + pairs], theta0) - torch.where(
                same_minus[..., None], params[:, 1 + pairs :], theta0
            )
            continuous = torch.from_numpy(codec.owner < 0)
            ctx.keep = (same_plus | same_minus)[..., None] & continuous
            # The discrete columns: the pairs whose renders drew different values, from their true losses.
            jumped = torch.from_numpy(
                codec.jump_columns(index[:, 1 : 1 + pairs].numpy(), index[:, 1 + pairs :].numpy())
            )
            layer._jumps = _Jumps(theta, to_device(plus, audio), to_device(minus, audio), step, jumped, ctx.failed)
        return to_device(out[:, 0], audio)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        g = grad_output.detach().to("cpu", torch.float32)
        projections = torch.einsum("mcn,mdcn->md", g, ctx.difference)
        grad = ctx.estimator.combine(projections, ctx.step, ctx.keep)
        grad[ctx.failed] = 0.0
        return grad.to(device=grad_output.device, dtype=grad_output.dtype), None, None, None, None


class BlackBoxLayer(nn.Module):
    """Stateful plugins as a layer: ``forward(audio [M, C, N], theta [M, P], slot [M], fresh [M])``.

    Args:
        chain: a registered chain name (see ``afx effects list``) or a chain factory.
        sample_rate, block_size: the audio the plugins run at; the block size is fixed.
        channels: the audio's channel count (the CLI links ``data.channels``). Parameters are linked across
            channels (one θ per row, the same SPSA Δ): a mono chain renders each channel through its own instance
            (state carried per channel), a chain of this channel count the whole block, mono audio through a
            multichannel chain is duplicated in and averaged out (``channels.ChannelLayout``); else refused.
        num_slots: training slots (= the training batch size M); num_eval_slots likewise for validation.
        gradient: ``spsa`` (paper eq. 2) or ``fd`` (eq. 1; (2P+1) instances per slot, for diagnostics).
        epsilon, num_perturbations: SPSA step ε (official 0.01) and K perturbation pairs averaged.
        perturbations: how the K directions are drawn: ``random`` signs (the paper's) or ``orthogonal`` rows of a
            Hadamard matrix (the exact gradient when K is a power of two >= P; see ``gradients``).
        discrete_epsilon: the one-sided step of the columns that drive integer, choice and toggle parameters, in
            value steps (a pair carries their signal with probability about discrete_epsilon per parameter).
        num_workers: plugin worker processes of this process (default: the CPUs this process may use, divided
            among the DDP ranks on the machine, see ``pool.default_num_workers``); each DDP rank has its own
            pool, slots and plugin instances.
        timeout_s: longest a single row's plugin calls may take before its worker is killed and restarted.
        build_timeout_s: longest building a fresh row's instances (1 + 2K, FD: 2P + 1 chains) may take; timed
            apart from ``timeout_s`` because real plugins load slowly (a VST3 chain: ~0.45 s per instance).
        max_retries: re-renders of a faulty row on fresh instances before it is dropped (zero gradient).
        seed: seeds the perturbation directions; each DDP rank draws its own (see :class:`PerturbationStream`).
    """

    def __init__(
        self,
        chain: ChainSource = "pb_mb_compressor",
        sample_rate: int = 22050,
        block_size: int = 1024,
        channels: int = 1,
        num_slots: int = 100,
        num_eval_slots: int = 8,
        gradient: Literal["spsa", "fd"] = "spsa",
        epsilon: float = 0.01,
        num_perturbations: int = 1,
        num_workers: int | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 1,
        seed: int = 0,
        build_timeout_s: float = 120.0,
        discrete_epsilon: float = 0.2,
        perturbations: Perturbations = "random",
    ):
        super().__init__()
        self.chain_factory = resolve_chain(chain)
        self.info = describe_chain(self.chain_factory, sample_rate, block_size)
        try:
            self.layout = ChannelLayout.of(self.info.channels, channels, self.info.name, what="data")
        except ValueError as exc:
            raise ValueError(f"data.channels is {channels}: {exc}") from None
        self.sample_rate, self.block_size, self.channels = sample_rate, block_size, channels
        self.num_slots, self.num_eval_slots = num_slots, num_eval_slots
        self.estimator = GradientEstimator(gradient, epsilon, num_perturbations, discrete_epsilon, perturbations)
        self.codec = ParamCodec(self.info.trainable_params)
        # per-column steps, one-sided on the discrete columns, only where there are any (else the paper's single ε)
        self._sizes = self._discrete_columns = None
        if self.codec.has_discrete:
            self._sizes = torch.from_numpy(self.codec.perturbation_sizes(epsilon, discrete_epsilon)).float()
            self._discrete_columns = torch.from_numpy(self.codec.owner >= 0)
        self.num_workers, self.timeout_s, self.max_retries = num_workers, timeout_s, max_retries
        self.build_timeout_s = build_timeout_s
        self.seed = seed
        self.directions = PerturbationStream(seed)
        self._pool: FxWorkerPool | None = None
        self.last_result: RenderResult | None = None
        self._jumps: _Jumps | None = None

    def set_epsilon(self, epsilon: float) -> None:
        """A new SPSA step ε from the next training forward on (``schedule.EpsilonOnPlateau``)."""
        import dataclasses

        self.estimator = dataclasses.replace(self.estimator, epsilon=float(epsilon))  # checks the range
        if self.codec.has_discrete:
            self._sizes = torch.from_numpy(
                self.codec.perturbation_sizes(epsilon, self.estimator.discrete_epsilon)
            ).float()

    @property
    def num_params(self) -> int:
        """How many values the encoder predicts (W): the chain's P, plus one per option beyond the first of each
        choice parameter (``codec`` maps them onto the chain's parameters)."""
        return self.codec.width

    @property
    def latency(self) -> int:
        return self.info.latency

    @property
    def pool(self) -> FxWorkerPool:
        """Started on first use, so building a model (e.g. for ``--print_config``) spawns nothing."""
        if self._pool is None or self._pool.closed:
            self._pool = FxWorkerPool(
                self.chain_factory,
                {
                    "train": SlotGroup(
                        self.num_slots * self.layout.instances, self.estimator.num_instances(self.num_params)
                    ),
                    "eval": SlotGroup(self.num_eval_slots * self.layout.instances, 1),
                },
                channels=self.layout.width,
                block_size=self.block_size,
                num_params=self.info.num_params,
                sample_rate=self.sample_rate,
                num_workers=self.num_workers,
                timeout_s=self.timeout_s,
                max_retries=self.max_retries,
                build_timeout_s=self.build_timeout_s,
            )
            log.info(
                "fx: %d plugin worker(s) for this process (local rank %s)",
                self._pool.num_workers,
                os.environ.get("LOCAL_RANK", "0"),
            )
        return self._pool

    @property
    def fault_stats(self) -> FaultStats:
        return self._pool.stats if self._pool is not None else FaultStats()

    @property
    def build_stats(self) -> BuildStats:
        return self._pool.build_stats if self._pool is not None else BuildStats()

    def forward(
        self, audio: torch.Tensor, theta: torch.Tensor, slot: torch.Tensor, fresh: torch.Tensor
    ) -> torch.Tensor:
        m = audio.shape[0]
        if theta.shape != (m, self.num_params):
            raise ValueError(
                f"theta must be shaped ({m}, {self.num_params}) for chain {self.info.name!r}, got {tuple(theta.shape)}"
            )
        slots = [int(s) for s in slot.tolist()]
        fresh_flags = [bool(f) for f in fresh.tolist()]
        if self.training:
            self._jumps = None
            theta = theta.clamp(0.0, 1.0)
            out = _BlackBoxFunction.apply(theta, audio, self, slots, fresh_flags)
            if self._jumps is not None:
                self._jumps.theta = theta  # the graph's θ (the function saw a detached copy)
            return out
        params = torch.from_numpy(self.codec.decode(theta.detach().to("cpu", torch.float32).clamp(0.0, 1.0).numpy()))
        result = self._render("eval", slots, fresh_flags, audio, params.unsqueeze(1))
        return to_device(torch.from_numpy(result.out[:, 0]), audio)

    def discrete_term(self, per_item_loss: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The discrete parameters' share of the gradient, from the last training forward; add it to the per-row
        losses before reducing them (``loss = (per_item(y) + fx.discrete_term(per_item)).mean()``).

        ``per_item_loss``: outputs [M, C, N] -> the per-row losses [M] that train the forward output (same
        targets). It is evaluated, without gradient, on the perturbed renders of the pairs whose discrete values
        differ; the term is zero-valued, and its gradient w.r.t. θ is the SPSA estimate of the expected loss for
        the discrete columns, (L(y⁺) − L(y⁻)) / (θ⁺ − θ⁻) averaged over pairs. Zero (a scalar) when the chain has
        no discrete parameter, in evaluation, and when called twice for one forward.
        """
        jumps, self._jumps = self._jumps, None
        if jumps is None:
            return torch.zeros(())
        coeff = torch.zeros(jumps.theta.shape, dtype=torch.float32)
        if jumps.keep.any():
            with torch.no_grad():
                differences = (
                    torch.stack(
                        [
                            per_item_loss(jumps.plus[:, j]) - per_item_loss(jumps.minus[:, j])
                            for j in range(jumps.plus.shape[1])
                        ],
                        dim=1,
                    )
                    .float()
                    .cpu()
                )  # [M, D]
            coeff = self.estimator.combine(differences, jumps.step, jumps.keep)
            coeff[jumps.failed] = 0.0
        coeff = coeff.to(device=jumps.theta.device, dtype=jumps.theta.dtype)
        term = (coeff * jumps.theta).sum(dim=1)
        return term - term.detach()

    def _render(self, group: str, slots, fresh, audio: torch.Tensor, params: torch.Tensor) -> RenderResult:
        """Rows [M, C, N] through their slots' instances (one per channel for a mono chain on C channels, every
        channel with its row's parameters): out [M, I, C, N]; a row fails when any of its channels did."""
        audio_np = audio.detach().to("cpu", torch.float32).numpy()
        layout = self.layout
        result = self.pool.render(
            group, layout.slots(slots), layout.rows(fresh), layout.split(audio_np), layout.repeat(params.numpy())
        )
        if layout.instances > 1 or layout.width != layout.channels:
            result.out = layout.merge(result.out)
            result.failed = layout.channel_failed(result.failed).any(axis=1)
        self.last_result = result
        return result

    def close(self) -> None:
        """Stop the plugin workers (they restart on next use)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pool"] = None  # processes and shared memory do not travel
        state["last_result"] = None
        state["_jumps"] = None
        return state

    def extra_repr(self) -> str:
        e = self.estimator
        return (
            f"chain={self.info.name!r}, P={self.num_params}, slots={self.num_slots}/{self.num_eval_slots}, "
            f"gradient={e.method}, epsilon={e.epsilon}, K={e.num_perturbations}"
            + (f" ({e.perturbations})" if e.perturbations != "random" else "")
            + (
                f", discrete={len(self.codec.discrete)} (epsilon {e.discrete_epsilon})"
                if self.codec.has_discrete
                else ""
            )
        )
