"""Flags made from the configuration's fields: one definition of each option."""

from __future__ import annotations

import argparse

import pytest

from resseg_ray.cli import add_predictor_options, add_stac_options, predict_options, stac_options
from resseg_ray.config import PredictSection, StacSection, load_config
from resseg_ray.config.flags import add_flags, flag_of, given
from resseg_ray.errors import ConfigError


def _parser(outputs: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_predictor_options(p, outputs=outputs)
    add_stac_options(p)
    return p


def test_every_predict_and_stac_field_has_its_flag_with_the_fields_docs() -> None:
    p = _parser()
    flags = {a.option_strings[0]: a for a in p._actions if a.option_strings}
    for section in (PredictSection, StacSection):
        for name, f in section.model_fields.items():
            action = flags[flag_of(section, name)]
            first_words = " ".join((f.description or "").replace("``", "").split()[:4])
            assert first_words in " ".join((action.help or "").split()), (name, action.help)
    assert flags["--blend"].choices == ("flat", "linear", "cosine")
    assert "(default 512)" in (flags["--window"].help or "")
    assert flags["--bbox"].nargs == 4 and flags["--bands"].nargs == "+"


def test_given_flags_override_the_configuration_and_absent_ones_leave_it() -> None:
    cfg = load_config(None, ["predict.window=256", "predict.prob=true", "stac.max_items=5"])
    args = _parser().parse_args(
        ["--overlap", "32", "--no-prob", "--bands", "3", "2", "1", "--adapt-bn", "--blend", "cosine",
         "--stac-asset", "visual", "--bbox", "10", "40", "11", "41", "--stac-search", "https://x.org/api"]
    )  # fmt: skip
    options = predict_options(args, cfg)
    assert (options.window, options.overlap, options.prob, options.bands) == (256, 32, False, [3, 2, 1])
    assert options.adapt_bn and options.blend == "cosine" and options.min_area == cfg.predict.min_area
    stac = stac_options(args, cfg)
    assert (stac.asset, stac.bbox, stac.max_items) == ("visual", [10.0, 40.0, 11.0, 41.0], 5)
    assert given(_parser().parse_args([]), PredictSection) == {}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--overlap", "600"],
            r"predict.overlap \(--overlap\) must be an integer from 0 to window - 1",
        ),
        (["--bands", "2", "2"], r"predict.bands \(--bands\) must be distinct 1-based band indexes"),
        (["--min-area", "nan"], r"predict.min_area \(--min-area\) must be a finite number"),
        (["--bbox", "0", "50", "1", "40"], r"stac.bbox \(--bbox\) must be west south east north"),
    ],
)
def test_a_bad_flag_is_the_sections_error_naming_the_flag(argv: list[str], message: str) -> None:
    args = _parser().parse_args([*argv, "--stac-search", "https://x.org/api"])
    with pytest.raises(ConfigError, match=message):
        predict_options(args, load_config())
        stac_options(args, load_config())


def test_flags_of_any_section() -> None:
    p = argparse.ArgumentParser()
    add_flags(p, PredictSection, ["window", "wgs84"])
    args = p.parse_args(["--wgs84"])
    assert given(args, PredictSection) == {"wgs84": True}
