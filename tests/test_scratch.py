"""Scratch folders of killed processes are removed; those of live processes and other hosts are not."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from resseg_ray import scratch

CHILD = """
import signal
from resseg_ray.scratch import make_scratch_dir
path = make_scratch_dir("best")
open(path + "/bundle.bin", "wb").write(b"x" * 1000)
print(path, flush=True)
signal.pause()  # until the test kills it
"""


def _child_with_scratch() -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    path = Path(proc.stdout.readline().strip())  # blocks until the folder exists
    assert path.is_dir() and (path / "bundle.bin").exists()
    return proc, path


def test_a_killed_process_leaves_nothing_once_the_next_scratch_folder_is_made() -> None:
    live, live_path = _child_with_scratch()
    dead, dead_path = _child_with_scratch()
    os.kill(dead.pid, signal.SIGKILL)  # like Ray killing a worker: no finally runs
    dead.wait(timeout=30)
    other_host = Path(tempfile.mkdtemp(prefix=f"resseg-best-hsomewhereelse-pid{dead.pid}-"))
    unrelated = Path(tempfile.mkdtemp(prefix="resseg-notes-"))
    try:
        assert dead_path.exists()

        with scratch.scratch_dir("ckpt") as mine:
            assert Path(mine).name.startswith(f"resseg-ckpt-h{scratch.host_tag()}-pid{os.getpid()}-")
            assert not dead_path.exists()  # the killed process's folder is gone
            assert live_path.exists() and (live_path / "bundle.bin").exists()
            assert other_host.exists() and unrelated.exists()
        assert not Path(mine).exists()
    finally:
        live.kill()
        live.wait(timeout=30)
        for p in (live_path, other_host, unrelated):
            shutil.rmtree(p, ignore_errors=True)


def test_scratch_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="lowercase letters"):
        scratch.make_scratch_dir("best-1")
