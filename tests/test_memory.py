"""Freed memory kept in the process (afx_lightning/memory.py): a training step faults in no new pages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from afx_lightning import cli, memory

# In a fresh interpreter, so this process's malloc settings stay as they are: page faults of a training step of a
# conv net whose activations exceed glibc's mmap threshold (8 x 64 x 128 x 160 floats = 42 MB), after warm-up
# steps, under glibc's defaults, with freed memory kept, and after going back to the defaults. (A lone block freed
# and asked for again at the same size still faults: glibc's aligned allocations do not fit back into the chunk
# they freed. What kept memory serves is a step's working set, which is what this measures.)
_FAULTS = """
import json, resource, torch
from afx_lightning import memory

net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 64, 5, padding=2), torch.nn.BatchNorm2d(64), torch.nn.ReLU(), torch.nn.Conv2d(64, 8, 3, padding=1)
)
x = torch.randn(8, 1, 128, 160)

def step():
    net.zero_grad()
    net(x).sum().backward()

def faults_per_step():
    for _ in range(3):
        step()
    counts = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(counts)

default = faults_per_step()
kept = memory.keep_freed_memory()
while_kept = faults_per_step()
memory.release_freed_memory()
released = faults_per_step()
print(json.dumps({"kept": kept, "default": default, "while_kept": while_kept, "released": released}))
"""


def test_a_training_step_reuses_kept_memory_without_page_faults() -> None:
    run = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    faults = json.loads(run.stdout.strip().splitlines()[-1])
    if not faults["kept"]:
        pytest.skip("not glibc: malloc is left as it is")
    activation_pages = 8 * 64 * 128 * 160 * 4 // 4096  # one 42 MB activation
    assert faults["default"] > activation_pages, faults  # glibc mmaps fresh chunks every step (measured 113 k)
    assert faults["while_kept"] < activation_pages // 10, faults  # the step reuses its pages (measured 0)
    assert faults["released"] > activation_pages, faults  # the defaults are back


@pytest.mark.parametrize(("env", "called"), [(None, True), ("1", True), ("0", False)])
def test_afx_commands_keep_freed_memory_unless_told_not_to(monkeypatch, capsys, env, called) -> None:
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    if env is None:
        monkeypatch.delenv(memory.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(memory.ENV_VAR, env)
    assert cli.main(["recipes", "list"]) == 0
    assert bool(calls) is called
