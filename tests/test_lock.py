"""The lock is the only install path: it must agree with pyproject.toml and with what is installed.

No network: the check reads pyproject's requirements and the lock's pins and compares them with ``packaging``
(what pip and uv use). ``make lock`` is the refresh; these tests say when it is due.
"""

from __future__ import annotations

import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def lock_pins(text: str) -> dict[str, list[tuple[str, str | None]]]:
    """name -> [(version, marker)] for every pinned line (a universal lock may pin one name per environment)."""
    pins: dict[str, list[tuple[str, str | None]]] = {}
    for line in text.splitlines():
        m = PIN.match(line)
        if m:
            pins.setdefault(canonicalize_name(m.group(1)), []).append((m.group(2), m.group(3)))
    return pins


def pins_here(pins: dict[str, list[tuple[str, str | None]]]) -> dict[str, str]:
    """The pin that applies on this interpreter and platform, per name."""
    env = default_environment()
    out = {}
    for name, options in pins.items():
        for version, marker in options:
            if marker is None or Requirement(f"x; {marker}").marker.evaluate(env):
                out[name] = version
    return out


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(project["project"]["dependencies"])
    for group in project.get("dependency-groups", {}).values():
        reqs += [r for r in group if isinstance(r, str)]
    return [Requirement(r) for r in reqs]


def lock_disagreements(requirements: list[Requirement], pins: dict[str, list[tuple[str, str | None]]]) -> list[str]:
    """Requirements the lock does not pin, or pins outside the requirement's range (on this platform)."""
    here = pins_here(pins)
    env = default_environment()
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name not in here:
            problems.append(f"{req} is not in requirements.lock")
        elif not req.specifier.contains(here[name], prereleases=True):
            problems.append(f"{req} but requirements.lock pins {name}=={here[name]}")
    return problems


def test_every_project_requirement_is_pinned_within_its_range():
    problems = lock_disagreements(project_requirements(), lock_pins(LOCK.read_text()))
    assert not problems, "pyproject.toml and requirements.lock disagree (run `make lock`): " + "; ".join(problems)


def test_disagreement_is_detected():
    """The check above can fail: a requirement the lock lacks, and one the lock pins outside its range."""
    pins = lock_pins(LOCK.read_text())
    reqs = [Requirement("torch==2.99.0"), Requirement("no-such-package-afx>=1")]
    problems = lock_disagreements(reqs, pins)
    assert any("torch==2.99.0 but requirements.lock pins torch==" in p for p in problems)
    assert any("no-such-package-afx>=1 is not in requirements.lock" in p for p in problems)


def test_every_pin_carries_hashes():
    """``--require-hashes`` installs refuse a pin without a hash; catch a hand-edited lock here instead."""
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
    unhashed = [b.split()[0] for b in blocks if PIN.match(b.splitlines()[0]) and "--hash=sha256:" not in b]
    assert not unhashed, f"pins without hashes in requirements.lock: {unhashed}"


def test_lock_header_records_the_refresh_command():
    """The lock says how it was made, and that is what `make lock` runs."""
    header = LOCK.read_text().splitlines()[:3]
    command = next(line.strip("# ").strip() for line in header if "uv pip compile" in line)
    makefile = (ROOT / "Makefile").read_text()
    lock_args = re.search(r"^LOCK_ARGS := (.+)$", makefile, re.M).group(1).split()
    assert shlex.split(command)[3:] == [*lock_args, "-o", "requirements.lock"]


def test_installed_environment_is_the_lock():
    """The running venv holds exactly the lock's versions: nothing was resolved afresh on this machine."""
    here = pins_here(lock_pins(LOCK.read_text()))
    wrong = []
    for name, version in here.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}=={version} not installed")
            continue
        if installed.split("+")[0] != version.split("+")[0]:
            wrong.append(f"{name}: installed {installed}, locked {version}")
    assert not wrong, "the environment was not installed from requirements.lock (`make install`): " + "; ".join(wrong)


@pytest.mark.parametrize("name", ["torch", "torchaudio", "torchvision"])
def test_torch_family_is_pinned_exactly(name):
    """torch, torchaudio and torchvision are built against each other: ranges let a registry pick a broken trio."""
    req = next(r for r in project_requirements() if canonicalize_name(r.name) == name)
    assert [s.operator for s in req.specifier] == ["=="] and "*" not in str(req.specifier)


def test_torch_family_runs_together():
    """The pinned trio imports and runs: torchaudio's and torchvision's compiled ops load against this torch."""
    import torch
    import torchaudio
    import torchvision

    resampled = torchaudio.functional.resample(torch.ones(1, 441), 44100, 22050)
    assert resampled.shape == (1, 221)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
