"""Model bundle: round trip, metadata, safe loading and clear errors on bad files."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from resseg_ray.errors import BundleError
from resseg_ray.models import build_model, load_bundle, read_bundle_info, save_bundle
from resseg_ray.models.fuse import fold_batchnorm
from tests.helpers import randomize_batchnorm

BANDS = ["blue", "green", "red", "nir"]
MEAN = [410.0, 520.5, 630.25, 2100.0]
STD = [95.0, 120.0, 150.5, 480.0]


def _save(path, name: str = "prop18", bands: int = 4, **kwargs):
    model = randomize_batchnorm(build_model(name, in_bands=bands)).eval()
    kwargs.setdefault("norm_mean", MEAN[:bands])
    kwargs.setdefault("norm_std", STD[:bands])
    kwargs.setdefault("band_names", BANDS[:bands])
    info = save_bundle(path, model, tile_size=256, extra={"run_id": "abc"}, **kwargs)
    return model, info


@pytest.mark.parametrize("name", ["prop18", "prop50", "unet19"])
def test_round_trip_identical_outputs(tmp_path, name: str) -> None:
    path = tmp_path / "m.resseg.safetensors"
    model, _ = _save(path, name)
    bundle = load_bundle(path, expect_architecture=name, expect_in_bands=4)
    assert not bundle.model.training
    x = torch.randn(2, 4, 45, 70)
    with torch.no_grad():
        assert torch.equal(bundle.model(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value)


def test_metadata(tmp_path) -> None:
    path = tmp_path / "m.resseg.safetensors"
    _save(path)
    info = read_bundle_info(path)
    assert info.architecture == "prop18" and info.in_bands == 4 and info.num_classes == 2
    assert info.band_names == BANDS and info.class_names == ["ground", "building"]
    assert info.norm_mean == MEAN and info.norm_std == STD
    assert info.tile_size == 256 and info.extra == {"run_id": "abc"}
    assert {"resseg_ray", "torch", "python"} <= set(info.package_versions)
    assert info.model["options"] == {"pool_kernel": 2}
    assert load_bundle(path).info == info


def test_atomic_write_leaves_only_the_bundle(tmp_path) -> None:
    path = tmp_path / "sub" / "m.resseg.safetensors"
    _save(path)
    assert os.listdir(tmp_path / "sub") == ["m.resseg.safetensors"]


def test_no_pickle_in_file(tmp_path) -> None:
    path = tmp_path / "m.resseg.safetensors"
    _save(path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])  # plain JSON header, then raw tensor bytes
    assert "__metadata__" in header and b"\x80\x04\x95" not in data[: 8 + n]


@pytest.mark.parametrize("keep", [0, 5, 8, 100, 0.5, 0.999])
def test_truncated_bundle(tmp_path, keep) -> None:
    path = tmp_path / "m.resseg.safetensors"
    _save(path, "prop18", bands=2)
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    with pytest.raises(BundleError, match=r"m\.resseg\.safetensors.*(damaged|truncated)"):
        load_bundle(path)


def test_not_a_bundle(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(BundleError, match="no resseg-ray metadata"):
        load_bundle(path)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "missing.safetensors")


def test_other_architecture_or_band_count(tmp_path) -> None:
    path = tmp_path / "m.resseg.safetensors"
    _save(path, "prop18", bands=3)
    with pytest.raises(BundleError, match=r"holds prop18 with 3 bands.*architecture='prop34'"):
        load_bundle(path, expect_architecture="prop34")
    with pytest.raises(BundleError, match="in_bands=4"):
        load_bundle(path, expect_in_bands=4)
    with pytest.raises(BundleError, match="num_classes=3"):
        load_bundle(path, expect_num_classes=3)


def test_weights_that_do_not_fit_the_metadata(tmp_path) -> None:
    """A bundle whose header names another architecture than its weights."""
    path = tmp_path / "m.resseg.safetensors"
    _save(path, "prop18", bands=2)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["resseg_bundle"])
    meta["model"]["name"] = "prop34"
    header["__metadata__"]["resseg_bundle"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    with pytest.raises(BundleError, match="do not fit the prop34"):
        load_bundle(path)


def test_bad_metadata_is_refused_before_writing(tmp_path) -> None:
    path = tmp_path / "m.resseg.safetensors"
    with pytest.raises(BundleError, match="norm_std"):
        _save(path, norm_std=[1.0, 0.0, 1.0, 1.0])
    with pytest.raises(BundleError, match="band_names has 3 entries"):
        _save(path, band_names=["a", "b", "c"])
    model = build_model("prop18", in_bands=4)
    with pytest.raises(BundleError, match="folded"):
        save_bundle(path, fold_batchnorm(model), norm_mean=MEAN, norm_std=STD)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_overwrite_keeps_old_bundle_on_failure(tmp_path) -> None:
    path = tmp_path / "m.resseg.safetensors"
    _save(path)
    before = path.read_bytes()
    with pytest.raises(BundleError):
        save_bundle(path, build_model("prop18", in_bands=4), norm_mean=MEAN, norm_std=[1.0])
    assert path.read_bytes() == before
