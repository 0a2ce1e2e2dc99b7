"""Label-free adaptation: BatchNorm re-estimation changes only the running statistics, and
they become the statistics of the target scene's activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resseg_ray.config import PredictSection
from resseg_ray.device import DevicePolicy
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.batchnorm import (
    adapt_to_scene,
    batchnorm_layers,
    reestimate_batchnorm,
    scene_windows,
    window_batches,
)
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models import build_model
from resseg_ray.models.bundle import BundleInfo, ModelBundle
from tests.helpers import randomize_batchnorm
from tests.rasters import write_tif

RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def _scene(tmp_path, gain: float = 1.0):
    rng = np.random.default_rng(0)
    data = (rng.normal(300, 60, size=(2, 300, 200)) * gain).clip(1, 60000).astype(np.uint16)
    data[:, :40, :] = 0  # no data
    return write_tif(tmp_path / f"s{gain}.tif", data, nodata=0)


def test_only_running_statistics_change_and_equal_the_scene_activations(tmp_path) -> None:
    model = randomize_batchnorm(build_model("prop18", in_bands=2)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scene = open_scene(_scene(tmp_path, gain=3.0), StorageSettings())
    norm = (np.full((2, 1, 1), 300, np.float32), np.full((2, 1, 1), 1 / 60, np.float32))
    adapted = adapt_to_scene(model, scene, StorageSettings(), norm, size=64, max_windows=6, batch_size=3)
    after = adapted.state_dict()
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), f"original changed: {k}"
        if k.rsplit(".", 1)[-1] in RUNNING:
            continue
        assert torch.equal(after[k], v), f"{k} changed"
    changed = [k for k in before if k.endswith("running_mean") and not torch.equal(after[k], before[k])]
    assert len(changed) == len(batchnorm_layers(model))
    assert not adapted.training and all(not m.training for m in batchnorm_layers(adapted))

    # bn1's running stats are the mean/variance of its input (conv1's output, which the
    # adaptation does not change) over the chosen windows (equal batch sizes)
    windows = scene_windows(scene, StorageSettings(), size=64, max_windows=6)
    assert len(windows) == 6 and all(r >= 40 for _, r in windows)  # rows 0-39 have no data
    with torch.no_grad():
        feats = [
            model.encoder.conv1(x) for x in window_batches(scene, StorageSettings(), norm, windows, 64, 3)
        ]
    x = torch.cat(feats)
    torch.testing.assert_close(adapted.encoder.bn1.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(adapted.encoder.bn1.running_var, x.var(dim=(0, 2, 3)), rtol=0.05, atol=1e-4)


def test_no_batches_leave_the_model_unchanged() -> None:
    model = randomize_batchnorm(build_model("prop18", in_bands=2)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert reestimate_batchnorm(model, []) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_predictor_adapts_to_each_scene(tmp_path) -> None:
    model = randomize_batchnorm(build_model("prop18", in_bands=2)).eval()
    info = BundleInfo(
        model={"name": "prop18", "in_bands": 2, "num_classes": 2},
        band_names=["a", "b"],
        class_names=["ground", "building"],
        norm_mean=[300.0, 300.0],
        norm_std=[60.0, 60.0],
        tile_size=64,
        package_versions={},
        created="",
    )
    bundle = ModelBundle(model=model, info=info)
    s = StorageSettings()
    plain = ScenePredictor(bundle, PredictSection(window=64, overlap=16, device="cpu"))
    adapted = ScenePredictor(bundle, PredictSection(window=64, overlap=16, adapt_bn=True, device="cpu"))
    scene = open_scene(_scene(tmp_path, gain=3.0), s)
    with pytest.warns(UserWarning, match="far from the model's training statistics"):
        p0 = np.concatenate([x.probs for x in plain.strips(scene, s)], axis=1)
    with pytest.warns(UserWarning):
        p1 = np.concatenate([x.probs for x in adapted.strips(scene, s)], axis=1)
        p2 = np.concatenate([x.probs for x in adapted.strips(scene, s)], axis=1)
    assert not np.allclose(p0, p1, atol=1e-3)
    assert np.array_equal(p1, p2)  # deterministic: the same windows every time


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("freeze", [True, False])
def test_training_epoch_with_frozen_batchnorm_keeps_running_statistics(freeze: bool) -> None:
    """train.freeze_bn: an epoch of the training loop trains the BatchNorm scales and shifts but
    leaves the running statistics as they were; without it they move towards the batches'."""
    import ray

    from resseg_ray.train.loop import torch_batches, train_epoch

    torch.manual_seed(0)
    model = build_model("prop18", in_bands=3)
    randomize_batchnorm(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    items = [
        {"image": (3 + 2 * rng.standard_normal((3, 64, 64))).astype(np.float32),
         "label": rng.integers(0, 2, (64, 64)).astype(np.int64)}
        for _ in range(8)
    ]  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    policy = DevicePolicy.resolve("cpu")
    batches = torch_batches(ray.data.from_items(items), 4, policy, drop_last=True)
    out = train_epoch(model, batches, optimizer, policy.grad_scaler(), policy, freeze_bn=freeze)
    assert out["batches"] == 2
    after = model.state_dict()
    bns = batchnorm_layers(model)
    assert all(layer.training != freeze for layer in bns)  # BatchNorms left in the mode trained in
    running = [k for k in after if k.endswith(RUNNING[:2])]
    affine = [k for k in after if k.rsplit(".", 1)[0] + ".running_mean" in after and k.endswith(".weight")]
    assert running and affine
    moved = [k for k in running if not torch.equal(before[k], after[k])]
    assert (moved == []) if freeze else (len(moved) == len(running))
    # scales trained either way (layer4 of a random network on 64 px inputs may be all
    # switched off by its ReLUs in inference-mode BatchNorm, so its scales get no gradient)
    shallow = [k for k in affine if k.startswith(("encoder.bn1", "encoder.layer1", "decoder"))]
    unchanged = [k for k in shallow if torch.equal(before[k], after[k])]
    assert shallow and not unchanged, unchanged
