"""Freed memory kept in the process (afx_lightning/memory.py): reallocating a large tensor faults in no new pages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from afx_lightning import cli, memory

# In a fresh interpreter, so this process's malloc settings stay as they are: page faults of touching a 64 MiB
# tensor a second time, under glibc's defaults, with freed memory kept, and after going back to the defaults.
_FAULTS = """
import json, resource, torch
from afx_lightning import memory

def faults_of_second_allocation():
    torch.ones(16 * 2**20)  # 64 MiB, freed at once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_second_allocation()
kept = memory.keep_freed_memory()
while_kept = faults_of_second_allocation()
memory.release_freed_memory()
released = faults_of_second_allocation()
print(json.dumps({"kept": kept, "default": default, "while_kept": while_kept, "released": released}))
"""


def test_kept_memory_is_reused_without_page_faults() -> None:
    run = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    faults = json.loads(run.stdout.strip().splitlines()[-1])
    if not faults["kept"]:
        pytest.skip("not glibc: malloc is left as it is")
    pages = 64 * 2**20 // 4096
    assert faults["default"] > pages // 2, faults  # glibc mmaps a fresh chunk: every page faults again
    assert faults["while_kept"] < pages // 20, faults  # the freed chunk is reused
    assert faults["released"] > pages // 2, faults  # the defaults are back


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
