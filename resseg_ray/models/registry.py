"""Architecture registry: ``build_model("prop152", in_bands=4, num_classes=2)``."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from resseg_ray.errors import ConfigError
from resseg_ray.models.base import ModelSpec, SegmentationNet
from resseg_ray.models.resnet import RESNET_UNITS
from resseg_ray.models.resseg import ResSegNet
from resseg_ray.models.siamese import SiameseResSegNet
from resseg_ray.models.unet import UNet


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: how to build it and which options it accepts."""

    name: str
    description: str
    factory: Callable[..., SegmentationNet]
    options: Mapping[str, Any]  # option name -> default
    task: str = "buildings"
    """What it maps: ``buildings`` (one image in, ground/building out) or ``damage`` (a pre
    and a post image in, background and four damage classes out)."""


def _prop(depth: int) -> Architecture:
    block = "basic" if depth <= 34 else "bottleneck"
    return Architecture(
        name=f"prop{depth}",
        description=f"residual encoder ResNet-{depth} ({block} units {list(RESNET_UNITS[depth])}) "
        "+ deconvolutional decoder (paper)",
        factory=lambda spec, pool_kernel: ResSegNet(spec, depth, pool_kernel=pool_kernel),
        options={"pool_kernel": 2},
    )


def _damage(depth: int) -> Architecture:
    return Architecture(
        name=f"damage-prop{depth}",
        description=f"Siamese damage network: one ResNet-{depth} encoder over the pre and post images, "
        "features fused per level, the paper's decoder (background + 4 damage classes)",
        factory=lambda spec, pool_kernel: SiameseResSegNet(spec, depth, pool_kernel=pool_kernel),
        options={"pool_kernel": 2},
        task="damage",
    )


_REGISTRY: dict[str, Architecture] = {a.name: a for a in (_prop(d) for d in sorted(RESNET_UNITS))}
_REGISTRY["unet19"] = Architecture(
    "unet19",
    "U-Net baseline, 19 conv layers (2 per stage)",
    lambda spec: UNet(spec, (2,) * 9),
    {},
)
_REGISTRY["unet35"] = Architecture(
    "unet35",
    "U-Net baseline, 35 conv layers (4 per encoder/decoder stage, 2 in the bottleneck)",
    lambda spec: UNet(spec, (4, 4, 4, 4, 2, 4, 4, 4, 4)),
    {},
)

_REGISTRY.update({a.name: a for a in (_damage(d) for d in sorted(RESNET_UNITS))})


def list_models(task: str | None = None) -> list[str]:
    """Names accepted by :func:`build_model`: all, or those of one ``task`` (``buildings``,
    ``damage``)."""
    return [name for name, arch in _REGISTRY.items() if task is None or arch.task == task]


def describe_models() -> dict[str, str]:
    """Name -> one-line description of every registered architecture."""
    return {name: arch.description for name, arch in _REGISTRY.items()}


def model_task(name: str) -> str:
    """The task of a registered architecture (``buildings`` or ``damage``)."""
    return _REGISTRY[name].task


def _check_int(field: str, value: Any, minimum: int, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{field}={value!r} is invalid: {hint}")
    return value


def build_model(name: str, in_bands: int = 4, num_classes: int = 2, **options: Any) -> SegmentationNet:
    """Build a registered network with fresh weights.

    ``options`` are architecture options (``pool_kernel`` for prop models: 2 as the
    paper, 3 as torchvision).
    """
    arch = _REGISTRY.get(name)
    if arch is None:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown architecture {name!r}{hint}; choose one of {', '.join(_REGISTRY)}")
    _check_int("in_bands", in_bands, 1, "the number of input bands must be an integer >= 1")
    _check_int("num_classes", num_classes, 2, "need at least 2 classes (e.g. 2 for ground/building)")
    unknown = sorted(set(options) - set(arch.options))
    if unknown:
        raise ConfigError(
            f"{name} has no option(s) {unknown}; its options are {sorted(arch.options) or 'none'}"
        )
    resolved = {**arch.options, **options}
    spec = ModelSpec(name=name, in_bands=in_bands, num_classes=num_classes, options=resolved)
    return arch.factory(spec, **resolved)


def build_from_spec(spec: Mapping[str, Any]) -> SegmentationNet:
    """Rebuild a network from :meth:`ModelSpec.to_dict` output (e.g. a bundle's metadata)."""
    try:
        return build_model(
            spec["name"], spec["in_bands"], spec["num_classes"], **dict(spec.get("options", {}))
        )
    except KeyError as exc:
        raise ConfigError(f"model spec {dict(spec)!r} lacks the field {exc.args[0]!r}") from exc
