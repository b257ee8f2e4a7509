"""The black-box layer: real plugins as a differentiable ``nn.Module``.

Forward renders each batch row through its slot's plugin instances in the worker pool. In training mode
every slot also owns the perturbed instances (θ⁺, θ⁻ per pair) and they render the same frame in the same
call, so all instances of a slot see identical consecutive frames; backward then needs no plugin at all and
only combines the saved differences with the incoming gradient. Evaluation uses its own slots with a single
instance each. The gradient w.r.t. the input audio is not estimated (the paper ignores it too).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union

import torch
from torch import nn

from ..effects.base import Chain, ParamLayout
from ..effects.params import ParamSpec
from .gradients import GradientEstimator
from .pool import FaultStats, FxWorkerPool, RenderResult, SlotGroup

log = logging.getLogger(__name__)

ChainSource = Union[str, Callable[..., Chain]]


@dataclass(frozen=True)
class ChainInfo(ParamLayout):
    """What the trainer needs to know about a chain, without holding a plugin."""

    name: str
    params: tuple[ParamSpec, ...]
    latency: int
    channels: int
    sample_rate: int


def resolve_chain(chain: ChainSource) -> Callable[..., Chain]:
    """A registered name or a factory -> a picklable factory for worker processes."""
    if isinstance(chain, str):
        from ..registry import build_chain, get_chain_factory

        get_chain_factory(chain)  # fail here, with the list of known names, rather than inside a worker
        return functools.partial(build_chain, chain)
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


def to_device(rendered: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Rendered CPU audio to the encoder's device: through pinned memory and without a sync on CUDA."""
    if like.device.type == "cuda":
        return rendered.pin_memory().to(device=like.device, dtype=like.dtype, non_blocking=True)
    return rendered.to(dtype=like.dtype)


class _BlackBoxFunction(torch.autograd.Function):
    """y = f(x, θ) through plugins; ∂L/∂θ from the perturbed renders saved at forward time."""

    @staticmethod
    def forward(ctx, theta, audio, layer: "BlackBoxLayer", slots, fresh):  # type: ignore[override]
        params, step = layer.estimator.perturb(theta.detach().to("cpu", torch.float32), layer.generator)
        result = layer._render("train", slots, fresh, audio, params)
        out = torch.from_numpy(result.out)
        pairs = step.shape[1]
        ctx.difference = out[:, 1 : 1 + pairs] - out[:, 1 + pairs :]  # [M, D, C, N]
        ctx.step = step
        ctx.failed = torch.from_numpy(result.failed)
        ctx.estimator = layer.estimator
        return to_device(out[:, 0], audio)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        g = grad_output.detach().to("cpu", torch.float32)
        projections = torch.einsum("mcn,mdcn->md", g, ctx.difference)
        grad = ctx.estimator.combine(projections, ctx.step)
        grad[ctx.failed] = 0.0
        return grad.to(device=grad_output.device, dtype=grad_output.dtype), None, None, None, None


class BlackBoxLayer(nn.Module):
    """Stateful plugins as a layer: ``forward(audio [M, C, N], theta [M, P], slot [M], fresh [M])``.

    Args:
        chain: a registered chain name (see ``afx effects list``) or a chain factory.
        sample_rate, block_size, channels: the audio the plugins run at; the block size is fixed.
        num_slots: training slots (= the training batch size M); num_eval_slots likewise for validation.
        gradient: ``spsa`` (paper eq. 2) or ``fd`` (eq. 1; (2P+1) instances per slot, for diagnostics).
        epsilon, num_perturbations: SPSA step ε (official 0.01) and K perturbation pairs averaged.
        num_workers: plugin worker processes of this process (default: the CPUs this process may use, divided
            among the DDP ranks on the machine, see ``pool.default_num_workers``); each DDP rank has its own
            pool, slots and plugin instances.
        timeout_s: longest a single row may take before its worker is killed and restarted.
        max_retries: re-renders of a faulty row on fresh instances before it is dropped (zero gradient).
        seed: seeds the perturbation directions.
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
        num_workers: Optional[int] = None,
        timeout_s: float = 30.0,
        max_retries: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        self.chain_factory = resolve_chain(chain)
        self.info = describe_chain(self.chain_factory, sample_rate, block_size)
        if self.info.channels != channels:
            raise ValueError(f"chain {self.info.name!r} processes {self.info.channels} channel(s), not {channels}")
        self.sample_rate, self.block_size, self.channels = sample_rate, block_size, channels
        self.num_slots, self.num_eval_slots = num_slots, num_eval_slots
        self.estimator = GradientEstimator(gradient, epsilon, num_perturbations)
        self.num_workers, self.timeout_s, self.max_retries = num_workers, timeout_s, max_retries
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._pool: Optional[FxWorkerPool] = None
        self.last_result: Optional[RenderResult] = None

    @property
    def num_params(self) -> int:
        return self.info.num_params

    @property
    def latency(self) -> int:
        return self.info.latency

    @property
    def pool(self) -> FxWorkerPool:
        """Started on first use, so building a model (e.g. for ``--print_config``) spawns nothing."""
        if self._pool is None or self._pool.closed:
            p = self.num_params
            self._pool = FxWorkerPool(
                self.chain_factory,
                {
                    "train": SlotGroup(self.num_slots, self.estimator.num_instances(p)),
                    "eval": SlotGroup(self.num_eval_slots, 1),
                },
                channels=self.channels,
                block_size=self.block_size,
                num_params=p,
                sample_rate=self.sample_rate,
                num_workers=self.num_workers,
                timeout_s=self.timeout_s,
                max_retries=self.max_retries,
            )
            log.info("fx: %d plugin worker(s) for this process (local rank %s)", self._pool.num_workers,
                     os.environ.get("LOCAL_RANK", "0"))
        return self._pool

    @property
    def fault_stats(self) -> FaultStats:
        return self._pool.stats if self._pool is not None else FaultStats()

    def forward(self, audio: torch.Tensor, theta: torch.Tensor, slot: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
        m = audio.shape[0]
        if theta.shape != (m, self.num_params):
            raise ValueError(
                f"theta must be shaped ({m}, {self.num_params}) for chain {self.info.name!r}, got {tuple(theta.shape)}"
            )
        slots = [int(s) for s in slot.tolist()]
        fresh_flags = [bool(f) for f in fresh.tolist()]
        if self.training:
            return _BlackBoxFunction.apply(theta.clamp(0.0, 1.0), audio, self, slots, fresh_flags)
        params = theta.detach().to("cpu", torch.float32).clamp(0.0, 1.0).unsqueeze(1)
        result = self._render("eval", slots, fresh_flags, audio, params)
        return to_device(torch.from_numpy(result.out[:, 0]), audio)

    def _render(self, group: str, slots, fresh, audio: torch.Tensor, params: torch.Tensor) -> RenderResult:
        audio_np = audio.detach().to("cpu", torch.float32).numpy()
        result = self.pool.render(group, slots, fresh, audio_np, params.numpy())
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
        return state

    def extra_repr(self) -> str:
        e = self.estimator
        return (
            f"chain={self.info.name!r}, P={self.num_params}, slots={self.num_slots}/{self.num_eval_slots}, "
            f"gradient={e.method}, epsilon={e.epsilon}, K={e.num_perturbations}"
        )
