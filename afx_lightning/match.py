"""``afx match``: the best static (or piecewise-constant) settings of a chain for one input/target pair.

A user feature (match a reference sound with a preset) and every chain's *oracle*: how close that chain can get
to that target at all, which is what a trained model should be measured against.

How it works:

* Both files are read with :func:`~afx_lightning.data.datasets.read_audio`, downmixed to mono and resampled to the
  chain rate with torchaudio; the search compares them over their common length.
* CMA-ES (the ``cma`` package) searches the chain's normalised parameters θ ∈ [0, 1]^P (bounded), or the subset
  named by ``--params`` with the rest held (``--set`` gives starting or held values). Its mean starts at the centre
  of the box, but the first evaluation is the chain's defaults, so the result is never worse than the defaults.
  A run that converges with budget left restarts from a random point with a doubled population (IPOP-CMA-ES).
* Each CMA population is rendered in one :class:`~afx_lightning.blackbox.pool.FxWorkerPool` pass: one slot per
  candidate, fresh plugin instances per candidate, slots spread over the worker processes, 1024-sample blocks as
  in training and ``afx process``. Renders are latency-compensated (the chain's reported latency is dropped from
  the front and real input, then zeros, fed at the end), so output sample t lines up with input sample t.
* The search objective (``--objective``), by default ``mrstft+mfcc``: the multi-resolution STFT distance
  (:func:`~afx_lightning.metrics.multi_resolution_stft_distance`) plus ``MFCC_WEIGHT`` x d_MFCC
  (:func:`~afx_lightning.metrics.mfcc_distance`, per coefficient as ``afx evaluate``), the two scores a match is
  judged by. MR-STFT sees level and timbre at three resolutions and ignores phase (a real target, e.g. an analogue
  device, is never phase-aligned with any plugin); d_MFCC is level-invariant and keeps the search from trading
  timbre for level. On known-answer pairs through ``pb_mb_compressor`` (21 parameters, 600 evaluations, 6 runs)
  adding it lowered *both* final d_MFCC and MR-STFT in 5 of 6 runs (e.g. d_MFCC 0.129 -> 0.041, MR-STFT
  0.52 -> 0.32), while MR-STFT alone (``mrstft``) once ended with a d_MFCC worse than the identity's. The
  training loss (:class:`~afx_lightning.loss.DelayInvariantLoss`, aligned over 300 samples, ``loss``) is there
  too, but its sample-wise L1 term (weight 10) is phase-sensitive and mostly rewards level, the failure issue 11
  measured in trained models.
* The reported scores are exactly ``afx evaluate``'s (:func:`~afx_lightning.evaluation.score`: d_MFCC, MR-STFT,
  ΔLU), for the match, the identity (the input as output) and the chain at its defaults, at the input's rate on
  the written output, so they compare directly with a model's ``afx evaluate`` numbers.

Piecewise-constant automation (``--segment-seconds S``): one setting per S seconds (snapped to 1024-sample
frames). Segments are searched one after the other, each started from the previous segment's best (and that
point is evaluated first, so holding the previous setting is always a candidate), with an equal share of the
budget. A joint search over all segments would account for how a setting's state affects later segments, but puts
K·P dimensions into one CMA-ES (a 10-segment, 21-parameter match would be 210-dimensional, far beyond what a few
thousand renders can adapt a covariance to); segment by segment it stays P-dimensional, and the greedy error is
only the plugin state a later setting inherits.
That state is rendered, not ignored: every candidate of segment k plays through the previous segments' chosen
settings for ``warmup_seconds`` first (through the same fresh instance), and the final output renders all segments
continuously through one plugin instance, so the state carries across boundaries exactly as in a real session.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .blackbox.layer import ChainInfo, ChainSource, describe_chain, resolve_chain
from .blackbox.pool import FxWorkerPool, SlotGroup, default_num_workers
from .constants import FRAME_SIZE, SAMPLE_RATE
from .data.datasets import read_audio
from .data.preprocess import resample
from .effects.params import ParamSpec
from .errors import AfxError
from .evaluation import score
from .loss import DelayInvariantLoss
from .metrics import mfcc_distance, multi_resolution_stft_distance

BLOCK_SIZE = FRAME_SIZE  # the method's frame: training and ``afx process`` render in these blocks too
DEFAULT_SAMPLE_RATE = SAMPLE_RATE
DEFAULT_BUDGET = 600
UNLIMITED = 10**12  # "no evaluation limit" (only --max-seconds)
MIN_SEGMENT_SECONDS = 0.25  # the 2048-point STFT of the objective needs a few frames per segment
TOL_X = 1e-3  # CMA-ES has converged once its steps are this small in θ (0.06 dB on a 60 dB range): restart
OBJECTIVES = ("mrstft+mfcc", "mrstft", "loss")
MFCC_WEIGHT = (
    3.0  # d_MFCC (0..1) against MR-STFT (~0.3..4 here): weight 3 makes a timbre gain count like a spectral one
)


class MatchError(AfxError, ValueError):
    """A user-facing problem (bad option, bad file): the CLI prints it as one line."""


# ====================================================================================== objectives


def make_objective(name: str, sample_rate: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(renders [M, T], target [T]) -> [M]`` distances (lower is better) for the named objective."""
    if name not in OBJECTIVES:
        raise MatchError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    loss = DelayInvariantLoss(max_shift=300) if name == "loss" else None

    @torch.no_grad()
    def objective(renders: np.ndarray, target: np.ndarray) -> np.ndarray:
        pred = torch.from_numpy(np.ascontiguousarray(renders, dtype=np.float32))
        tgt = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None].expand_as(pred)
        if loss is not None:
            values = loss.per_item(pred, tgt).loss
        else:
            values = multi_resolution_stft_distance(pred, tgt)
            if name == "mrstft+mfcc":
                values = values + MFCC_WEIGHT * mfcc_distance(pred, tgt, sample_rate, over="coefficients")
        values = values.double().numpy()
        return np.where(np.isfinite(values), values, np.inf)

    return objective


# ====================================================================================== rendering


class ChainRenderer:
    """Renders whole stretches of audio for many candidate settings at once through the worker pool.

    Row m uses slot m (fresh instances at the first block, so every candidate starts from the same clean state);
    slots are spread over the workers, so a population renders in parallel. Settings are piecewise constant:
    ``thetas[m, s]`` applies from input sample ``segment_starts[s]`` on.
    """

    def __init__(
        self,
        chain: ChainSource,
        sample_rate: int,
        num_slots: int,
        num_workers: int | None = None,
        block_size: int = BLOCK_SIZE,
        timeout_s: float = 30.0,
        info: ChainInfo | None = None,
    ):
        self.factory = resolve_chain(chain)
        self.info = info or describe_chain(self.factory, sample_rate, block_size)
        self.sample_rate, self.block_size = int(sample_rate), int(block_size)
        self.num_slots = int(num_slots)
        self.latency = int(self.info.latency)
        self.channels = int(self.info.channels)
        self.num_params = self.info.num_params
        self.num_workers = max(1, min(int(num_workers or default_num_workers()), self.num_slots))
        self.failed_rows = 0
        self.pool = FxWorkerPool(
            self.factory,
            {"match": SlotGroup(self.num_slots, 1)},
            channels=self.channels,
            block_size=self.block_size,
            num_params=self.num_params,
            sample_rate=self.sample_rate,
            num_workers=self.num_workers,
            timeout_s=timeout_s,
        )

    def render(
        self,
        audio: np.ndarray,
        start: int,
        stop: int,
        thetas: np.ndarray,
        segment_starts: Sequence[int] = (0,),
    ) -> np.ndarray:
        """Mono output ``[M, stop - start]`` aligned with ``audio[start:stop]`` (latency removed).

        Rendering begins at ``start`` (a fresh instance) and runs ``latency`` samples further, fed with the real
        input beyond ``stop`` where there is some and zeros after the end. Rows the plugin failed on twice come
        back as NaN, so the objective rejects them (they are counted in ``failed_rows``).
        """
        thetas = np.asarray(thetas, dtype=np.float32)
        if thetas.ndim == 2:
            thetas = thetas[:, None]
        n, lat = self.block_size, self.latency
        blocks = -(-(stop - start + lat) // n)
        feed = np.zeros(blocks * n, dtype=np.float32)
        chunk = audio[start : start + blocks * n]
        feed[: len(chunk)] = chunk
        starts = np.asarray(segment_starts)
        outputs = []
        for first in range(0, len(thetas), self.num_slots):
            rows = thetas[first : first + self.num_slots]
            m = len(rows)
            out = np.empty((m, blocks * n), dtype=np.float32)
            failed = np.zeros(m, dtype=bool)
            for b in range(blocks):
                segment = int(np.clip(np.searchsorted(starts, start + b * n, side="right") - 1, 0, rows.shape[1] - 1))
                x = np.repeat(feed[None, None, b * n : (b + 1) * n], m, axis=0)
                x = np.repeat(x, self.channels, axis=1)
                result = self.pool.render("match", range(m), [b == 0] * m, x, rows[:, segment][:, None])
                out[:, b * n : (b + 1) * n] = result.out[:, 0].mean(axis=1)
                failed |= result.failed
            out[failed] = np.nan
            self.failed_rows += int(failed.sum())
            outputs.append(out[:, lat : lat + stop - start])
        return np.concatenate(outputs)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> ChainRenderer:
        return self

    def __exit__(self, *_) -> None:
        self.close()


# ====================================================================================== search


@dataclass
class SearchOutcome:
    best: np.ndarray
    best_value: float
    start_value: float
    evaluations: int
    stop_reason: str
    trace: list[float]  # the objective of every evaluation, in order
    generation_ends: list[int]  # evaluations done after x0 and after each generation


def cma_search(
    evaluate: Callable[[np.ndarray], np.ndarray],
    mean0: np.ndarray,
    sigma0: float,
    budget: int,
    deadline: float,
    seed: int,
    popsize: int | None = None,
    anchors: np.ndarray | None = None,
) -> SearchOutcome:
    """Bounded CMA-ES on [0, 1]^P from ``mean0``; ``evaluate`` gets a population ``[M, P]``. At most ``budget`` calls.

    ``anchors`` (default: ``mean0``) are evaluated first, so the result is never worse than any of them (the
    chain's defaults, the previous segment's best). A generation that would overrun the budget is evaluated only
    as far as the budget goes and not told to CMA (a partial population would bias its update); one that would
    overrun the wall-clock ``deadline`` (``time.monotonic()``, judged by the slowest generation so far) is not
    started. When CMA-ES converges with budget left it restarts from a random point with twice the population
    (IPOP-CMA-ES), since a converged run would spend the rest of the budget in one basin; the best point of all
    runs is returned.
    """
    import cma

    mean0 = np.clip(np.asarray(mean0, dtype=np.float64), 0.0, 1.0)
    anchors = np.clip(np.asarray(mean0[None] if anchors is None else anchors, dtype=np.float64), 0.0, 1.0)[:budget]
    if len(mean0) == 1:
        # cma 4.5 fails in one dimension once a step size meets its limit (DiagonalDecoding "not yet
        # initialized"); an inert second coordinate keeps it on its well-trodden path.
        outcome = cma_search(
            lambda c: evaluate(c[:, :1]),
            np.append(mean0, 0.5),
            sigma0,
            budget,
            deadline,
            seed,
            popsize,
            np.pad(anchors, ((0, 0), (0, 1)), constant_values=0.5),
        )
        outcome.best = outcome.best[:1]
        return outcome
    lam = int(popsize or 4 + int(3 * math.log(max(len(mean0), 1))))

    def strategy(mean: np.ndarray, population: int, run: int) -> cma.CMAEvolutionStrategy:
        options = {
            "bounds": [0.0, 1.0],
            "seed": int(seed) * 1000 + run + 1,
            "popsize": population,
            "tolx": TOL_X,
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        }
        return cma.CMAEvolutionStrategy(mean, float(sigma0), options)

    rng = np.random.default_rng(seed)
    values = np.asarray(evaluate(anchors), dtype=np.float64)
    trace = [float(v) for v in values]
    best, best_value = anchors[int(values.argmin())].copy(), float(values.min())
    generation_ends, slowest, stop_reason, run = [len(trace)], 0.0, "budget", 0
    es = strategy(mean0, lam, run)
    while True:
        remaining = budget - len(trace)
        if remaining <= 0:
            break
        if time.monotonic() + slowest > deadline:
            stop_reason = "max-seconds"
            break
        if es.stop():  # converged: look in another basin, from a random point, with a larger population
            run, lam = run + 1, lam * 2
            es = strategy(rng.uniform(0.0, 1.0, len(mean0)), lam, run)
        t0 = time.monotonic()
        candidates = np.clip(np.asarray(es.ask(), dtype=np.float64), 0.0, 1.0)
        partial = len(candidates) > remaining
        candidates = candidates[:remaining]
        values = np.asarray(evaluate(candidates), dtype=np.float64)
        trace.extend(float(v) for v in values)
        if values.min() < best_value:
            best, best_value = candidates[int(values.argmin())].copy(), float(values.min())
        generation_ends.append(len(trace))
        slowest = max(slowest, time.monotonic() - t0)
        if partial:
            break
        es.tell(list(candidates), [v if math.isfinite(v) else 1e30 for v in values])
    if run:
        stop_reason += f" after {run} restart(s)"
    return SearchOutcome(best, best_value, trace[0], len(trace), stop_reason, trace, generation_ends)


# ====================================================================================== the library function


@dataclass
class SegmentSetting:
    """One constant setting: from ``start_s`` to ``end_s`` seconds of the input."""

    start_s: float
    end_s: float
    normalized: dict[str, float]
    values: dict[str, float]  # in the units the ranges are written in (dB stays dB)


@dataclass
class MatchResult:
    """What ``afx match`` found; :meth:`to_json` is the ``--json`` file."""

    chain: str
    sample_rate: int
    objective: str
    units: dict[str, str]
    searched: list[str]  # the parameters the search moved (the rest held their starting values)
    segments: list[SegmentSetting]
    scores: dict[str, dict[str, float]]  # "match", "identity", "defaults" -> afx evaluate's metrics
    objective_values: dict[str, float]  # the search objective of the same three, at the chain rate
    evaluations: int
    budget: int
    search_s: float  # CMA-ES and its renders, from the moment the workers were up
    startup_s: float  # building the chain and starting the worker processes
    seconds_per_evaluation: float
    workers: int
    popsize: int
    stop_reasons: list[str]
    history: list[dict[str, float]]  # per generation: segment, evaluations so far, best so far
    trace: list[float] = field(repr=False)  # the objective of every evaluation, in order
    failed_renders: int = 0
    output: np.ndarray | None = field(default=None, repr=False)  # [C, T] at output_rate (the input's)
    output_rate: int = 0

    @property
    def params(self) -> dict[str, float]:
        """The (first segment's) setting by name, in range units."""
        return self.segments[0].values

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("output")
        if self.budget >= UNLIMITED:
            data["budget"] = None
        data["note"] = (
            "scores are afx evaluate's (d_mfcc: per-coefficient MFCC cosine distance; mrstft: multi-resolution STFT "
            "distance; loudness_diff_lu: |LUFS(x) - LUFS(target)|), at the input's rate, on the latency-compensated "
            "render; identity = the input itself, defaults = the chain at its default parameters; objective_values "
            f"are the search objective ({self.objective}) on the chain-rate mono signals"
        )
        return data


def _mono(audio: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(audio.mean(axis=0), dtype=np.float32)


def _read(path: str | Path | np.ndarray, sample_rate: int | None, what: str) -> tuple:
    if isinstance(path, np.ndarray):
        if sample_rate is None:
            raise MatchError(f"an array {what} needs its sample rate")
        audio = path[None] if path.ndim == 1 else path
        return np.ascontiguousarray(audio, dtype=np.float32), int(sample_rate)
    return read_audio(path)


def match_static(
    chain: ChainSource,
    input: str | Path | np.ndarray,
    target: str | Path | np.ndarray,
    *,
    input_rate: int | None = None,
    target_rate: int | None = None,
    budget: int | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
    sigma0: float = 0.25,
    popsize: int | None = None,
    segment_seconds: float | None = None,
    warmup_seconds: float = 1.0,
    objective: str = "mrstft+mfcc",
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    num_workers: int | None = None,
    start: dict[str, float] | None = None,
    search: Sequence[str] | None = None,
    init: str = "center",
) -> MatchResult:
    """Search the settings of ``chain`` (a registered name or a factory) that turn ``input`` into ``target``.

    ``input`` / ``target``: files, or arrays ``[C, T]`` with ``input_rate`` / ``target_rate``. ``budget``: the most
    objective evaluations (renders of one candidate), all segments together; ``max_seconds``: a wall-clock cap on
    the search (split evenly over the segments). Whichever comes first ends it; with neither, the budget is
    ``DEFAULT_BUDGET``, with only ``max_seconds`` there is no evaluation limit. ``start``: starting values by name (range units); the rest start at the chain's defaults.
    ``search``: the names to search (default all); the others stay at their starting values. ``init``: where
    CMA-ES's mean starts: ``"center"`` of the box (CMA-ES's usual advice for a bounded search; a chain's defaults
    tend to sit in a corner, ratio 1 and makeup 0, from which half of every population is clipped onto the
    bounds) or ``"defaults"``. Either way the starting point (defaults and ``start``) is evaluated first.
    """
    if init not in ("center", "defaults"):
        raise MatchError(f"--init must be 'center' or 'defaults', got {init!r}")
    if budget is None:
        budget = DEFAULT_BUDGET if max_seconds is None else UNLIMITED
    _check_options(budget, max_seconds, sigma0, seed, popsize, segment_seconds, warmup_seconds)
    score_fn = make_objective(objective, sample_rate)
    x_in, in_rate = _read(input, input_rate, "input")
    y_in, y_rate = _read(target, target_rate, "target")
    x = resample(_mono(x_in), in_rate, sample_rate)
    y = resample(_mono(y_in), y_rate, sample_rate)
    length = min(len(x), len(y))
    if length < int(MIN_SEGMENT_SECONDS * sample_rate):
        raise MatchError(
            f"input and target overlap for only {length / sample_rate:.3f} s; need at least {MIN_SEGMENT_SECONDS} s"
        )
    y = y[:length]
    bounds, ends = _segments(length, sample_rate, segment_seconds)
    if budget < len(bounds):
        raise MatchError(f"--budget {budget} is less than one evaluation per segment ({len(bounds)} segments)")

    n = BLOCK_SIZE
    t_setup = time.monotonic()
    info = describe_chain(resolve_chain(chain), sample_rate, n)
    names = info.param_names
    try:
        x0 = info.normalized(start).astype(np.float64)
    except KeyError as exc:
        raise MatchError(f"--set: {exc.args[0]}") from None
    unknown = sorted(set(search or ()) - set(names))
    if unknown:
        raise MatchError(f"--params: {info.name!r} has no trainable parameters {unknown}; it has {names}")
    searched = np.array([names.index(s) for s in search] if search else range(len(names)), dtype=int)
    if len(searched) == 0:
        raise MatchError("--params names no parameter to search")
    lam = int(popsize or 4 + int(3 * math.log(len(searched))))  # CMA-ES's default population
    warmup = int(round(warmup_seconds * sample_rate / n)) * n
    chosen: list[np.ndarray] = []  # full θ per segment
    stop_reasons: list[str] = []
    history: list[dict[str, float]] = []
    trace: list[float] = []
    renderer = ChainRenderer(chain, sample_rate, num_slots=max(lam, 2), num_workers=num_workers, info=info)
    t_start = time.monotonic()  # the search clock starts once the workers are up
    deadline = t_start + max_seconds if max_seconds else math.inf
    # The objective's tensors are small, and idle torch threads spin on the cores the plugin workers render on:
    # one thread made a 2-core search 3-5x faster.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k, (seg_start, seg_end) in enumerate(zip(bounds, ends)):
            window = max(0, seg_start - warmup) if k else 0  # where this segment's candidates start playing
            previous = np.stack(chosen) if chosen else np.zeros((0, len(names)))
            base = chosen[-1] if chosen else x0

            def evaluate(candidates: np.ndarray) -> np.ndarray:
                full = np.repeat(base[None], len(candidates), axis=0)
                full[:, searched] = candidates
                schedule = np.concatenate([np.repeat(previous[None], len(full), axis=0), full[:, None]], axis=1)
                renders = renderer.render(x, window, seg_end, schedule, bounds[: k + 1])
                return score_fn(renders[:, seg_start - window :], y[seg_start:seg_end])

            seg_budget = (budget - len(trace)) // (len(bounds) - k)
            seg_deadline = t_start + (deadline - t_start) * (k + 1) / len(bounds)
            mean = base[searched]
            if k == 0 and init == "center":  # the box's centre, except where the user gave a starting value
                mean = np.array([base[i] if names[i] in (start or {}) else 0.5 for i in searched])
            outcome = cma_search(
                evaluate, mean, sigma0, seg_budget, seg_deadline, seed + k, lam, anchors=base[searched][None]
            )
            best = base.copy()
            best[searched] = outcome.best
            chosen.append(best)
            stop_reasons.append(outcome.stop_reason)
            running = np.minimum.accumulate(outcome.trace)
            history += [
                {"segment": k, "evaluations": len(trace) + e, "best": float(running[e - 1])}
                for e in outcome.generation_ends
            ]
            trace += outcome.trace
        search_s = time.monotonic() - t_start
        defaults = np.repeat(info.normalized()[None, None], len(bounds), axis=1)
        finals = renderer.render(x, 0, len(x), np.concatenate([np.stack(chosen)[None], defaults]), bounds)
        failed, workers = renderer.failed_rows, renderer.num_workers
    finally:
        renderer.close()
        torch.set_num_threads(torch_threads)

    objective_values = {
        "match": float(score_fn(finals[:1, :length], y)[0]),
        "identity": float(score_fn(x[None, :length], y)[0]),
        "defaults": float(score_fn(finals[1:, :length], y)[0]),
    }
    target_at_input_rate = np.stack([resample(c, y_rate, in_rate) for c in y_in]) if y_rate != in_rate else y_in

    def at_input_rate(mono: np.ndarray) -> np.ndarray:
        out = resample(np.nan_to_num(mono).astype(np.float32), sample_rate, in_rate)
        out = np.pad(out, (0, max(0, x_in.shape[1] - len(out))))[: x_in.shape[1]]
        return np.repeat(out[None], x_in.shape[0], axis=0)  # the chain is mono: copy to the input's channels

    output = at_input_rate(finals[0])
    scores = {
        "match": score(output, target_at_input_rate, in_rate),
        "identity": score(x_in, target_at_input_rate, in_rate),
        "defaults": score(at_input_rate(finals[1]), target_at_input_rate, in_rate),
    }
    specs = info.trainable_params
    ends[-1] = len(x)  # the last setting holds to the end of the input
    settings = [
        SegmentSetting(
            start_s=a / sample_rate,
            end_s=b / sample_rate,
            normalized={p.name: round(float(u), 6) for p, u in zip(specs, theta)},
            values={p.name: _tidy(p.to_display(u), p) for p, u in zip(specs, theta)},
        )
        for a, b, theta in zip(bounds, ends, chosen)
    ]
    return MatchResult(
        chain=chain if isinstance(chain, str) else info.name,
        sample_rate=sample_rate,
        objective=objective,
        units={p.name: p.unit for p in specs},
        searched=[names[i] for i in searched],
        segments=settings,
        scores=scores,
        objective_values=objective_values,
        evaluations=len(trace),
        budget=budget,
        search_s=search_s,
        startup_s=t_start - t_setup,
        seconds_per_evaluation=search_s / max(len(trace), 1),
        workers=workers,
        popsize=lam,
        stop_reasons=stop_reasons,
        history=history,
        trace=trace,
        failed_renders=failed,
        output=output,
        output_rate=in_rate,
    )


def _tidy(value: float, spec: ParamSpec) -> float:
    """Drop float32 noise (a default of 0 dB read back as 3.6e-07 dB): 7 significant digits of the range."""
    step = 10.0 ** (math.floor(math.log10(spec.max - spec.min)) - 6)
    return float(round(value / step) * step)


def _check_options(
    budget: int,
    max_seconds: float | None,
    sigma0: float,
    seed: int,
    popsize: int | None,
    segment_seconds: float | None,
    warmup_seconds: float,
) -> None:
    if budget < 1:
        raise MatchError(f"--budget must be at least 1, got {budget}")
    if max_seconds is not None and not max_seconds > 0:
        raise MatchError(f"--max-seconds must be positive, got {max_seconds}")
    if not 0.0 < sigma0 <= 1.0:
        raise MatchError(f"--sigma0 must be in (0, 1] (θ is normalised to [0, 1]), got {sigma0}")
    if seed < 0:
        raise MatchError(f"--seed must be >= 0, got {seed}")
    if popsize is not None and popsize < 2:
        raise MatchError(f"--popsize must be at least 2, got {popsize}")
    if segment_seconds is not None and not segment_seconds >= MIN_SEGMENT_SECONDS:
        raise MatchError(f"--segment-seconds must be at least {MIN_SEGMENT_SECONDS} s, got {segment_seconds}")
    if not warmup_seconds >= 0:
        raise MatchError(f"--warmup-seconds must be >= 0, got {warmup_seconds}")


def _segments(length: int, sample_rate: int, segment_seconds: float | None) -> tuple:
    """Segment start and end samples, starts on frame boundaries; a short remainder joins the segment before."""
    if not segment_seconds:
        return [0], [length]
    seg_len = max(1, round(segment_seconds * sample_rate / BLOCK_SIZE)) * BLOCK_SIZE
    bounds = list(range(0, length, seg_len))
    if len(bounds) > 1 and length - bounds[-1] < seg_len // 2:
        bounds.pop()
    return bounds, bounds[1:] + [length]


# ====================================================================================== output


def check_writable(path: Path, overwrite: bool, what: str, inputs: Sequence[Path] = ()) -> None:
    """Refuse before the search, not after it: an existing file (without ``--overwrite``), an input, no folder."""
    if any(path.resolve() == p.resolve() for p in inputs):
        raise MatchError(f"{what} {path} is one of the inputs; choose another name")
    if path.is_dir():
        raise MatchError(f"{what} {path} is a directory")
    if path.exists() and not overwrite:
        raise MatchError(f"{what} {path} already exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MatchError(f"cannot write {what} {path}: folder {parent} does not exist")


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write to a temporary file beside ``path``, then rename: a failed run leaves nothing half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=str(path.parent or "."))
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, like: Path | None = None) -> int:
    """Write ``audio`` [C, T] atomically, in the sample format of ``like`` where the format allows; returns the
    number of samples clipped to [-1, 1] (integer formats only)."""
    import soundfile as sf

    fmt = {"AIF": "AIFF", "OGA": "OGG"}.get(path.suffix.lstrip(".").upper(), path.suffix.lstrip(".").upper())
    if fmt not in sf.available_formats():
        raise MatchError(f"cannot write {path}: unknown audio format {path.suffix!r} (use e.g. .wav or .flac)")
    subtype = sf.info(str(like)).subtype if like is not None else None
    if subtype is None or not sf.check_format(fmt, subtype):
        subtype = sf.default_subtype(fmt)
    clipped = 0
    if not subtype.startswith(("FLOAT", "DOUBLE")):
        clipped = int((np.abs(audio) > 1.0).sum())
        audio = np.clip(audio, -1.0, 1.0)
    _atomic_write(path, lambda tmp: sf.write(tmp, audio.T, sample_rate, format=fmt, subtype=subtype))
    return clipped


# ====================================================================================== CLI


def format_report(result: MatchResult) -> str:
    """The parameter table (one value column per segment) and the scores beside identity and defaults."""
    names = list(result.units)
    headers = (
        ["parameter"]
        + (["value"] if len(result.segments) == 1 else [f"{s.start_s:.2f}-{s.end_s:.2f}s" for s in result.segments])
        + ["unit", ""]
    )
    searched = set(result.searched)
    rows = [
        [name]
        + [f"{s.values[name]:.4g}" for s in result.segments]
        + [result.units[name], "" if name in searched else "(held)"]
        for name in names
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 or i >= len(headers) - 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in [headers, *rows]
    ]
    lines.append("")
    searched_by = f"{result.objective} (search)"
    width = len(searched_by)
    lines.append(f"{'':<10} {'d_MFCC':>8} {'MR-STFT':>8} {'dLU':>6} {searched_by}")
    for which in ("match", "identity", "defaults"):
        s = result.scores[which]
        lines.append(
            f"{which:<10} {s['d_mfcc']:8.4f} {s['mrstft']:8.3f} {s['loudness_diff_lu']:6.2f} "
            f"{result.objective_values[which]:{width}.4f}"
        )
    return "\n".join(lines)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="afx match",
        description="Find the best static (or piecewise-constant) settings of an effect chain that turn INPUT into "
        "TARGET, by CMA-ES over its normalised parameters, and score them next to the identity.",
    )
    parser.add_argument("--chain", required=True, help="a registered chain name (see `afx effects list`)")
    parser.add_argument("input", type=Path, help="the dry audio file")
    parser.add_argument("target", type=Path, help="the processed reference to match")
    parser.add_argument("--output", type=Path, help="write the matched render here (input's rate, channels, length)")
    parser.add_argument("--json", type=Path, help="write the settings, scores and search history here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --output / --json files")
    parser.add_argument(
        "--budget",
        type=int,
        help=f"most objective evaluations, all segments together (default {DEFAULT_BUDGET}, "
        "or no limit when only --max-seconds is given)",
    )
    parser.add_argument("--max-seconds", type=float, help="wall-clock limit of the search (after the workers start)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sigma0", type=float, default=0.25, help="initial CMA-ES step, in normalised units (default 0.25)"
    )
    parser.add_argument("--popsize", type=int, help="CMA-ES population (default 4 + 3 ln P)")
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="mrstft+mfcc",
        help=f"what the search minimises (default: MR-STFT + {MFCC_WEIGHT:g} x d_MFCC)",
    )
    parser.add_argument(
        "--params", help="comma-separated names to search (default: all); the rest keep their start values"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="start value of a parameter, in its unit (repeatable); with --params, a pinned value",
    )
    parser.add_argument(
        "--init",
        choices=("center", "defaults"),
        default="center",
        help="where the CMA-ES mean starts (default: the centre of the normalised box)",
    )
    parser.add_argument(
        "--segment-seconds", type=float, help="one setting per this many seconds (piecewise-constant automation)"
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=1.0,
        help="segment mode: seconds of the previous settings each candidate plays through first (default 1)",
    )
    parser.add_argument(
        "--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help="rate the chain runs at (default 22050)"
    )
    parser.add_argument("--workers", type=int, help="plugin worker processes (default: the CPUs available)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a malformed option (already printed as one line)
        return int(exc.code or 0)
    prog = "afx match"
    try:
        for path, what in ((args.input, "input"), (args.target, "target")):
            if not path.is_file():
                raise MatchError(f"{what} {path}: file not found")
        for path, what in ((args.output, "output"), (args.json, "json file")):
            if path is not None:
                check_writable(path, args.overwrite, what, (args.input, args.target))
        if args.workers is not None and args.workers < 1:
            raise MatchError(f"--workers must be at least 1, got {args.workers}")
        if args.sample_rate < 1000:
            raise MatchError(f"--sample-rate must be at least 1000 Hz, got {args.sample_rate}")
        start = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            try:
                start[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise MatchError(f"--set {item!r}: expected NAME=VALUE with a number, e.g. --set level_out=-6")
        search = [n.strip() for n in args.params.split(",") if n.strip()] if args.params is not None else None
        result = match_static(
            args.chain,
            args.input,
            args.target,
            budget=args.budget,
            max_seconds=args.max_seconds,
            seed=args.seed,
            sigma0=args.sigma0,
            popsize=args.popsize,
            segment_seconds=args.segment_seconds,
            warmup_seconds=args.warmup_seconds,
            objective=args.objective,
            sample_rate=args.sample_rate,
            num_workers=args.workers,
            start=start,
            search=search,
            init=args.init,
        )
        clipped = 0
        if args.output is not None:
            clipped = write_audio(args.output, result.output, result.output_rate, like=args.input)
        if args.json is not None:
            text = json.dumps(_finite(result.to_json()), indent=2)
            _atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    except AfxError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(format_report(result))
    budget = "unlimited" if result.budget >= UNLIMITED else str(result.budget)
    stop = "; ".join(sorted(set(result.stop_reasons)))
    print(
        f"\n{prog}: {result.chain}, {len(result.units)} parameters x {len(result.segments)} segment(s); "
        f"{result.evaluations}/{budget} evaluations in {result.search_s:.1f} s "
        f"({result.seconds_per_evaluation * 1e3:.1f} ms each, {result.workers} worker(s), population {result.popsize}); "
        f"stopped: {stop}",
        file=sys.stderr,
    )
    if result.failed_renders:
        print(f"{prog}: {result.failed_renders} render(s) failed in the plugin and were rejected", file=sys.stderr)
    if args.output is not None:
        note = f" ({clipped} sample(s) clipped to [-1, 1])" if clipped else ""
        print(f"{prog}: wrote {args.output}{note}", file=sys.stderr)
    return 0


def _finite(value):
    """JSON has no NaN/Infinity (ΔLU is NaN under 0.4 s, a failed render scores inf): write null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


if __name__ == "__main__":
    sys.exit(main())
