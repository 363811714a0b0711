"""ops/allocator.py: freed memory kept in the process on glibc, so that a new tensor reuses mapped pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from caduceus_hf.ops import allocator

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the settings are glibc's"
)

_FRESH_TENSOR_FAULTS = textwrap.dedent(
    """
    import resource, sys, torch
    from caduceus_hf.ops import allocator

    applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else False

    def faults_of_a_new_tensor():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(8 << 20).fill_(1.0)  # 32 MiB, freed on return
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_a_new_tensor()  # the first one maps its pages either way
    print(applied, min(faults_of_a_new_tensor() for _ in range(3)))
    """
)


def _faults(mode: str) -> tuple[str, int]:
    # glibc's own defaults: without the environment's malloc settings, if any
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", _FRESH_TENSOR_FAULTS, mode], capture_output=True, text=True,
                         check=True, env=env)  # fmt: skip
    applied, faults = out.stdout.split()
    return applied, int(faults)


@glibc
def test_a_new_tensor_reuses_the_pages_of_a_freed_one():
    applied, kept = _faults("keep")
    _, default = _faults("default")
    assert applied == "True"
    # 32 MiB are 8,192 pages of 4 KiB: by default glibc hands them back and the next tensor faults them in again.
    assert kept <= 64, (kept, default)
    assert kept < default


def test_a_limit_outside_an_int_is_refused():
    with pytest.raises(ValueError, match="limit"):
        allocator.keep_freed_memory(limit=2**31)


def test_the_command_setting_accepts_only_0_or_1(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "yes")
    with pytest.raises(ValueError, match=allocator.ENV):
        allocator.keep_freed_memory_unless_disabled()
    monkeypatch.setenv(allocator.ENV, "0")
    assert allocator.keep_freed_memory_unless_disabled() is False
