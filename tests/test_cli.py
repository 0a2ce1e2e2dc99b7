"""The jobs' shared plumbing: one error line and exit 2; the predict section's flags override
its configuration fields and are validated once."""

from __future__ import annotations

import argparse

import pytest

from resseg_ray.cli import add_predictor_options, predict_options, run_job
from resseg_ray.config import load_config
from resseg_ray.errors import ConfigError, InputDataError


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_predictor_options(p, outputs=True)
    return p.parse_args(argv)


def test_flags_override_the_predict_section_and_defaults_stay_the_configs() -> None:
    cfg = load_config(None, ["predict.window=1024", "predict.overlap=128", "predict.blend=linear"])
    options = predict_options(_args("--overlap", "64", "--polygons", "--bands", "3", "2", "1", "4"), cfg)
    assert (options.window, options.overlap, options.blend) == (1024, 64, "linear")
    assert options.polygons and options.bands == [3, 2, 1, 4] and options.prob
    assert predict_options(_args("--no-prob"), cfg).prob is False
    assert predict_options(_args(), load_config()).window == 512  # the one default


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--window", "8"], "predict.window (--window)"),
        (["--overlap", "600"], "predict.overlap (--overlap)"),
        (["--min-area", "nan"], "predict.min_area (--min-area)"),
        (["--simplify", "-1"], "predict.simplify (--simplify)"),
        (["--bands", "1", "1"], "predict.bands (--bands)"),
        (["--device", "gpu"], "predict.device (--device)"),
    ],
)
def test_bad_flags_name_the_flag_and_the_field(argv: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        predict_options(_args(*argv), load_config())


def test_run_job_prints_one_line_and_exits_2(capsys) -> None:
    def main() -> None:
        raise InputDataError("scene a.tif:\n  band 4 is alpha;\n  use --bands 1 2 3 4")

    with pytest.raises(SystemExit) as info:
        run_job(main)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: scene a.tif: band 4 is alpha; use --bands 1 2 3 4\n"


def test_run_job_lets_programming_errors_through() -> None:
    def main() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_job(main)
