"""Writing processed audio: the output format a file name asks for, and writes that never leave a partial file.

Shared by ``afx process`` and ``afx predict``; kept free of Lightning so the inference path imports fast.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .datasets import DataError

_FORMATS = {"AIF": "AIFF", "OGA": "OGG", "OPUS": "OGG"}


def output_format(path: Path, input_subtype: str | None) -> tuple[str, str]:
    """The soundfile format of ``path``'s suffix and a subtype of the input's family (float stays float)."""
    import soundfile as sf

    ext = path.suffix.lstrip(".").upper()
    fmt = _FORMATS.get(ext, ext)
    if fmt not in sf.available_formats():
        raise DataError(f"cannot write {path}: unknown audio format {path.suffix!r} (use e.g. .wav or .flac)")
    want = None
    if input_subtype in ("FLOAT", "DOUBLE"):
        want = "FLOAT"
    elif input_subtype and input_subtype.startswith("PCM_"):
        want = input_subtype
    if want is None or not sf.check_format(fmt, want):
        want = sf.default_subtype(fmt)
    return fmt, want


def write_audio_atomic(
    path: Path, audio: np.ndarray, sample_rate: int, input_subtype: str | None = None, overwrite: bool = False
) -> int:
    """Write ``audio`` (C, T) to ``path`` through a temporary file renamed into place, so a failed or interrupted
    write never leaves a partial file under the final name. Integer formats are clipped to [-1, 1] (libsndfile
    would wrap); returns the number of clipped samples."""
    import soundfile as sf

    path = Path(path)
    if path.exists() and not overwrite:
        raise DataError(f"output {path} already exists; set data.predict_overwrite true to replace it")
    if path.is_dir():
        raise DataError(f"output {path} is a directory")
    fmt, subtype = output_format(path, input_subtype)
    clipped = 0
    if not subtype.startswith(("FLOAT", "DOUBLE")):
        over = np.abs(audio) > 1.0
        clipped = int(over.sum())
        if clipped:
            audio = np.clip(audio, -1.0, 1.0)
    with atomic_output(path) as tmp:
        sf.write(tmp, np.ascontiguousarray(audio.T), sample_rate, format=fmt, subtype=subtype)
    return clipped


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[str]:
    """A temporary file next to ``path`` to write into, renamed onto ``path`` when the block ends and removed if
    it raises: a failed or interrupted write never leaves a partial file under the final name."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=str(folder))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _new_file_mode(path))  # mkstemp makes it private; give it the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _new_file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
