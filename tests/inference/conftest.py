"""Fixtures of the inference tests: a 2-band prop18 bundle."""

from __future__ import annotations

import pytest

from resseg_ray.models import build_model
from resseg_ray.models.bundle import save_bundle


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "m.resseg.safetensors"
    save_bundle(path, build_model("prop18", in_bands=2), norm_mean=[100, 100], norm_std=[50, 50])
    return str(path)
