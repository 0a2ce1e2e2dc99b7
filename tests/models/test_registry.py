"""Registry: names, listing, and clear errors for bad arguments."""

from __future__ import annotations

import pytest

from resseg_ray.errors import ConfigError, ResSegError
from resseg_ray.models import build_from_spec, build_model, describe_models, list_models


def test_lists_every_paper_architecture() -> None:
    assert list_models("buildings") == [
        "prop18",
        "prop34",
        "prop50",
        "prop101",
        "prop152",
        "prop200",
        "unet19",
        "unet35",
    ]
    assert set(describe_models()) == set(list_models())
    depths = (18, 34, 50, 101, 152, 200)
    assert list_models("damage") == [f"damage-prop{d}" for d in depths]  # any depth of Table I
    assert list_models() == list_models("buildings") + list_models("damage")


def test_spec_round_trip() -> None:
    model = build_model("prop34", in_bands=5, num_classes=3, pool_kernel=3)
    spec = model.spec.to_dict()
    assert spec == {"name": "prop34", "in_bands": 5, "num_classes": 3, "options": {"pool_kernel": 3}}
    again = build_from_spec(spec)
    assert again.spec == model.spec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "prop19"}, r"unknown architecture 'prop19' \(did you mean 'prop18'\?\)"),
        ({"name": "resnet"}, "choose one of prop18"),
        ({"name": "prop18", "in_bands": 0}, "in_bands=0"),
        ({"name": "prop18", "in_bands": 2.5}, "in_bands=2.5"),
        ({"name": "prop18", "num_classes": 1}, "num_classes=1 .*at least 2 classes"),
        ({"name": "unet19", "pool_kernel": 3}, "unet19 has no option"),
        ({"name": "prop18", "pool_kernel": 5}, "pool_kernel=5"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_model(**kwargs)
    assert isinstance(info.value, ResSegError)


def test_spec_missing_field() -> None:
    with pytest.raises(ConfigError, match="in_bands"):
        build_from_spec({"name": "prop18", "num_classes": 2})
