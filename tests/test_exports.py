"""Every package's public names (``__all__``) resolve to real objects of its modules."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import resseg_ray

PACKAGES = [m.name for m in pkgutil.iter_modules(resseg_ray.__path__, "resseg_ray.") if m.ispkg]


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_resolve(package: str) -> None:
    pkg = importlib.import_module(package)
    assert pkg.__all__, package
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError):
        pkg.no_such_name  # noqa: B018
