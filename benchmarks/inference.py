"""Benchmark: ``afx process`` speed (real-time factor) and peak memory vs. file length, on CPU.

Usage::

    python benchmarks/inference.py                    # Inception encoder, 60 s file for speed, 1 vs 10 min for memory
    python benchmarks/inference.py --long-minutes 5   # shorter long file
    python benchmarks/inference.py --quick            # CI smoke run: SmallEncoder, 10 s and 30 s files
    python benchmarks/inference.py --compare          # issue 14: each speed-up side by side on one file, one run
    python benchmarks/inference.py --command          # the afx process command's wall time, start-up included

``--compare`` (issue 14) processes one ``--seconds`` file (default 20) with each variant in turn, in this process:
Inception per context (the old path: ``share_log_mel=False``), Inception with the log-mel computed once per file,
the same with ``compile=True`` (run twice: the first run's extra time is reported as ``compile_s``, the second is
the measurement), the same with ``quantize=True`` (int8; the first run calibrates), and the streaming ``TemporalConvEncoder`` (rendering one frame per pool call as before, then a
chunk of frames per call, the default, then the same file a second time through the same ``Processor``,
whose plugin workers are already running, as for every file after the first in ``afx process --output-dir``,
``afx evaluate`` and ``afx predict``); each with its real-time factor, predict/render split,
speed-up over the first and θ's largest difference from it (same weights). Memory runs are skipped.
Like ``afx process``, the script keeps freed memory in the process (``afx_lightning.memory``); the variants
marked ``freed_memory_kept: false`` (the per-context and NCHW ones, as the code ran before, and
``inception_log_mel_once_system_malloc``) run with glibc's default malloc.

``--command`` times ``afx process`` as a user runs it, a fresh interpreter per run (``--repeats`` each, medians),
on one ``--seconds`` file (default 20) with the ``--encoder`` (default here: the streaming one): as it is, and
the same command with ``lightning.pytorch`` imported first (what the command paid before it stopped building the
training module). ``startup_s`` is the wall time less the processing the command reports; ``lightning_imported``
says whether the command itself imported Lightning (from ``python -X importtime``).

Prints one JSON object. The model is untrained (random weights; speed does not depend on them):
``DeepAFx(chain, encoder=InceptionEncoder, num_slots=1, num_eval_slots=1)`` saved as a checkpoint (state dict,
hyper-parameters and the module's own ``on_save_checkpoint`` extras, as ``trainer.save_checkpoint`` would) and
reloaded with :func:`afx_lightning.inference.load_inference_model`, exactly as ``afx process`` does.

``speed``   ``Processor(model).process_file(in, out)`` on a generated stereo 22.05 kHz file of ``--seconds``
            (default 60), ``--repeats`` times in this process (the first run is reported separately as
            ``first_run``; the medians of the later ones, if any, are the headline numbers).
            ``realtime_factor`` = audio seconds / wall seconds (> 1 is faster than real time; goal >= 10).
            ``predict_s`` (encoder pass) and ``render_s`` (plugin pass + writing) come from ``ProcessStats``.
``memory``  peak resident memory (``ru_maxrss``) of a fresh child process of this script that loads the model
            and processes one file: a short (``--short-minutes``, default 1) and a long (``--long-minutes``,
            default 10) one; ``model_loaded_rss_mb`` is the child's peak right after loading the model. The
            memory children use ``--memory-encoder`` (default: SmallEncoder; Inception runs at ~0.4x real time
            on 2 cores, so 11 minutes of audio would take ~30 min). The plugin render pass runs in one pool
            worker process of the child; its peak is ``worker_peak_rss_mb`` (``RUSAGE_CHILDREN`` of the child;
            a forked worker inherits the child's high-water mark at fork time, so it is at least the model's
            footprint). Streaming processing should keep the peak flat in the length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050
HERE = Path(__file__).resolve()


def _log(msg: str) -> None:
    print(f"[inference] {msg}", file=sys.stderr, flush=True)


def _maxrss_mb(who: int) -> float:
    """ru_maxrss in MiB (Linux reports KiB, macOS bytes)."""
    v = resource.getrusage(who).ru_maxrss
    return v / (1024 * 1024) if sys.platform == "darwin" else v / 1024


def _proc_status_mb(key: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB from /proc/self/status (None where there is no procfs)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def write_test_file(path: Path, seconds: float, sr: int = SAMPLE_RATE, channels: int = 2, seed: int = 0) -> None:
    """Music-like stereo test signal (moving level, tones + noise), written in chunks (16-bit WAV)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(round(seconds * sr))
    chunk = 10 * sr
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, subtype="PCM_16") as f:
        for start in range(0, total, chunk):
            t = np.arange(start, min(total, start + chunk)) / sr
            env = 0.05 + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.2 * t)) ** 2
            cols = [
                env * (np.sin(2 * np.pi * (180 + 40 * c) * t) + 0.1 * rng.standard_normal(len(t)))
                for c in range(channels)
            ]
            f.write(np.stack(cols, axis=1).astype(np.float32))


def make_checkpoint(path: Path, chain: str, encoder: str, random_head: bool = False) -> dict:
    """Untrained model -> checkpoint readable by ``load_inference_model`` (same keys as ``trainer.save_checkpoint``).
    ``random_head``: the dense layer gets its default random weights back, so θ depends on the input (the
    DeepAFx start is the chain's defaults for any input, which would make θ comparisons vacuous)."""
    import torch

    from afx_lightning.blackbox import FxConfig
    from afx_lightning.encoders import InceptionEncoder, SmallEncoder, TemporalConvEncoder
    from afx_lightning.module import DeepAFx

    factory = {"inception": InceptionEncoder, "small": SmallEncoder, "tcn": TemporalConvEncoder}[encoder]
    torch.manual_seed(0)
    model = DeepAFx(encoder=factory, fx=FxConfig(chain=chain, workers=1), num_slots=1, num_eval_slots=1)
    if random_head:
        torch.nn.init.normal_(model.encoder.head.weight, 0.0, 0.3)
    try:
        checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
        model.on_save_checkpoint(checkpoint)  # afx_encoder spec, SPSA generator state
        torch.save(checkpoint, str(path))
        return {
            "encoder_class": model.encoder.get_config()["class_path"],
            "encoder_params": sum(p.numel() for p in model.encoder.parameters()),
            "P": model.fx.num_params,
        }
    finally:
        model.fx.close()


# ---------------------------------------------------------------------------------------------- child


def child_peak(ckpt: Path, in_path: Path | None, out_path: Path | None) -> dict:
    """In a fresh process: load the model, process ``in_path`` (or nothing: baseline), report peaks."""
    from afx_lightning.inference import Processor, load_inference_model

    model = load_inference_model(ckpt)
    proc = Processor(model)
    loaded_mb = _maxrss_mb(resource.RUSAGE_SELF)
    res = {"model_loaded_rss_mb": loaded_mb, "model_loaded_current_rss_mb": _proc_status_mb("VmRSS")}
    # ru_maxrss is a high-water mark: if importing/loading peaked higher than processing ever does, it hides any
    # growth. Linux can reset the mark (clear_refs 5); VmHWM after processing is then the processing peak alone.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        res["hwm_reset"] = True
    except OSError:
        res["hwm_reset"] = False
    if in_path is not None:
        stats = proc.process_file(in_path, out_path, overwrite=True, progress=False)
        res.update(
            seconds=stats.seconds,
            wall_s=stats.wall_s,
            predict_s=stats.predict_s,
            render_s=stats.render_s,
            realtime_factor=stats.seconds / stats.wall_s,
            dropped_frames=stats.dropped_frames,
            faults=stats.faults,
        )
    res["processing_peak_rss_mb"] = _proc_status_mb("VmHWM") if res["hwm_reset"] else None
    res["after_processing_current_rss_mb"] = _proc_status_mb("VmRSS")
    model.fx.close()
    res["peak_rss_mb"] = _maxrss_mb(resource.RUSAGE_SELF)
    res["worker_peak_rss_mb"] = _maxrss_mb(resource.RUSAGE_CHILDREN)  # largest waited-for child (the pool worker)
    return res


def _run_child(ckpt: Path, in_path: Path | None, out_path: Path | None, timeout: float) -> dict:
    cmd = [sys.executable, str(HERE), "--child-peak", str(in_path) if in_path else "-", "--ckpt", str(ckpt)]
    if out_path is not None:
        cmd += ["--child-out", str(out_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"child {cmd} failed ({run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--chain", default="pb_mb_compressor")
    ap.add_argument(
        "--encoder",
        default=None,
        choices=["inception", "small", "tcn"],
        help="default: tcn for --command, else inception",
    )
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the speed file (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=1, help="process_file runs on the speed file (default: %(default)s)")
    ap.add_argument("--short-minutes", type=float, default=1.0, help="short memory file (default: %(default)s)")
    ap.add_argument("--long-minutes", type=float, default=10.0, help="long memory file (default: %(default)s)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory children")
    ap.add_argument("--predict-hop", type=int, default=1, help="Processor's predict_hop for the speed run")
    ap.add_argument(
        "--memory-encoder",
        default="small",
        choices=["same", "inception", "small"],
        help="encoder of the memory children (default: %(default)s: the Inception encoder runs at about "
        "0.4x real time on 2 cores, so an 11-minute pair would take ~30 min; the streaming memory "
        "behaviour does not depend on the encoder; 'same' = --encoder)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="CI smoke run: SmallEncoder, 10 s speed file, 10 s vs 30 s memory"
    )
    ap.add_argument("--compare", action="store_true", help="issue 14: the inference speed-ups side by side (see above)")
    ap.add_argument("--command", action="store_true", help="afx process end to end, start-up included (see above)")
    ap.add_argument("--no-compile", action="store_true", help="--compare without the torch.compile variant")
    ap.add_argument(
        "--only",
        default=None,
        help="--compare: comma-separated variant names (ratios against inception_per_context when chosen, else against "
        "the first chosen in --compare's order)",
    )
    ap.add_argument("--workdir", default=None, help="where the files go (default: a temporary directory)")
    # internal: one memory measurement in a fresh process
    ap.add_argument("--child-peak", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.encoder is None:
        args.encoder = "tcn" if args.command else "inception"
    if args.quick:
        args.encoder, args.seconds, args.repeats = "small", 10.0, 1
        args.short_minutes, args.long_minutes = 10 / 60, 30 / 60
    if (args.compare or args.command) and "--seconds" not in " ".join(argv if argv is not None else sys.argv):
        args.seconds = 20.0
    if args.memory_encoder == "same":
        args.memory_encoder = args.encoder
    return args


def compare(args: argparse.Namespace, workdir: Path) -> dict:
    """The ``--compare`` variants on one file (see the module docstring)."""
    import torch

    from afx_lightning.inference import Processor, load_inference_model
    from afx_lightning.memory import freed_memory_kept

    speed_in, speed_out = workdir / "speed_in.wav", workdir / "speed_out.wav"
    write_test_file(speed_in, args.seconds)
    ckpts = {}
    info = {}
    for enc in ("inception", "tcn"):
        ckpts[enc] = workdir / f"{enc}.ckpt"
        info[enc] = make_checkpoint(ckpts[enc], args.chain, enc, random_head=True)
    # "nchw": the Inception convolutions as they ran before channels-last became the default; "system_malloc":
    # glibc's default malloc, as before afx kept freed memory in the process (afx_lightning/memory.py).
    variants = [
        ("inception_per_context", "inception", dict(share_log_mel=False, nchw=True, system_malloc=True)),
        ("inception_log_mel_once_nchw", "inception", dict(nchw=True, system_malloc=True)),
        ("inception_log_mel_once_system_malloc", "inception", dict(system_malloc=True)),
        ("inception_log_mel_once", "inception", {}),
    ]
    if not args.no_compile:
        variants.append(("inception_log_mel_once_compiled", "inception", dict(compile=True)))
    variants.append(("inception_log_mel_once_int8", "inception", dict(quantize=True)))
    variants.append(("tcn_streaming_render_per_frame", "tcn", dict(render_chunk_frames=1)))  # one call per frame
    variants.append(("tcn_streaming", "tcn", {}))
    variants.append(("tcn_streaming_warm_workers", "tcn", dict(warm=True)))  # a later file: workers already up
    if args.only:
        wanted = set(args.only.split(","))
        unknown = sorted(wanted - {name for name, _, _ in variants})
        if unknown:
            raise SystemExit(f"inference: --only: no variant {', '.join(unknown)} (see --compare)")
        variants = [v for v in variants if v[0] in wanted]
    results, reference = {}, None
    for name, enc, options in variants:
        model = load_inference_model(ckpts[enc])
        options = dict(options)
        warm = options.pop("warm", False)
        keep_freed = not options.pop("system_malloc", False)
        if options.pop("nchw", False):
            model.encoder.channels_last = False
            model.encoder.body.to(memory_format=torch.contiguous_format)
        proc = None
        with freed_memory_kept(keep_freed):
            try:
                proc = Processor(model, predict_hop=args.predict_hop, **options)
                kept, predict = [], proc.predict
                proc.predict = lambda *a, **k: kept.append(predict(*a, **k)) or kept[-1]  # keep θ of the timed run
                first = None
                if options.get("compile") or options.get("quantize") or warm:  # timed: the second file through it
                    t0 = time.perf_counter()
                    proc.process_file(speed_in, speed_out, overwrite=True, progress=False)
                    first = time.perf_counter() - t0
                stats = proc.process_file(speed_in, speed_out, overwrite=True, progress=False)
            finally:
                if proc is not None:
                    proc.close()
                model.fx.close()
        row = {
            "encoder": enc,
            **options,
            "channels_last": bool(getattr(model.encoder, "channels_last", False)),
            "freed_memory_kept": keep_freed,
            "realtime_factor": stats.seconds / stats.wall_s,
            "wall_s": stats.wall_s,
            "predict_s": stats.predict_s,
            "render_s": stats.render_s,
            "predict_realtime_factor": stats.seconds / stats.predict_s,
            "params": info[enc]["encoder_params"],
        }
        if options.get("compile"):
            row["compile_s"] = first - stats.wall_s
        if warm or options.get("quantize"):
            row["first_file_wall_s"] = first  # the same file when the workers started (and int8 was calibrated)
            row["first_file_realtime_factor"] = stats.seconds / first
        raw = kept[-1].raw
        row["theta_range"] = float(np.ptp(raw, axis=0).max())  # how much θ varies over the file (see notes)
        if enc == "inception":
            if reference is None:
                reference = raw
            row["theta_max_abs_diff_vs_per_context"] = float(np.abs(raw - reference).max())
        results[name] = row
        _log(
            f"{name}: {row['realtime_factor']:.1f}x real time (predict {stats.predict_s:.2f} s, render {stats.render_s:.2f} s)"
        )
    base_name = "inception_per_context" if "inception_per_context" in results else next(iter(results))
    base = results[base_name]
    for row in results.values():
        row[f"speedup_vs_{base_name}"] = base["wall_s"] / row["wall_s"]
        row[f"predict_speedup_vs_{base_name}"] = base["predict_s"] / row["predict_s"]
    return {
        "mode": "compare",
        "chain": args.chain,
        "audio_s": args.seconds,
        "predict_hop": args.predict_hop,
        "variants": results,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.platform(),
        "notes": "realtime_factor = audio seconds / wall seconds of Processor.process_file (predict + render + "
        "write); untrained weights; all variants in this one process on the same file, one after "
        "another, so the ratios are comparable even on a loaded machine. An untrained Inception's features hardly depend on the input (theta_range ~1e-6), so its theta_max_abs_diff says little; tests/test_inference.py checks the per-file log-mel against per-context encoding where θ varies (1e-5)",
    }


def _timed_command(code: str, args: Sequence[str], cwd: Path) -> tuple[float, str]:
    """Wall time and stderr of ``python -X importtime -c code args`` in a fresh interpreter."""
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"afx process failed: {run.stderr.strip().splitlines()[-1:]}")
    return wall, run.stderr


def command(args: argparse.Namespace, workdir: Path) -> dict:
    """``afx process`` end to end in fresh interpreters, as it is and with Lightning imported first."""
    import re

    encoder = args.encoder
    ckpt, wav = workdir / f"{encoder}.ckpt", workdir / "in.wav"
    info = make_checkpoint(ckpt, args.chain, encoder)
    write_test_file(wav, args.seconds)
    main_call = "import sys; from afx_lightning.cli import main; sys.exit(main(sys.argv[1:]))"
    variants = {"with_lightning_import": "import lightning.pytorch; " + main_call, "now": main_call}
    rows: dict[str, dict] = {}
    for name, code in variants.items():
        walls, processing, imported = [], [], False
        for i in range(max(1, args.repeats)):
            out = workdir / f"out_{name}_{i}.wav"
            wall, err = _timed_command(
                code, ["process", "--ckpt", str(ckpt), str(wav), str(out), "--no-progress"], workdir
            )
            walls.append(wall)
            match = re.search(r"([0-9.]+) s wall", err)
            processing.append(float(match.group(1)) if match else float("nan"))
            imported |= any(line.rstrip().endswith(("| lightning", "| lightning.pytorch")) for line in err.splitlines())
        wall, proc = statistics.median(walls), statistics.median(processing)
        rows[name] = {
            "wall_s": wall,
            "processing_s": proc,
            "startup_s": wall - proc,
            "realtime_factor": args.seconds / wall,
            "lightning_imported": imported,
            "walls_s": walls,
        }
        _log(f"{name}: {wall:.2f} s wall ({proc:.2f} s processing)")
    base = rows["with_lightning_import"]
    return {
        "benchmark": "inference_command",
        "encoder": encoder,
        "chain": args.chain,
        "seconds": args.seconds,
        "repeats": max(1, args.repeats),
        **info,
        "variants": rows,
        "speedup_vs_with_lightning_import": base["wall_s"] / rows["now"]["wall_s"],
        "notes": "wall_s: median over repeats of afx process (python -c main) in a fresh interpreter, imports, "
        "model load, plugin workers and both passes included; processing_s: the wall time the command itself "
        "reports; startup_s: the difference.",
    }


def run(args: argparse.Namespace, workdir: Path) -> dict:
    import torch

    from afx_lightning.inference import Processor, load_inference_model

    ckpt = workdir / "model.ckpt"
    t0 = time.perf_counter()
    model_info = make_checkpoint(ckpt, args.chain, args.encoder)
    _log(f"checkpoint written in {time.perf_counter() - t0:.1f} s ({model_info})")

    # ---- speed (this process)
    speed_in, speed_out = workdir / "speed_in.wav", workdir / "speed_out.wav"
    write_test_file(speed_in, args.seconds)
    t0 = time.perf_counter()
    model = load_inference_model(ckpt)
    proc = Processor(model, predict_hop=args.predict_hop)
    load_s = time.perf_counter() - t0
    runs = []
    try:
        for r in range(max(1, args.repeats)):
            stats = proc.process_file(speed_in, speed_out, overwrite=True, progress=False)
            runs.append(
                {
                    "wall_s": stats.wall_s,
                    "predict_s": stats.predict_s,
                    "render_s": stats.render_s,
                    "realtime_factor": stats.seconds / stats.wall_s,
                    "dropped_frames": stats.dropped_frames,
                    "faults": stats.faults,
                }
            )
            _log(
                f"speed run {r + 1}: {stats.seconds:.0f} s audio in {stats.wall_s:.2f} s "
                f"(predict {stats.predict_s:.2f} s, render {stats.render_s:.2f} s) -> "
                f"{stats.seconds / stats.wall_s:.1f}x real time"
            )
    finally:
        model.fx.close()
    measured = runs[1:] if len(runs) > 1 else runs
    med = {k: statistics.median(r[k] for r in measured) for k in ("wall_s", "predict_s", "render_s")}
    audio_s = args.seconds
    speed = {
        "audio_s": audio_s,
        "wall_s": med["wall_s"],
        "predict_s": med["predict_s"],
        "render_s": med["render_s"],
        "realtime_factor": audio_s / med["wall_s"],
        "predict_hop": args.predict_hop,
        "predict_realtime_factor": audio_s / med["predict_s"],
        "render_realtime_factor": audio_s / med["render_s"],
        "goal_realtime_factor": 10.0,
        "meets_goal": audio_s / med["wall_s"] >= 10.0,
        "model_load_s": load_s,
        "runs": len(runs),
        "measured_runs": len(measured),
        "first_run": runs[0],
        "dropped_frames": sum(r["dropped_frames"] for r in runs),
    }

    # ---- memory (fresh children)
    memory = None
    if not args.no_memory:
        memory = {"encoder": args.memory_encoder}
        if args.memory_encoder != args.encoder:
            ckpt = workdir / "model_memory.ckpt"
            make_checkpoint(ckpt, args.chain, args.memory_encoder)
        for label, minutes in (("short", args.short_minutes), ("long", args.long_minutes)):
            path = workdir / f"mem_{label}.wav"
            write_test_file(path, minutes * 60, seed=1)
            _log(f"memory: {label} child ({minutes:g} min file)")
            t0 = time.perf_counter()
            child = _run_child(ckpt, path, workdir / f"mem_{label}_out.wav", timeout=3600)
            child.update(minutes=minutes, file_mb=path.stat().st_size / 2**20, child_total_s=time.perf_counter() - t0)
            memory[label] = child
            path.unlink()
            (workdir / f"mem_{label}_out.wav").unlink(missing_ok=True)
            _log(
                f"memory: {label}: peak {child['peak_rss_mb']:.0f} MiB, worker {child['worker_peak_rss_mb']:.0f} MiB, "
                f"{child['realtime_factor']:.1f}x real time"
            )
        s, lg = memory["short"], memory["long"]
        base = s["model_loaded_rss_mb"]  # the child's peak right after loading the model, before processing
        memory["model_loaded_rss_mb"] = base
        memory["length_ratio"] = args.long_minutes / args.short_minutes
        memory["peak_growth_mb"] = lg["peak_rss_mb"] - s["peak_rss_mb"]
        memory["peak_ratio_long_vs_short"] = lg["peak_rss_mb"] / s["peak_rss_mb"]
        memory["processing_mb_short"] = s["peak_rss_mb"] - base
        memory["processing_mb_long"] = lg["peak_rss_mb"] - base
        if s.get("processing_peak_rss_mb") is not None and lg.get("processing_peak_rss_mb") is not None:
            memory["processing_peak_growth_mb"] = lg["processing_peak_rss_mb"] - s["processing_peak_rss_mb"]
            memory["processing_peak_ratio_long_vs_short"] = lg["processing_peak_rss_mb"] / s["processing_peak_rss_mb"]
        memory["worker_growth_mb"] = lg["worker_peak_rss_mb"] - s["worker_peak_rss_mb"]
        # "flat": the long file adds less than 10 % of the short file's peak (or < 20 MiB) for `length_ratio`x audio
        # judged on the processing peak (high-water mark reset after loading) where available
        growth = memory.get("processing_peak_growth_mb", memory["peak_growth_mb"])
        ref = s.get("processing_peak_rss_mb") or s["peak_rss_mb"]
        memory["grows_with_length"] = not (growth < max(20.0, 0.1 * ref))

    return {
        "chain": args.chain,
        "encoder": args.encoder,
        **model_info,
        "device": "cpu",
        "sample_rate": SAMPLE_RATE,
        "input": "stereo 16-bit WAV at 22.05 kHz (no resampling), downmixed to mono by the Processor",
        "realtime_factor": speed["realtime_factor"],
        "speed": speed,
        "memory": memory,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "notes": (
            "realtime_factor = audio seconds / wall seconds of Processor.process_file (predict + render + write; "
            "model loading excluded, reported as speed.model_load_s). Untrained weights. peak_rss_mb: ru_maxrss of "
            "a fresh child process that loaded the model and processed one file; worker_peak_rss_mb: its render "
            "pool worker (a forked worker's ru_maxrss includes the parent's resident memory at fork time). processing_mb_*: peak "
            "minus the same child's peak right after loading the model. processing_peak_rss_mb: VmHWM after "
            "processing, with the high-water mark reset (/proc/self/clear_refs 5) once the model was loaded, so "
            "that the import/load peak cannot hide growth during processing; grows_with_length is judged on it."
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    from afx_lightning.memory import keep_freed_memory

    keep_freed_memory()  # as the afx commands do
    if args.child_peak is not None:
        in_path = None if args.child_peak == "-" else Path(args.child_peak)
        out_path = Path(args.child_out) if args.child_out else None
        print(json.dumps(child_peak(Path(args.ckpt), in_path, out_path)))
        return 0
    mode = command if args.command else compare if args.compare else run
    t0 = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        result = mode(args, workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="afx_bench_inference_") as tmp:
            result = mode(args, Path(tmp))
    result["loadavg_start"] = load_start
    result["total_s"] = time.perf_counter() - t0
    result["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
