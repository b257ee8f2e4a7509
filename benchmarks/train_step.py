"""Benchmark: one training step of the paper configuration on this machine, split by where the time goes.

    python benchmarks/train_step.py            # M=100, Inception, 40 960-sample context, pb_mb_compressor
    python benchmarks/train_step.py --quick    # smoke run: M=8, small encoder

Prints one JSON object: seconds per step for the encoder forward+backward, the fx layer (forward renders of
3·M blocks in the worker pool + SPSA backward), the rest (loss, optimiser), and the fx share of the step
(goal <= 20%). The encoder runs with all torch threads; the plugins run in their own worker processes.

``frontend`` (issue 14): what sharing the log-mel front end across a slot's overlapping contexts could save at
most, measured in the same run: the encoder's forward+backward from the audio (today) against the same from
a log-mel already computed (the ideal of sharing it exactly: a slot's next context needs only 4 new mel frames),
and the front end alone. ``--encoders`` adds other encoders' encoder-step times side by side (e.g. tcn).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time


def _median_time(fn, steps: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def encoder_step_s(encoder, context, steps: int) -> float:
    """Forward + backward of the encoder on the batch of contexts (train mode)."""
    encoder.train()

    def step():
        encoder.zero_grad()
        encoder(context).sum().backward()

    return _median_time(step, steps)


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
    args = parser.parse_args()
    if args.quick:
        args.batch, args.encoder, args.steps, args.warmup = 8, "small", 3, 1

    import torch

    from afx_lightning.blackbox import BlackBoxLayer
    from afx_lightning.encoders import InceptionEncoder, MobileNetV2Encoder, SmallEncoder, TemporalConvEncoder
    from afx_lightning.loss import DelayInvariantLoss

    encoders = {
        "inception": InceptionEncoder,
        "inception_nchw": functools.partial(InceptionEncoder, channels_last=False),  # before issue 14's NHWC
        "mobilenet": MobileNetV2Encoder,
        "small": SmallEncoder,
        "tcn": TemporalConvEncoder,
    }
    m, n = args.batch, 1024
    fx = BlackBoxLayer(args.chain, num_slots=m)
    encoder = encoders[args.encoder](fx.num_params)
    loss_fn = DelayInvariantLoss(100 + fx.latency)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    context = 0.1 * torch.randn(m, 1, args.context, generator=g)
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
    result["encoder_step_s_by_encoder"] = {
        name: encoder_step_s(encoders[name](fx.num_params), context, args.steps)
        for name in [args.encoder] + [e for e in args.encoders.split(",") if e and e != args.encoder]
    }
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
        machine=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        note="fx_s includes the forward renders (3*M blocks) and the SPSA backward; the loss gradient w.r.t. "
        "the fx output is counted in fx_s because autograd computes both in one call",
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
