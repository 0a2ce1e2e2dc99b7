"""The Siamese damage network: a pre and a post image through one encoder, any window size in
and out, every weight trained; started from a building network it maps buildings as that
network does on the post image; it folds, saves and loads like every network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resseg_ray.errors import ConfigError
from resseg_ray.models import build_model, load_bundle, save_bundle
from resseg_ray.models.fuse import fold_batchnorm
from resseg_ray.models.siamese import SiameseResSegNet, init_from_buildings
from tests.helpers import randomize_batchnorm

DAMAGE_CLASSES = 5  # background, no-damage, minor, major, destroyed


def test_a_pair_of_any_size_in_one_damage_map_out_and_every_weight_trains() -> None:
    model = build_model("damage-prop18", in_bands=8, num_classes=DAMAGE_CLASSES).train()
    assert isinstance(model, SiameseResSegNet) and model.image_bands == 4
    x = torch.randn(2, 8, 100, 70)  # not a multiple of 32: padded and cropped back
    logits = model(x)
    assert logits.shape == (2, DAMAGE_CLASSES, 100, 70)
    nn.functional.cross_entropy(logits, torch.randint(0, DAMAGE_CLASSES, (2, 100, 70))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # one encoder for both images: as many encoder weights as the building network's
    building = build_model("prop18", in_bands=4)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.encoder) == count(building.encoder)
    model.eval()
    with torch.no_grad():  # the order matters: pre then post
        swapped = torch.cat([x[:, 4:], x[:, :4]], dim=1)
        assert not torch.allclose(model(x), model(swapped))


def test_odd_band_counts_are_refused() -> None:
    with pytest.raises(ConfigError, match="in_bands must be even"):
        build_model("damage-prop18", in_bands=5, num_classes=DAMAGE_CLASSES)


def test_started_from_a_building_network_it_maps_buildings_as_that_network_does() -> None:
    torch.manual_seed(0)
    building = randomize_batchnorm(build_model("prop18", in_bands=4)).eval().double()
    damage = build_model("damage-prop18", in_bands=8, num_classes=DAMAGE_CLASSES).double()
    init_from_buildings(damage, building)
    damage.eval()
    pre, post = torch.randn(2, 4, 64, 96, dtype=torch.float64), torch.randn(2, 4, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        b = building(post)
        d = damage(torch.cat([pre, post], dim=1))
        other = damage(torch.cat([torch.randn_like(pre), post], dim=1))
    # P(background) is the building network's on the post image, whatever the pre image
    torch.testing.assert_close(d.softmax(1)[:, 0], b.softmax(1)[:, 0], rtol=0, atol=1e-9)
    torch.testing.assert_close(d, other, rtol=0, atol=1e-9)
    torch.testing.assert_close(d[:, 1:].logsumexp(1), b[:, 1], rtol=0, atol=1e-9)
    with pytest.raises(ConfigError, match="cannot start damage-prop18"):
        init_from_buildings(damage, build_model("prop34", in_bands=4))
    with pytest.raises(ConfigError, match="starts from a building network"):
        init_from_buildings(damage, build_model("unet19", in_bands=4))  # type: ignore[arg-type]


def test_it_folds_saves_and_loads_like_every_network(tmp_path) -> None:
    model = randomize_batchnorm(build_model("damage-prop50", in_bands=6, num_classes=DAMAGE_CLASSES)).eval()
    model = model.double()
    x = torch.randn(1, 6, 40, 72, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fold_batchnorm(model)(x), expected, rtol=1e-9, atol=1e-9)
    path = tmp_path / "damage.resseg.safetensors"
    bands = [f"{when}:{b}" for when in ("pre", "post") for b in ("red", "green", "blue")]
    classes = ["background", "no-damage", "minor-damage", "major-damage", "destroyed"]
    save_bundle(
        path, model.float(), norm_mean=[0.0] * 6, norm_std=[1.0] * 6, band_names=bands, class_names=classes
    )
    loaded = load_bundle(path)
    assert loaded.info.architecture == "damage-prop50" and loaded.info.band_names == bands
    assert loaded.info.class_names == classes
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x.float()), expected.float(), rtol=1e-4, atol=1e-4)
