"""Build the paired sets of the real-audio fidelity benchmark (issue 11): real recordings, real third-party processors.

Why: a framework that drives real plugins has to be judged on audio nobody synthesised, rendered by processors
that none of its chains contain, so that neither the data nor the answer comes from the project itself.
Everything comes from Debian packages; nothing is downloaded at run time::

    sudo apt-get install freepats pocketsphinx-testdata asc-music    # the recordings, ~37 MB download
    sudo apt-get install liblilv-0-0 calf-plugins zam-plugins          # the processors (also in .ci/run)

Tasks (22 050 Hz mono WAV pairs, split by source recording, never one recording in two splits):

``amp``
    *Recordings*: every multi-sampled guitar, bass and keyboard note of ``freepats`` (GUS patches: recorded
    notes of real instruments, 16-bit PCM, read directly, no synthesis), one note per file at a level drawn per
    note (the tube reacts to level). *Processor*: ZamTube (VST3, ``zam-plugins``), a wave-digital-filter model of
    a 12AX7 triode stage and a Fender Bassman tone stack, driven hard. The split is by note sample.
``breath``
    *Recordings*: the speech of ``pocketsphinx-testdata`` (LibriVox audiobook sentences, read commands, digits;
    real voices, 16 kHz). *Edit*: the input is the speech with recorded non-speech events mixed into its pauses
    and margins at known times, 8-18 dB above its noise floor and 15-35 dB under its loudest words: breath-like noise bursts (freepats seashore,
    cabasa, shaker, maracas, guiro, each a recording, faded in and out) and lip-smack-like clicks (finger snap,
    sticks, rim, claves, fret squeak). The target is the speech alone: a perfect edit with a clean reference,
    which DAPS' hand edit (the paper's task) only approximates. Each source sentence is its own file.
``mastering``
    *Recordings*: the three songs of ``asc-music`` (Michael Kievernagel's soundtrack of Advanced Strategic
    Command, mixed stereo MP3, downmixed), cut into 12 s excerpts; each song is one split (train: "frontiers",
    val: "machine_wars", test: "time_to_strike"), inputs normalised to -25 LUFS as in the paper.
    *Processor*: Calf Equalizer5Band (low shelf, three peaks, high shelf) -> Calf Multiband Limiter (LV2,
    ``calf-plugins``), about +12 dB of drive into a -1 dBFS four-band look-ahead limiter.

Targets are rendered through the project's own hosts (:func:`afx_lightning.effects.plugin_file_effect` for
VST3, :class:`afx_lightning.effects.lv2.LV2Effect` for LV2) in 1024-sample blocks, with the chain's delay
measured once with a click and removed, so each target lines up with its input.

Layout: ``<out>/<task>/{train,val,test}/{input,target}/*.wav`` and ``<out>/<task>/manifest.json`` (what was
built from what). A set is built once and reused while its manifest matches (builder version, options); the
default place is ``~/.cache/afx-lightning/fidelity`` (outside git). ``--quick`` builds a tiny subset (a few
files per split) into ``<out>/quick/``.

    python benchmarks/fidelity_data.py --tasks amp breath mastering [--out DIR] [--quick] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without an install

SAMPLE_RATE = 22050
BLOCK = 1024
BUILD_VERSION = 3  # bump when a builder changes what it writes
DEFAULT_ROOT = Path(os.environ.get("AFX_FIDELITY_DATA", "~/.cache/afx-lightning/fidelity")).expanduser()
SPLITS = ("train", "val", "test")
TASKS = ("amp", "breath", "mastering")

FREEPATS = Path("/usr/share/midi/freepats")
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
ASC_MUSIC = Path("/usr/share/games/asc/music")
ZAMTUBE = Path("/usr/lib/vst3/ZamTube.vst3")
CALF_EQ5 = "http://calf.sourceforge.net/plugins/Equalizer5Band"
CALF_MB_LIMITER = "http://calf.sourceforge.net/plugins/MultibandLimiter"

#: task -> [(a file the build reads, the Debian package that ships it)]
REQUIREMENTS: dict[str, list[tuple[Path, str]]] = {
    "amp": [(FREEPATS / "Tone_000" / "024_Nylon_Guitar.pat", "freepats"), (ZAMTUBE, "zam-plugins")],
    "breath": [
        (POCKETSPHINX / "librivox", "pocketsphinx-testdata"),
        (FREEPATS / "Drum_000" / "026_Snap.pat", "freepats"),
    ],
    "mastering": [(ASC_MUSIC / "frontiers.mp3", "asc-music"), (Path("/usr/lib/lv2/calf.lv2"), "calf-plugins")],
}
APT_PACKAGES = ("freepats", "pocketsphinx-testdata", "asc-music", "zam-plugins", "calf-plugins", "liblilv-0-0")


def log(msg: str) -> None:
    print(f"[fidelity_data] {msg}", file=sys.stderr, flush=True)


def missing_packages(task: str) -> list[str]:
    """The Debian packages a task's build still needs (empty: it can be built here)."""
    missing = sorted({pkg for path, pkg in REQUIREMENTS[task] if not path.exists()})
    if task == "mastering" and "calf-plugins" not in missing:
        try:
            from afx_lightning.effects import lilv_ctypes

            lilv_ctypes.get_plugin(CALF_MB_LIMITER, "calf-plugins")
        except Exception:  # no liblilv, or Calf not found by it
            missing.append("liblilv-0-0 calf-plugins")
    return missing


def stable_unit(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` on every machine (splits and per-file draws)."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2.0**64


def rng_for(key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big"))


def split_by_hash(key: str, fractions: tuple[float, float] = (0.15, 0.15)) -> str:
    """test / val / train by a stable hash of ``key`` (fractions: val, test)."""
    u = stable_unit("split:" + key)
    return "test" if u < fractions[1] else "val" if u < fractions[0] + fractions[1] else "train"


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    from afx_lightning.data.preprocess import (
        resample as _resample,  # torchaudio's band-limited resampler
    )

    return _resample(np.ascontiguousarray(audio, dtype=np.float32), int(rate), SAMPLE_RATE)


def db(value: float) -> float:
    return float(10.0 ** (value / 20.0))


def write_pair(root: Path, split: str, name: str, inp: np.ndarray, tgt: np.ndarray) -> None:
    import soundfile as sf

    n = min(inp.shape[-1], tgt.shape[-1])
    for kind, audio in (("input", inp), ("target", tgt)):
        folder = root / split / kind
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(
            str(folder / f"{name}.wav"), np.clip(audio[:n], -1.0, 1.0).astype(np.float32), SAMPLE_RATE, subtype="FLOAT"
        )


# ============================================================================================ recordings


@dataclass
class PatSample:
    """One recorded sample of a GUS patch (``.pat``) as float32 at its own rate."""

    patch: str
    index: int
    rate: int
    root_hz: float
    audio: np.ndarray


def read_pat(path: Path) -> list[PatSample]:
    """The samples of a GUS patch file (freepats' format): 16/8-bit, signed/unsigned PCM after 96-byte headers.

    No Python reader exists in Debian or the lock; the format is a fixed header layout (GF1PATCH110)."""
    data = path.read_bytes()
    if data[:12] not in (b"GF1PATCH110\0", b"GF1PATCH100\0"):
        raise ValueError(f"{path}: not a GUS patch")
    count = data[129 + 63 + 6]  # header (129), instrument (63), layer: previous, id, size (4 bytes), samples
    offset = 129 + 63 + 47
    samples = []
    for index in range(count):
        size, _loop_start, _loop_end, rate = struct.unpack_from("<IIIH", data, offset + 8)
        root_mhz = struct.unpack_from("<I", data, offset + 30)[0]
        modes = data[offset + 55]
        offset += 96
        raw = data[offset : offset + size]
        offset += size
        sixteen, unsigned = bool(modes & 1), bool(modes & 2)
        dtype = ("<u2" if unsigned else "<i2") if sixteen else ("u1" if unsigned else "i1")
        x = np.frombuffer(raw, dtype).astype(np.float32)
        full = 32768.0 if sixteen else 128.0
        if unsigned:
            x -= full
        samples.append(PatSample(path.stem, index, int(rate), root_mhz / 1000.0, x / full))
    return samples


def read_speech(path: Path) -> tuple[np.ndarray, int]:
    """A pocketsphinx test recording: WAV, or headerless 16 kHz 16-bit little-endian ``.raw``."""
    import soundfile as sf

    if path.suffix == ".raw":
        audio, rate = sf.read(
            str(path), samplerate=16000, channels=1, format="RAW", subtype="PCM_16", endian="LITTLE", dtype="float32"
        )
    else:
        audio, rate = sf.read(str(path), dtype="float32")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return audio, int(rate)


# ============================================================================================ processors


@dataclass
class Processor:
    """An effect (a project :class:`~afx_lightning.effects.Effect`) held at one setting (by parameter name)."""

    effect: object
    settings: dict[str, float]
    delay: int | None = None  # samples removed from the front; None: the effect's reported latency

    @property
    def theta(self) -> np.ndarray:
        return self.effect.normalized(self.settings)

    def close(self) -> None:
        self.effect.close()


def render(proc: Processor, audio: np.ndarray) -> np.ndarray:
    """Stream mono ``audio`` through fresh instances in 1024-sample blocks, as training and ``afx process`` do,
    with the processor's delay removed so the output lines up with the input."""
    chain, theta = proc.effect, proc.theta
    delay = chain.latency if proc.delay is None else proc.delay
    n = audio.shape[-1]
    padded = np.zeros(((n + delay + BLOCK - 1) // BLOCK) * BLOCK, np.float32)
    padded[:n] = audio
    chain.reset()
    out = np.concatenate([chain.process(padded[None, i : i + BLOCK], theta)[0] for i in range(0, padded.size, BLOCK)])
    return out[delay : delay + n]


def measure_delay(proc: Processor, max_lag: int = 2048) -> int:
    """Set and return the processor's delay, measured with a quiet click (plugins do not always report their
    look-ahead on a latency port)."""
    from afx_lightning.data.preprocess import find_lag

    click = np.zeros(8 * BLOCK, np.float32)
    click[BLOCK] = 0.05
    proc.delay = 0
    proc.delay = max(find_lag(click, render(proc, click), max_lag), 0)
    return proc.delay


def zamtube_amp() -> Processor:
    """ZamTube (VST3): full drive and +12 dB into the triode (it saturates near 0.6 out, so louder notes distort
    more, as an amp does), the Bassman stack with mids scooped and treble up."""
    from afx_lightning.effects import ParamSpec, plugin_file_effect

    ranges = {
        "tube_drive": (0.1, 11.0),
        "bass": (0.0, 10.0),
        "mids": (0.0, 10.0),
        "treble": (0.0, 10.0),
        "input_level": (-30.0, 30.0),
    }
    settings = {"tube_drive": 11.0, "bass": 6.0, "mids": 3.0, "treble": 7.5, "input_level": 12.0}
    params = [ParamSpec(k, lo, hi, settings[k]) for k, (lo, hi) in ranges.items()]
    return Processor(plugin_file_effect(ZAMTUBE, "zamtube", params, SAMPLE_RATE, BLOCK, latency=None), settings)


def calf_mastering() -> Processor:
    """Calf Equalizer5Band -> Calf Multiband Limiter (LV2): a bright, loud master."""
    from afx_lightning.effects import Chain
    from afx_lightning.effects.lv2 import LV2Effect, lv2_params_from_ports

    eq = {
        "ls_active": 1.0,
        "ls_level": db(3.0),
        "ls_freq": 90.0,
        "p1_active": 1.0,
        "p1_level": db(-3.0),
        "p1_freq": 350.0,
        "p1_q": 1.0,
        "p2_active": 1.0,
        "p2_level": db(2.0),
        "p2_freq": 2500.0,
        "p2_q": 0.8,
        "p3_active": 1.0,
        "p3_level": db(-1.5),
        "p3_freq": 6000.0,
        "p3_q": 1.5,
        "hs_active": 1.0,
        "hs_level": db(4.0),
        "hs_freq": 8000.0,
    }
    limiter = {
        "level_in": db(12.0),
        "limit": db(-1.0),
        "attack": 4.0,
        "release": 60.0,
        "freq0": 120.0,
        "freq1": 1000.0,
        "freq2": 6000.0,
        "auto_level": 0.0,
    }

    def effect(uri: str, name: str, values: dict[str, float]) -> LV2Effect:
        specs = lv2_params_from_ports(uri, list(values), install_hint="calf-plugins", sample_rate=SAMPLE_RATE)
        return LV2Effect(
            uri, name, SAMPLE_RATE, BLOCK, specs, channels=1, stereo_mode="dual_mono", install_hint="calf-plugins"
        )

    chain = Chain([effect(CALF_EQ5, "eq", eq), effect(CALF_MB_LIMITER, "limiter", limiter)], name="calf_master")
    settings = {f"eq.{k}": v for k, v in eq.items()} | {f"limiter.{k}": v for k, v in limiter.items()}
    return Processor(chain, settings)


# ============================================================================================ tasks

AMP_PATCHES = (
    "004_Electric_Piano_1_Rhodes",
    "007_Clavinet",
    "024_Nylon_Guitar",
    "025_Steel_Guitar",
    "026_Jazz_Guitar",
    "027_Clean_Electric_Guitar",
    "028_Muted_Electric_Guitar",
    "032_Acoustic_Bass",
    "033_Finger_Bass",
    "034_Pick_Bass",
    "035_Fretless_Bass",
    "036_Slap_Bass_1",
)
BREATHS = (
    "Tone_000/122_Seashore",
    "Drum_000/069_Cabasa",
    "Drum_000/070_Maracas",
    "Drum_000/082_Shaker",
    "Drum_000/074_Guiro_2_Long",
)
CLICKS = (
    "Drum_000/026_Snap",
    "Drum_000/031_Sticks",
    "Drum_000/037_Stick_Rim",
    "Drum_000/075_Claves",
    "Tone_000/120_Guitar_Fret_Noise",
    "Drum_000/033_Metronome_Click",
)
MASTERING_SONGS = {"frontiers": "train", "machine_wars": "val", "time_to_strike": "test"}


def build_amp(root: Path, quick: bool) -> dict:
    proc = zamtube_amp()
    notes = [s for patch in AMP_PATCHES for s in read_pat(FREEPATS / "Tone_000" / f"{patch}.pat")]
    if quick:
        notes = notes[::6][:8]
    files = []
    for s in notes:
        name = f"{s.patch[:3]}_{s.patch[4:]}_{s.index:02d}"
        split = ("train", "train", "train", "train", "val", "test")[len(files) % 6] if quick else split_by_hash(name)
        audio = resample(s.audio, s.rate)
        peak_db = float(rng_for("level:" + name).uniform(-24.0, -3.0))  # players do not play at one level
        audio = audio / max(float(np.abs(audio).max()), 1e-9) * db(peak_db)
        audio = np.concatenate([audio, np.zeros(SAMPLE_RATE // 4, np.float32)])  # let the tail ring out
        write_pair(root, split, name, audio, render(proc, audio))
        files.append({"name": name, "split": split, "seconds": audio.size / SAMPLE_RATE, "peak_dbfs": peak_db})
    proc.close()
    return {
        "source": "freepats (Debian): recorded notes of " + ", ".join(AMP_PATCHES),
        "processor": {"plugin": str(ZAMTUBE), "package": "zam-plugins", "settings": proc.settings},
        "files": files,
    }


def _frame_levels(audio: np.ndarray, hop: int) -> np.ndarray:
    frames = audio[: audio.size // hop * hop].reshape(-1, hop).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _pauses(speech: np.ndarray, floor_db: float, above_db: float = 6.0, min_s: float = 0.15) -> list[tuple[int, int]]:
    """(start, end) sample spans of at least ``min_s`` where the 20 ms level stays within ``above_db`` of the
    recording's noise floor."""
    hop = SAMPLE_RATE // 50
    quiet = _frame_levels(speech, hop) < floor_db + above_db
    spans, start = [], None
    for i, q in enumerate(np.append(quiet, False)):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) * hop >= min_s * SAMPLE_RATE:
                spans.append((start * hop, i * hop))
            start = None
    return spans


def _room_tone(
    speech: np.ndarray, length: int, floor_db: float, rng: np.random.Generator, window: int = 2048
) -> np.ndarray:
    """``length`` samples of the recording's own background: its quietest ``window`` samples, overlap-added in
    Hann-windowed copies at random circular shifts (stationary, no loop period), at the noise floor's level."""
    hop = window // 4
    levels = _frame_levels(speech, hop)
    start = int(np.argmin(np.convolve(levels, np.ones(4), "valid"))) * hop  # the quietest whole window
    piece = speech[start : start + window].astype(np.float64)
    out = np.zeros(length + 2 * window)
    hann = np.hanning(window + 1)[:-1]  # periodic Hann: copies at 50 % overlap sum to one
    for at in range(0, length + window, window // 2):
        out[at : at + window] += np.roll(piece, int(rng.integers(window))) * hann
    out = out[window : window + length]
    return (out * db(floor_db) / max(float(np.sqrt(np.mean(out**2))), 1e-12)).astype(np.float32)


@cache
def _recording(path: str) -> np.ndarray:
    sample = read_pat(FREEPATS / f"{path}.pat")[0]
    return resample(sample.audio, sample.rate)


def _event(path: str, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One recorded event at 22 050 Hz, RMS 1: a faded 0.15-0.45 s stretch of a noise recording ("breath"), or
    a whole click recording."""
    audio = _recording(path)
    if kind == "breath":
        length = min(audio.size, int(rng.uniform(0.15, 0.45) * SAMPLE_RATE))
        start = int(rng.integers(0, audio.size - length + 1))
        audio = audio[start : start + length] * np.hanning(length).astype(np.float32)
    return audio / max(float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))), 1e-9)


def build_breath(root: Path, quick: bool) -> dict:
    sources = sorted((POCKETSPHINX / "librivox").glob("*.wav")) + sorted((POCKETSPHINX / "cards").glob("*.wav"))
    sources += [POCKETSPHINX / n for n in ("goforward.raw", "numbers.raw", "something.raw")]
    sources += [POCKETSPHINX / "tidigits" / "dhd.2934z.raw"]
    fixed = {
        "sense_and_sensibility_01_austen_64kb-0880": "val",
        "004": "val",
        "sense_and_sensibility_01_austen_64kb-0930": "test",
        "003": "test",
        "numbers": "test",
    }
    if quick:
        sources = sources[:3] + [POCKETSPHINX / "cards" / "003.wav", POCKETSPHINX / "cards" / "004.wav"]
    hop = SAMPLE_RATE // 50
    files = []
    for path in sources:
        split = fixed.get(path.stem, "train")
        speech, rate = read_speech(path)
        speech = resample(speech, rate)
        speech = speech / max(float(np.abs(speech).max()), 1e-9) * db(-3.0)
        rng = rng_for("breath:" + path.stem)
        levels = _frame_levels(speech, hop)
        floor, loudest = float(np.percentile(levels, 10)), float(levels.max())
        margin = int(0.7 * SAMPLE_RATE)  # room before and after the sentence, filled with its own room tone
        clean = np.concatenate([_room_tone(speech, margin, floor, rng), speech, _room_tone(speech, margin, floor, rng)])
        events = np.zeros_like(clean)
        placed = []
        for start, end in _pauses(clean, floor):
            t = start + int(rng.uniform(0.02, 0.1) * SAMPLE_RATE)
            while t < end - int(0.1 * SAMPLE_RATE):
                kind = "breath" if rng.random() < 0.55 else "click"
                name = str(rng.choice(BREATHS if kind == "breath" else CLICKS))
                ev = _event(name, kind, rng)[: end - t]
                # audible over the room tone, well below the words (DAPS' breaths sit 15-30 dB under speech)
                level = min(floor + float(rng.uniform(8.0, 18.0)), loudest - (20.0 if kind == "breath" else 15.0))
                gain = min(db(level), db(-15.0) / float(np.abs(ev).max()))  # peaks 12 dB under the speech's
                level = 20 * np.log10(gain)
                events[t : t + ev.size] += ev * gain
                placed.append(
                    {
                        "at_s": round(t / SAMPLE_RATE, 3),
                        "seconds": round(ev.size / SAMPLE_RATE, 3),
                        "kind": kind,
                        "recording": name,
                        "db_above_floor": round(float(level - floor), 1),
                        "db_below_speech": round(float(loudest - level), 1),
                    }
                )
                t += ev.size + int(rng.uniform(0.08, 0.5) * SAMPLE_RATE)
        stem = path.stem.replace("sense_and_sensibility_01_austen_64kb", "austen")
        name = f"{path.parent.name}_{stem}" if path.parent != POCKETSPHINX else stem
        write_pair(root, split, name, clean + events, clean)
        files.append(
            {"name": name, "split": split, "seconds": clean.size / SAMPLE_RATE, "source": str(path), "events": placed}
        )
    return {
        "source": "pocketsphinx-testdata (Debian): speech recordings; events: freepats recordings "
        + ", ".join(BREATHS + CLICKS),
        "processor": {"edit": "events mixed into pauses and room-tone margins at known times; target = speech"},
        "files": files,
    }


def build_mastering(root: Path, quick: bool) -> dict:
    import pyloudnorm
    import soundfile as sf

    proc = calf_mastering()
    delay = measure_delay(proc)
    meter = pyloudnorm.Meter(SAMPLE_RATE)
    excerpt, skip = 12 * SAMPLE_RATE, 8 * SAMPLE_RATE
    limits = {"train": 2, "val": 1, "test": 2} if quick else {"train": 18, "val": 4, "test": 6}
    files = []
    for song, split in MASTERING_SONGS.items():
        audio, rate = sf.read(str(ASC_MUSIC / f"{song}.mp3"), dtype="float32", always_2d=True)
        audio = resample(audio.mean(axis=1), rate)
        count = min(limits[split], (audio.size - 2 * skip) // excerpt)
        starts = np.linspace(skip, audio.size - skip - excerpt, count).astype(int)  # spread over the song
        for k, start in enumerate(starts):
            x = audio[start : start + excerpt].astype(np.float64)
            x = pyloudnorm.normalize.loudness(x, meter.integrated_loudness(x), -25.0).astype(np.float32)
            name = f"{song}_{k:02d}"
            target = render(proc, x)
            write_pair(root, split, name, x, target)
            files.append(
                {
                    "name": name,
                    "split": split,
                    "seconds": excerpt / SAMPLE_RATE,
                    "start_s": start / SAMPLE_RATE,
                    "target_lufs": round(float(meter.integrated_loudness(target.astype(np.float64))), 2),
                }
            )
    proc.close()
    return {
        "source": "asc-music (Debian): three mixed songs by Michael Kievernagel, inputs at -25 LUFS",
        "processor": {
            "chain": [CALF_EQ5, CALF_MB_LIMITER],
            "package": "calf-plugins",
            "settings": proc.settings,
            "delay_removed_samples": delay,
        },
        "files": files,
    }


BUILDERS: dict[str, Callable[[Path, bool], dict]] = {
    "amp": build_amp,
    "breath": build_breath,
    "mastering": build_mastering,
}


def task_dir(task: str, root: Path = DEFAULT_ROOT, quick: bool = False) -> Path:
    return (root / "quick" if quick else root) / task


def ensure(task: str, root: Path = DEFAULT_ROOT, quick: bool = False, force: bool = False) -> Path:
    """The task's built set (building it first if absent, stale or ``force``); its folder."""
    out = task_dir(task, root, quick)
    expected = {"task": task, "version": BUILD_VERSION, "quick": quick, "sample_rate": SAMPLE_RATE}
    manifest = out / "manifest.json"
    if not force and manifest.is_file():
        try:
            if {k: json.loads(manifest.read_text()).get(k) for k in expected} == expected:
                return out
        except ValueError:
            pass
    missing = missing_packages(task)
    if missing:
        raise RuntimeError(f"task {task}: install the Debian packages {' '.join(missing)} (apt-get install ...)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{task}-", dir=out.parent))
    t0 = time.perf_counter()
    try:
        info = BUILDERS[task](tmp, quick)
        counts = {s: sum(f["split"] == s for f in info["files"]) for s in SPLITS}
        seconds = {s: round(sum(f["seconds"] for f in info["files"] if f["split"] == s), 1) for s in SPLITS}
        info = {**expected, "counts": counts, "seconds": seconds, "build_s": round(time.perf_counter() - t0, 1), **info}
        (tmp / "manifest.json").write_text(json.dumps(info, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{task}: built {counts} files ({seconds} s of audio) in {info['build_s']} s -> {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--out", type=Path, default=DEFAULT_ROOT, help=f"where the sets go (default {DEFAULT_ROOT})")
    parser.add_argument("--quick", action="store_true", help="a tiny subset (smoke tests)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching set exists")
    args = parser.parse_args(argv)
    for task in args.tasks:
        print(ensure(task, args.out.expanduser(), args.quick, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
