"""Benchmark: one training step of the paper configuration on this machine, split by where the time goes.

    python benchmarks/train_step.py            # M=100, Inception, 40 960-sample context, pb_mb_compressor
    python benchmarks/train_step.py --quick    # smoke run: M=8, small encoder

Prints one JSON object: seconds per step for the encoder forward+backward, the fx layer (forward renders of
3·M blocks in the worker pool + SPSA backward), the rest (loss, optimiser), and the fx share of the step
(goal <= 20%). The encoder runs with all torch threads; the plugins run in their own worker processes.

``frontend`` (issue 14): what sharing the log-mel front end across a slot's overlapping contexts could save at
most, measured in the same run: the encoder's forward+backward from the audio (today) against the same from
a log-mel already computed (the ideal of sharing it exactly: a slot's next context needs only 4 new mel frames),
and the front end alone.

``encoder_step_s_by_encoder``: the encoder step (forward + backward) of ``--encoder`` and of each of ``--encoders``
side by side: each step in a fresh child process (malloc set up as ``afx fit`` sets it up, before anything is
allocated; switching it inside one warm process measures the switch), one warm-up step then one timed, the
variants in turn per round so that the machine's drift hits all alike. Like ``afx fit``, the script keeps freed
memory in the process (``afx_lightning.memory``); ``--system-malloc`` also times each encoder with glibc's default
malloc (``<name>_system_malloc``), so ``inception_nchw_system_malloc`` is the configuration issue 14 started from.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import subprocess
import sys
import time


def _median_time(fn, steps: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def encoder_factories() -> dict:
    from afx_lightning.encoders import InceptionEncoder, MobileNetV2Encoder, SmallEncoder, TemporalConvEncoder

    return {
        "inception": InceptionEncoder,
        "inception_nchw": functools.partial(InceptionEncoder, channels_last=False),  # before issue 14's NHWC
        "mobilenet": MobileNetV2Encoder,
        "small": SmallEncoder,
        "tcn": TemporalConvEncoder,
    }


def random_contexts(m: int, context: int):
    import torch

    return 0.1 * torch.randn(m, 1, context, generator=torch.Generator().manual_seed(0))


def child_encoder_step(variant: str, m: int, context: int, num_params: int) -> float:
    """In a fresh process (so malloc starts as ``afx fit`` starts it): one warm-up step, then one timed."""
    from afx_lightning.memory import keep_freed_memory

    name = variant.removesuffix("_system_malloc")
    if name == variant:
        keep_freed_memory()
    encoder = encoder_factories()[name](num_params)
    encoder.train()
    x = random_contexts(m, context)

    def step():
        encoder.zero_grad()
        encoder(x).sum().backward()

    step()
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def encoder_steps_side_by_side(names: list[str], m: int, context: int, num_params: int, rounds: int) -> dict:
    """Median encoder step of each variant, each measured in a fresh child process, the variants in turn per round
    so that the machine's drift hits all alike (``<name>_system_malloc``: glibc's default malloc)."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            cmd = [sys.executable, __file__, "--child-step", name, "--batch", str(m), "--context", str(context)]
            cmd += ["--child-num-params", str(num_params)]
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if run.returncode != 0:
                raise RuntimeError(f"child {name} failed: {run.stderr[-2000:]}")
            times[name].append(json.loads(run.stdout.strip().splitlines()[-1])["s"])
    return {name: statistics.median(t) for name, t in times.items()}


def frontend_saving(encoder, context, steps: int) -> dict:
    """The encoder step from audio vs. from a precomputed log-mel, alternated in one run (see the docstring)."""
    import torch

    encoder.train()
    with torch.no_grad():
        log_mel = encoder.frontend.log_mel(context)

    def from_audio():
        encoder.zero_grad()
        encoder(context).sum().backward()

    def from_log_mel():
        encoder.zero_grad()
        torch.sigmoid(encoder.logits_from_log_mel(log_mel)).sum().backward()

    def frontend_only():
        with torch.no_grad():
            encoder.frontend.log_mel(context)

    a, b, f = [], [], []
    for _ in range(steps):
        a.append(_median_time(from_audio, 1))
        b.append(_median_time(from_log_mel, 1))
        f.append(_median_time(frontend_only, 1))
    a, b, f = statistics.median(a), statistics.median(b), statistics.median(f)
    return {
        "encoder_step_from_audio_s": a,
        "encoder_step_from_log_mel_s": b,
        "frontend_forward_s": f,
        "max_saving_share": (a - b) / a,
        "speedup_if_shared": a / b,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--chain", default="pb_mb_compressor")
    parser.add_argument("--encoder", default="inception", choices=["inception", "inception_nchw", "mobilenet", "small"])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--context", type=int, default=40960)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--encoders", default="", help="comma-separated extra encoders to time (encoder step only)")
    parser.add_argument(
        "--system-malloc", action="store_true", help="also time each encoder step with glibc's default malloc"
    )
    parser.add_argument("--child-step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-num-params", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_step is not None:
        seconds = child_encoder_step(args.child_step, args.batch, args.context, args.child_num_params)
        print(json.dumps({"s": seconds}))
        return
    if args.quick:
        args.batch, args.encoder, args.steps, args.warmup = 8, "small", 3, 1

    import torch

    from afx_lightning.memory import keep_freed_memory

    freed_memory_kept = keep_freed_memory()  # as afx fit does

    from afx_lightning.blackbox import BlackBoxLayer
    from afx_lightning.loss import DelayInvariantLoss

    encoders = encoder_factories()
    m, n = args.batch, 1024
    fx = BlackBoxLayer(args.chain, num_slots=m)
    encoder = encoders[args.encoder](fx.num_params)
    loss_fn = DelayInvariantLoss(100 + fx.latency)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-4)
    context = random_contexts(m, args.context)
    before = (args.context - n) // 2
    frame = context[:, :, before : before + n].contiguous()
    target = 0.5 * frame
    slots = torch.arange(m)
    times: dict[str, list[float]] = {"encoder_s": [], "fx_s": [], "rest_s": [], "step_s": []}
    try:
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            theta = encoder(context)
            t1 = time.perf_counter()
            y = fx(frame, theta, slots, torch.full((m,), step == 0))
            t2 = time.perf_counter()
            loss = loss_fn(y, target)
            t3 = time.perf_counter()
            # backward: split the fx part (SPSA combination) from the encoder part with a hook-free trick:
            # first differentiate up to theta, then push that gradient through the encoder.
            (grad_theta,) = torch.autograd.grad(loss, theta, retain_graph=True)
            t4 = time.perf_counter()
            optimizer.zero_grad()
            theta.backward(grad_theta)
            t5 = time.perf_counter()
            optimizer.step()
            t6 = time.perf_counter()
            if step >= args.warmup:
                times["encoder_s"].append((t1 - t0) + (t5 - t4))
                times["fx_s"].append((t2 - t1) + (t4 - t3))
                times["rest_s"].append((t3 - t2) + (t6 - t5))
                times["step_s"].append(t6 - t0)
    finally:
        fx.close()
    result = {k: statistics.median(v) for k, v in times.items()}
    result["frontend"] = frontend_saving(encoder, context, args.steps)
    names = [args.encoder] + [e for e in args.encoders.split(",") if e and e != args.encoder]
    if args.system_malloc:
        names += [f"{name}_system_malloc" for name in names]
    result["encoder_step_s_by_encoder"] = encoder_steps_side_by_side(names, m, args.context, fx.num_params, args.steps)
    result["fx_share"] = result["fx_s"] / result["step_s"]
    result.update(
        chain=args.chain,
        encoder=args.encoder,
        M=m,
        P=fx.num_params,
        context=args.context,
        steps=args.steps,
        encoder_params=sum(p.numel() for p in encoder.parameters()),
        torch_threads=torch.get_num_threads(),
        freed_memory_kept=freed_memory_kept,
        machine=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        note="fx_s includes the forward renders (3*M blocks) and the SPSA backward; the loss gradient w.r.t. "
        "the fx output is counted in fx_s because autograd computes both in one call",
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
