"""Networks of the paper (residual encoder-decoders), U-Net baselines, registry, bundles."""

from resseg_ray.models.base import ModelSpec, SegmentationNet
from resseg_ray.models.bundle import (
    BUNDLE_SUFFIX,
    BundleInfo,
    ModelBundle,
    load_bundle,
    read_bundle_info,
    save_bundle,
)
from resseg_ray.models.registry import build_from_spec, build_model, describe_models, list_models
from resseg_ray.models.resnet import adapt_first_conv, load_pretrained_encoder

__all__ = [
    "BUNDLE_SUFFIX",
    "BundleInfo",
    "ModelBundle",
    "ModelSpec",
    "SegmentationNet",
    "adapt_first_conv",
    "build_from_spec",
    "build_model",
    "describe_models",
    "list_models",
    "load_bundle",
    "load_pretrained_encoder",
    "read_bundle_info",
    "save_bundle",
]
