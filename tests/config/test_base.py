"""The sections' base: frozen, strict, validated copies, plain-data round trips, documented fields."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from resseg_ray.config import (
    BLEND_MODES,
    PRECISIONS,
    RUNTIMES,
    STAC_ASSETS,
    Config,
    PredictSection,
    ServeSection,
    StacSection,
    from_dict,
    load_config,
    to_dict,
)
from resseg_ray.config.choices import BlendMode, Precision, Runtime
from resseg_ray.errors import ConfigError


def test_sections_are_frozen_and_copies_are_validated() -> None:
    cfg = load_config(None, ["predict.window=256"])
    with pytest.raises(ValidationError):
        cfg.predict.window = 128  # type: ignore[misc]
    smaller = cfg.predict.replace(window=128, overlap=16)
    assert (smaller.window, smaller.overlap, cfg.predict.window) == (128, 16, 256)
    with pytest.raises(ConfigError, match=r"predict.overlap \(--overlap\) must be an integer from 0 to"):
        cfg.predict.replace(overlap=256)
    with pytest.raises(
        ConfigError, match=r"configuration field predict.window \(--window\) must be an integer"
    ):
        cfg.predict.replace(window="128")
    whole = cfg.replace(predict=smaller)
    assert whole.predict.window == 128 and whole.train == cfg.train


def test_plain_data_round_trip_is_equal() -> None:
    """What travels to Ray workers and into MLflow artifacts comes back as it was."""
    cfg = load_config(None, ["scaling.worker_resources={train_slot: 1}", "predict.bands=[3, 2, 1]"])
    data = to_dict(cfg)
    assert data["scaling"]["worker_resources"] == {"train_slot": 1.0}
    assert from_dict(Config, data) == cfg
    assert from_dict(PredictSection, data["predict"]) == cfg.predict


def test_every_field_has_a_description_and_choices_match_their_tuples() -> None:
    for section, info in Config.model_fields.items():
        for name, f in info.annotation.model_fields.items():  # type: ignore[union-attr]
            assert f.description, f"{section}.{name} has no docstring"
    assert typing.get_args(BlendMode) == BLEND_MODES and typing.get_args(Runtime) == RUNTIMES
    assert typing.get_args(Precision) == PRECISIONS
    assert typing.get_args(PredictSection.model_fields["blend"].annotation) == BLEND_MODES
    asset_doc = StacSection.model_fields["asset"].description or ""
    assert all(f"``{a}``" in asset_doc for a in STAC_ASSETS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_replicas": 0}, "serve.min_replicas (1) must be <= serve.max_replicas (0)"),
        ({"runtime": "tensorrt"}, "serve.runtime must be one of auto, torch, openvino, onnxruntime"),
        ({"max_body_mb": "big"}, "configuration field serve.max_body_mb must be a number, got 'big'"),
        ({"allowed_prefixes": "s3://a"}, "configuration field serve.allowed_prefixes must be a list"),
        ({"modle": "x"}, "unknown configuration field 'serve.modle'; did you mean 'serve.model'?"),
        ([1], "configuration field serve must be a mapping, got [1]"),
    ],
)
def test_a_section_validated_alone_names_its_fields_as_in_a_file(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(ServeSection, data)
    assert str(err.value).startswith(message), str(err.value)


def test_renamed_sections_still_import_with_a_deprecation_warning() -> None:
    import resseg_ray.config as config

    with pytest.warns(DeprecationWarning, match="DataConfig is now DataSection"):
        assert config.DataConfig is config.DataSection  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        config.NoSuchSection  # type: ignore[attr-defined]  # noqa: B018


def test_every_public_name_resolves_and_flags_are_named_once() -> None:
    import resseg_ray.config as config
    from resseg_ray.config import RunSection
    from resseg_ray.config.flags import flag_of

    assert all(getattr(config, name) is not None for name in config.__all__)
    assert (StacSection.flag("bbox"), StacSection.flag("asset")) == ("--bbox", "--stac-asset")
    assert PredictSection.flag("vector_format") == "--vector-format"
    assert PredictSection.flag("prob") == "--no-prob"
    assert RunSection.flag("seed") == "--seed" and RunSection.flag("name") is None
    with pytest.raises(ValueError, match=r"RunSection\.name has no command-line flag"):
        flag_of(RunSection, "name")
