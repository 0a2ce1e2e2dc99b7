"""One console script for every job: ``resseg <command>`` runs the code ``python
jobs/<script>.py`` runs, answers ``--help`` and a mistyped command at once, and keeps the
jobs' one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resseg_ray.commands import COMMANDS, main
from tests.helpers import ROOT, run_here
from tests.rasters import write_tif

RESSEG = Path(sys.executable).with_name("resseg")


def _resseg_here(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``resseg *argv`` in this process: (exit status, stdout, stderr)."""
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_console_script_lists_the_commands_and_refuses_a_mistyped_one() -> None:
    """The installed script, as a user types it; it imports no job to answer these."""
    listed = subprocess.run([str(RESSEG), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    for name, command in COMMANDS.items():
        assert f"  {name}" in listed.stdout and command.summary in listed.stdout, name
    wrong = subprocess.run([str(RESSEG), "predcit"], capture_output=True, text=True, timeout=60, check=False)
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert (
        wrong.stderr
        == "error: 'predcit' is not a resseg command; did you mean 'predict'? (resseg --help lists them)\n"
    )
    bare = subprocess.run([str(RESSEG)], capture_output=True, text=True, timeout=60, check=False)
    assert bare.returncode == 2 and "usage: resseg <command>" in bare.stdout


def test_a_command_on_ray_runs_under_the_launcher_from_the_console_script(tmp_path) -> None:
    """``resseg train`` starts itself again as the launcher's child (resseg_ray.launcher): the
    launcher reads its grace (a bad one is its error line, before any job runs), the child
    answers once. ``resseg catalog`` uses no Ray and runs without it."""
    import os

    from resseg_ray.launcher import GRACE_ENV

    env = {**os.environ, GRACE_ENV: "soon"}
    bad = subprocess.run(
        [str(RESSEG), "train", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.startswith(f"error: {GRACE_ENV}='soon'") and bad.stdout == ""
    catalog = subprocess.run(
        [str(RESSEG), "catalog", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert catalog.returncode == 0 and catalog.stdout.startswith("usage: resseg catalog ")
    ok = subprocess.run([str(RESSEG), "train", "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("usage: resseg train ") and ok.stdout.count("usage:") == 1


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_is_its_job_script(name: str, capsys) -> None:
    """``resseg <name> --help`` and ``python jobs/<script> --help`` list the same options: one
    parser, in resseg_ray/commands."""
    code, out, _ = _resseg_here(capsys, name, "--help")
    assert code == 0 and out.startswith(f"usage: resseg {name} ")
    script = run_here(COMMANDS[name].script, "--help", capsys=capsys)
    assert script.returncode == 0
    assert script.stdout.startswith(f"usage: {COMMANDS[name].script} ")
    # the same description and options (the usage line wraps by the program's name)
    assert script.stdout.split("\n\n", 1)[1] == out.split("\n\n", 1)[1]
    assert (ROOT / "jobs" / COMMANDS[name].script).read_text().count("\n") < 15  # a thin wrapper


def test_a_command_runs_its_job_and_keeps_its_errors(tmp_path, capsys) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for i in range(2):
        write_tif(scenes / f"D1{i}.tif", np.full((3, 40, 50), 100 + i, np.uint16))
    out = tmp_path / "stac"
    code, said, err = _resseg_here(
        capsys, "catalog", "--scenes", str(scenes), "--out", str(out), "--collection", "quake"
    )
    assert code == 0, err
    assert said.startswith(f"wrote {out / 'catalog.json'}: 2 items in collection quake")
    collection = json.loads((out / "quake" / "collection.json").read_text())
    assert collection["id"] == "quake"
    # a user's mistake: one error line naming the flag, exit 2, nothing written
    code, said, err = _resseg_here(
        capsys, "catalog", "--scenes", str(scenes), "--out", str(tmp_path / "bad"), "--collection", "a b"
    )
    assert code == 2 and err == "error: --collection 'a b': use letters, digits, - and _ only\n"
    assert not (tmp_path / "bad").exists()
