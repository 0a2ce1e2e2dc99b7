"""The training step's options for refinements (a frozen encoder, the L2-SP penalty) and its
batches read in the worker for small epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resseg_ray.config import load_config
from resseg_ray.data.pipeline import loader_dataset, sample_spec, split_rows, stream_rows
from resseg_ray.data.prepare import load_dataset
from resseg_ray.device import DevicePolicy
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.models.registry import build_model
from resseg_ray.train.loop import L2SP, freeze_modules, local_torch_batches, torch_batches, train_epoch
from tests.helpers import SMALL_DATA, randomize_batchnorm

pytestmark = pytest.mark.usefixtures("ray_session")


def _items(n: int = 8) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"image": (3 + 2 * rng.standard_normal((3, 64, 64))).astype(np.float32),
         "label": rng.integers(0, 2, (64, 64)).astype(np.int64)}
        for _ in range(n)
    ]  # fmt: skip


def _epoch(model, lr: float, **kw) -> dict:
    import ray

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    policy = DevicePolicy.resolve("cpu")
    batches = torch_batches(ray.data.from_items(_items()), 4, policy, drop_last=True)
    return train_epoch(model, batches, optimizer, policy.grad_scaler(), policy, **kw)


@pytest.mark.parametrize("arch", ["prop18", "unet19"])
def test_a_frozen_encoder_keeps_its_weights_and_statistics(arch: str) -> None:
    """train.freeze_encoder: after an epoch, every encoder tensor (weights and BatchNorm running
    statistics) is as it was, in inference mode; the decoder's weights have moved."""

    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(arch, in_bands=3))
    frozen = freeze_modules(model.encoder_modules())
    enc_names = {n for m in frozen for n, _ in m.named_parameters()}
    assert enc_names
    enc_before = [{k: v.clone() for k, v in m.state_dict().items()} for m in frozen]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = _epoch(model, 0.01, frozen=frozen)
    assert out["batches"] == 2
    assert all(not m.training for m in frozen)
    for m, was in zip(frozen, enc_before, strict=True):  # weights and running statistics
        assert was and all(torch.equal(v, m.state_dict()[k]) for k, v in was.items())
    decoder = [
        k for k in model.state_dict() if k.startswith(("decoder", "dec.", "up.")) and k.endswith(".weight")
    ]
    assert decoder and any(not torch.equal(before[k], model.state_dict()[k]) for k in decoder)


def test_l2sp_pulls_the_weights_toward_the_start() -> None:
    """The penalty is alpha/2 * ||w - w0||^2 (0 at the start); a strong pull keeps an epoch's
    weights nearer the start than no pull does, with the same data and seed."""
    distances = {}
    for alpha in (0.0, 50.0):
        torch.manual_seed(0)
        model = build_model("prop18", in_bands=3)
        params = list(model.parameters())
        anchor = [p.detach().clone() for p in params]
        pull = L2SP(params, anchor, alpha) if alpha else None
        if pull is not None:
            assert float(pull()) == 0.0
            with torch.no_grad():
                params[0].add_(1.0)
            expected = 0.5 * alpha * params[0].numel()
            assert float(pull()) == pytest.approx(expected, rel=1e-5)
            with torch.no_grad():
                params[0].sub_(1.0)
        _epoch(model, 0.05, pull=pull)
        distances[alpha] = float(sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True)))
    assert 0 < distances[50.0] < 0.5 * distances[0.0], distances


def test_a_small_epoch_read_in_the_worker_gives_the_loader_datasets_batches(small_demo) -> None:
    """data.local_loader_tiles: a worker's epoch read in its own process (no Ray Data executor)
    is the same augmented samples, in the same order and batches, as the Ray Data loader of
    the same rows gives as torch batches: a run is the same either way."""
    local = StorageSettings()
    desc = load_dataset(small_demo.root, local)
    rows = split_rows(desc, local, 0, {"train": 21})["train"]
    spec = sample_spec(desc, load_config(None, SMALL_DATA).data, local, augment=True, seed=3)
    share = stream_rows(rows, 3, [2], 1, 2, 4)  # worker 1 of 2 in epoch 2: 2 batches of 4
    policy = DevicePolicy.resolve("cpu")
    got = list(local_torch_batches(share, spec, 4, policy))
    want = list(torch_batches(loader_dataset(share, spec, 3, 0.5), 4, policy, drop_last=True))
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert g["image"].dtype == w["image"].dtype == torch.float32 and g["label"].dtype == torch.int64
        assert torch.equal(g["image"], w["image"]) and torch.equal(g["label"], w["label"])
