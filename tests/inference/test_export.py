"""jobs/export_model.py as a user runs it: a loadable bundle; bad input a one-line error, exit 2,
nothing written."""

from __future__ import annotations

import subprocess

import pytest

from resseg_ray.models import load_bundle
from tests.helpers import run_script


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script("export_model.py", *args)


def test_export_model_writes_a_loadable_bundle(tmp_path) -> None:
    out = tmp_path / "m.resseg.safetensors"
    proc = _run(
        "--arch",
        "prop18",
        "--bands",
        "red",
        "nir",
        "--mean",
        "1",
        "2",
        "--std",
        "3",
        "4",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "max |diff| reloaded 0.00e+00" in proc.stdout
    bundle = load_bundle(out)
    assert bundle.info.band_names == ["red", "nir"] and bundle.info.norm_std == [3.0, 4.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "prop19"], "unknown architecture 'prop19'"),
        (["--pretrained", "/nonexistent/resnet18.pth"], "does not exist"),
        (["--bands", "a", "b", "--mean", "0"], "one value per band"),
        (["--device", "cuda:99"], "cuda"),
    ],
)
def test_export_model_bad_input(tmp_path, args: list[str], message: str) -> None:
    out = tmp_path / "m.resseg.safetensors"
    proc = _run(*args, "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
