"""Model bundle: one safetensors file with the weights and everything needed to use them.

The file is a standard safetensors file (no pickle: loading never executes code).
Its header metadata holds one JSON document under the key ``resseg_bundle``:
architecture spec (registry name, bands, classes, options), band and class names,
normalisation mean/std, training tile size, package versions, creation time and a
free-form ``extra`` dict (training run, data hash, ...). Every stage that saves or
loads a model does so through :func:`save_bundle` / :func:`load_bundle`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from resseg_ray.errors import BundleError, ConfigError
from resseg_ray.geo.storage import StorageSettings, write_bytes
from resseg_ray.models.base import SegmentationNet
from resseg_ray.models.registry import build_from_spec

BUNDLE_FORMAT = "resseg-bundle"
BUNDLE_VERSION = 1
_META_KEY = "resseg_bundle"
#: Conventional file suffix of bundles.
BUNDLE_SUFFIX = ".resseg.safetensors"


@dataclass(frozen=True)
class BundleInfo:
    """Metadata stored with the weights."""

    model: dict[str, Any]
    band_names: list[str]
    class_names: list[str]
    norm_mean: list[float]
    norm_std: list[float]
    tile_size: int
    package_versions: dict[str, str]
    created: str
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = BUNDLE_FORMAT
    format_version: int = BUNDLE_VERSION

    @property
    def architecture(self) -> str:
        """Registry name of the network, e.g. ``prop152``."""
        return str(self.model["name"])

    @property
    def in_bands(self) -> int:
        """Number of input bands the network expects."""
        return int(self.model["in_bands"])

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return int(self.model["num_classes"])


@dataclass
class ModelBundle:
    """A loaded bundle: the network (in eval mode, on CPU) and its metadata."""

    model: SegmentationNet
    info: BundleInfo


def package_versions() -> dict[str, str]:
    """Versions recorded in every bundle."""
    import numpy
    import safetensors

    import resseg_ray

    return {
        "resseg_ray": resseg_ray.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _check_list(name: str, values: Sequence[Any], n: int, what: str) -> None:
    if len(values) != n:
        raise BundleError(f"{name} has {len(values)} entries but the model has {n} {what}")


def save_bundle(
    path: str | os.PathLike[str],
    model: SegmentationNet,
    *,
    norm_mean: Sequence[float],
    norm_std: Sequence[float],
    band_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    tile_size: int = 256,
    extra: Mapping[str, Any] | None = None,
) -> BundleInfo:
    """Write ``model`` and its metadata to ``path`` atomically (temp file + rename)."""
    data, info = encode_bundle(
        model,
        norm_mean=norm_mean,
        norm_std=norm_std,
        band_names=band_names,
        class_names=class_names,
        tile_size=tile_size,
        extra=extra,
    )
    write_bytes(os.fspath(path), data, StorageSettings())
    return info


def encode_bundle(
    model: SegmentationNet,
    *,
    norm_mean: Sequence[float],
    norm_std: Sequence[float],
    band_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    tile_size: int = 256,
    extra: Mapping[str, Any] | None = None,
) -> tuple[bytes, BundleInfo]:
    """The bundle file's bytes of ``model`` and its metadata (see :func:`save_bundle`)."""
    if getattr(model, "bn_folded", False):
        raise BundleError("this model has its BatchNorm folded for inference; save the original model")
    spec = model.spec
    bands = list(band_names) if band_names is not None else [f"band{i + 1}" for i in range(spec.in_bands)]
    classes = (
        list(class_names)
        if class_names is not None
        else (
            ["ground", "building"]
            if spec.num_classes == 2
            else [f"class{i}" for i in range(spec.num_classes)]
        )
    )
    _check_list("band_names", bands, spec.in_bands, "input bands")
    _check_list("class_names", classes, spec.num_classes, "classes")
    _check_list("norm_mean", list(norm_mean), spec.in_bands, "input bands")
    _check_list("norm_std", list(norm_std), spec.in_bands, "input bands")
    std = [float(s) for s in norm_std]
    if any(not math.isfinite(s) or s <= 0 for s in std):
        raise BundleError(f"norm_std={std} must be finite and > 0 for every band")
    info = BundleInfo(
        model=spec.to_dict(),
        band_names=[str(b) for b in bands],
        class_names=[str(c) for c in classes],
        norm_mean=[float(m) for m in norm_mean],
        norm_std=std,
        tile_size=int(tile_size),
        package_versions=package_versions(),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        extra=dict(extra or {}),
    )
    return encode_weights(model.state_dict(), info), info


def encode_weights(state: Mapping[str, torch.Tensor], info: BundleInfo) -> bytes:
    """The bundle file's bytes of a network's weights ``state`` (its state dict) described by
    ``info``: what :func:`encode_bundle` writes, also used to rebuild a bundle whose weights a
    checkpoint holds once (:mod:`resseg_ray.train.state`)."""
    try:
        meta = json.dumps(asdict(info), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"bundle metadata is not plain JSON ({exc}); check the 'extra' fields") from exc
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    from safetensors.torch import save

    return save(tensors, metadata={_META_KEY: meta})


def bundle_info_from_dict(raw: Mapping[str, Any], name: str = "<bundle metadata>") -> BundleInfo:
    """The metadata ``asdict(info)`` gave back as a checked :class:`BundleInfo`."""
    try:
        info = BundleInfo(**raw)
    except TypeError as exc:
        raise BundleError(f"model bundle {name!r} has unexpected metadata fields ({exc})") from exc
    check_info(info, name)
    return info


def _parse_header(path: str, data: bytes) -> dict[str, Any]:
    damaged = f"model bundle {path!r} is damaged or not a resseg-ray bundle"
    if len(data) < 8:
        raise BundleError(f"{damaged} (only {len(data)} bytes); re-export or copy it again")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise BundleError(
            f"{damaged}: its header says {n} bytes but the file has {len(data) - 8} after the "
            "length field (truncated?); re-export or copy it again"
        )
    try:
        header = json.loads(data[8 : 8 + n])
        meta = header.get("__metadata__", {})
        raw = meta[_META_KEY]
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise BundleError(
            f"{damaged}: no resseg-ray metadata in the safetensors header; "
            "save models with resseg_ray.models.save_bundle"
        ) from exc
    try:
        info = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{damaged}: its metadata is not valid JSON") from exc
    if not isinstance(info, dict):
        kind = "text" if isinstance(raw, str) and info is None else type(info).__name__
        raise BundleError(f"{damaged}: its metadata is a JSON {kind}, not an object of fields")
    if info.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{damaged}: format {info.get('format')!r} is not {BUNDLE_FORMAT!r}")
    version = info.get("format_version", 0)
    if not _is_int(version) or version < 0:
        raise BundleError(f"{damaged}: its format_version {version!r} is not a version number")
    if version > BUNDLE_VERSION:
        raise BundleError(
            f"model bundle {path!r} has format version {info.get('format_version')}, newer than "
            f"this resseg-ray understands ({BUNDLE_VERSION}); upgrade resseg-ray"
        )
    return info


def _read(path: str, header_only: bool) -> tuple[bytes, BundleInfo]:
    """The file's bytes (only the header when ``header_only``) and its parsed metadata."""
    try:
        with open(path, "rb") as f:
            if header_only:
                head = f.read(8)
                n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
                data = head + f.read(min(n, 100_000_000))
            else:
                data = f.read()
    except FileNotFoundError as exc:
        raise BundleError(f"model bundle {path!r} does not exist") from exc
    return data, _info(path, data)


def _info(path: str, data: bytes) -> BundleInfo:
    return bundle_info_from_dict(_parse_header(path, data), path)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v: object) -> bool:
    return isinstance(v, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v
    )


def check_info(info: BundleInfo, path: str = "<bundle>") -> None:
    """The one schema of a bundle's metadata, checked at every load whatever wrote the file:
    field types, a known architecture, band/class lists agreeing with the network's band and
    class counts, finite normalisation with a std > 0."""
    from resseg_ray.models.registry import list_models

    def bad(what: str) -> BundleError:
        return BundleError(
            f"model bundle {path!r}: {what}; the file was not written by resseg-ray or was edited "
            "(re-export it with jobs/export_model.py or train it again)"
        )

    m = info.model
    if not isinstance(m, dict) or not isinstance(m.get("name"), str):
        raise bad("its metadata has no architecture name (model.name)")
    if m["name"] not in list_models():
        raise bad(f"architecture {m['name']!r} is not one of {', '.join(list_models())}")
    if not _is_int(m.get("in_bands")) or not 1 <= m["in_bands"] <= 256:
        raise bad(f"model.in_bands {m.get('in_bands')!r} is not a band count from 1 to 256")
    if not _is_int(m.get("num_classes")) or not 2 <= m["num_classes"] <= 256:
        raise bad(f"model.num_classes {m.get('num_classes')!r} is not a class count from 2 to 256")
    n, c = m["in_bands"], m["num_classes"]
    for name, values, count in (("band_names", info.band_names, n), ("class_names", info.class_names, c)):
        names_ok = isinstance(values, list) and all(isinstance(v, str) for v in values)
        if not names_ok or len(values) != count:
            raise bad(f"{name} {values!r} is not a list of {count} names")
    for name, numbers in (("norm_mean", info.norm_mean), ("norm_std", info.norm_std)):
        if not _numbers(numbers) or len(numbers) != n:
            raise bad(f"{name} {numbers!r} is not a list of {n} finite numbers (one per band)")
    if any(s <= 0 for s in info.norm_std):
        raise bad(f"norm_std {info.norm_std} has a value <= 0 (each band's std must be > 0)")
    if not _is_int(info.tile_size) or info.tile_size < 1:
        raise bad(f"tile_size {info.tile_size!r} is not a positive integer")
    if not isinstance(info.extra, dict) or not isinstance(info.package_versions, dict):
        raise bad("extra and package_versions must be mappings")


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read only the metadata of a bundle (cheap: the header)."""
    return _read(os.fspath(path), header_only=True)[1]


def bundle_info_from_bytes(data: bytes, name: str = "<bundle bytes>") -> BundleInfo:
    """The metadata of a bundle held in memory (``name`` says where it came from in errors)."""
    return _info(name, data)


def load_bundle(
    path: str | os.PathLike[str],
    *,
    expect_architecture: str | None = None,
    expect_in_bands: int | None = None,
    expect_num_classes: int | None = None,
) -> ModelBundle:
    """Load a bundle into a freshly built network (eval mode, CPU).

    The ``expect_*`` arguments turn a bundle of another architecture, band count or
    class count into a clear :class:`BundleError` instead of a silent mismatch.
    """
    path = os.fspath(path)
    data, _ = _read(path, header_only=False)
    return load_bundle_bytes(
        data,
        path,
        expect_architecture=expect_architecture,
        expect_in_bands=expect_in_bands,
        expect_num_classes=expect_num_classes,
    )


def load_bundle_bytes(
    data: bytes,
    name: str = "<bundle bytes>",
    *,
    expect_architecture: str | None = None,
    expect_in_bands: int | None = None,
    expect_num_classes: int | None = None,
) -> ModelBundle:
    """:func:`load_bundle` of a bundle held in memory (e.g. sent to Ray actors as bytes);
    ``name`` says where it came from in errors."""
    path = name
    info = _info(path, data)
    wanted = {
        "architecture": (expect_architecture, info.architecture),
        "in_bands": (expect_in_bands, info.in_bands),
        "num_classes": (expect_num_classes, info.num_classes),
    }
    for name, (want, have) in wanted.items():
        if want is not None and want != have:
            raise BundleError(
                f"model bundle {path!r} holds {info.architecture} with {info.in_bands} bands and "
                f"{info.num_classes} classes, but {name}={want!r} was expected; "
                "pick a bundle trained for this configuration"
            )
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise BundleError(f"model bundle {path!r} is damaged ({exc}); re-export or copy it again") from exc
    try:
        model = build_from_spec(info.model)
    except (ConfigError, TypeError, ValueError) as exc:  # an option the architecture does not take
        raise BundleError(
            f"model bundle {path!r}: its architecture {info.architecture} cannot be built from its "
            f"metadata ({exc}); re-export it with jobs/export_model.py or train it again"
        ) from None
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise BundleError(
            f"model bundle {path!r}: its weights do not fit the {info.architecture} "
            f"({info.in_bands} bands) its metadata names: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} of another shape (e.g. {wrong[:3]})"
        )
    broken = sorted(k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if broken:
        raise BundleError(
            f"model bundle {path!r}: {len(broken)} weight tensors hold NaN or infinite values (e.g. "
            f"{broken[:3]}): it would map nothing; use a checkpoint from before training diverged"
        )
    model.load_state_dict(tensors)
    model.eval()
    return ModelBundle(model=model, info=info)
