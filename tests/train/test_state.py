"""Early stopping bookkeeping and checkpoint round trips (no Ray needed)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from resseg_ray.models import build_model, load_bundle, save_bundle
from resseg_ray.train.state import (
    BEST_FILES,
    INFO_SUFFIX,
    PROGRESS_FILE,
    STATE_FILE,
    Progress,
    best_bundles,
    read_checkpoint,
    read_progress,
    write_checkpoint,
)


def _m(epoch: int, loss: float, f1: float) -> dict[str, float]:
    return {"epoch": epoch, "val_loss": loss, "val_f1": f1}


def test_progress_tracks_bests_and_patience() -> None:
    p = Progress()
    assert p.update(_m(1, 0.5, 0.3), 0.0) == (True, True)
    assert p.update(_m(2, 0.4, 0.2), 0.0) == (True, False)
    assert p.bad_epochs == 0
    assert p.update(_m(3, 0.45, 0.5), 0.0) == (False, True)
    assert p.bad_epochs == 1
    # a decrease smaller than min_delta counts as no decrease, but still sets the best loss
    assert p.update(_m(4, 0.399, 0.1), 0.01) == (True, False)
    assert p.bad_epochs == 2
    assert (p.best_val_loss, p.best_val_loss_epoch) == (0.399, 4)
    assert (p.best_val_f1, p.best_val_f1_epoch) == (0.5, 3)
    again = Progress.from_json(p.to_json())
    assert again == p
    assert math.isinf(Progress.from_json(Progress().to_json()).best_val_loss)


def test_checkpoint_round_trip_restores_model_optimizer_scheduler(tmp_path) -> None:
    model = build_model("prop18", in_bands=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.2)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()
    sched.step()
    sched.step()
    best = tmp_path / "best"
    best.mkdir()
    (best / BEST_FILES["val_f1"]).write_bytes(b"bundle bytes")  # an earlier epoch's: copied
    # this epoch's best-loss bundle: recorded by its metadata, its weights being the model's
    save_bundle(best / BEST_FILES["val_loss"], model, norm_mean=[1, 2, 3], norm_std=[4, 5, 6],
                extra={"epoch": 2, "val_loss": 0.25})  # fmt: skip
    p = Progress(epochs_done=2, best_val_f1=0.7, history=[{"epoch": 1.0}])
    ckpt = tmp_path / "ckpt"
    write_checkpoint(str(ckpt), p, model, opt, sched, str(best), [BEST_FILES["val_loss"]])
    assert sorted(f.name for f in ckpt.iterdir()) == sorted(
        [STATE_FILE, PROGRESS_FILE, BEST_FILES["val_f1"], BEST_FILES["val_loss"] + INFO_SUFFIX]
    )

    torch.manual_seed(1)
    model2 = build_model("prop18", in_bands=3)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.2)
    best2 = tmp_path / "best2"
    got = read_checkpoint(str(tmp_path / "ckpt"), model2, opt2, sched2, str(best2))
    assert got == p == read_progress(str(tmp_path / "ckpt"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.1 * 0.2
    assert sched2.last_epoch == 2
    mom = next(iter(opt.state.values()))["momentum_buffer"]
    assert torch.equal(next(iter(opt2.state.values()))["momentum_buffer"], mom)
    assert (best2 / BEST_FILES["val_f1"]).read_bytes() == b"bundle bytes"
    # the rebuilt bundle is the one written at that epoch, byte for byte
    original = (best / BEST_FILES["val_loss"]).read_bytes()
    assert (best2 / BEST_FILES["val_loss"]).read_bytes() == original
    again = best_bundles(str(ckpt), str(tmp_path / "best3"))  # the weights read from state.pt
    assert Path(again[BEST_FILES["val_loss"]]).read_bytes() == original
    assert load_bundle(again[BEST_FILES["val_loss"]]).info.extra == {"epoch": 2, "val_loss": 0.25}


def _timed(epoch: int, loss: float, seconds: float) -> dict[str, float]:
    return {**_m(epoch, loss, 0.0), "epoch_seconds": seconds}


def test_stop_reasons_epochs_patience_and_time_budget() -> None:
    p = Progress()
    p.update(_timed(1, 0.5, 70.0), 0.0)
    p.check_stop(epochs=10, patience=3, budget_minutes=3.0)  # 70 s spent + 70 s next <= 180 s
    assert not p.finished
    p.update(_timed(2, 0.4, 50.0), 0.0)
    p.check_stop(epochs=10, patience=3, budget_minutes=3.0)  # 120 + 50 <= 180
    assert not p.finished
    p.update(_timed(3, 0.3, 61.0), 0.0)
    p.check_stop(epochs=10, patience=3, budget_minutes=3.0)  # 181 s spent: over
    assert p.finished and p.stop_reason.startswith("time budget: 3.0 of train.time_budget_minutes=3")
    assert p.training_seconds() == 181.0
    # a re-run with a larger budget or no budget goes on; with the same one it does not
    assert not p.may_go_on(10, 3.0)
    assert p.may_go_on(10, 5.0) and p.may_go_on(10, None)
    assert not p.may_go_on(3, None)  # all epochs done anyway

    q = Progress()
    for e, loss in enumerate([0.5, 0.6, 0.7], start=1):
        q.update(_timed(e, loss, 1.0), 0.0)
        q.check_stop(epochs=10, patience=2, budget_minutes=None)
    assert q.stop_reason == "early stop: no val loss decrease in 2 epochs"
    assert not q.may_go_on(20, None)  # an early stop is final

    r = Progress()
    r.update(_timed(1, 0.5, 1.0), 0.0)
    r.check_stop(epochs=1, patience=0, budget_minutes=60.0)
    assert r.stop_reason == "reached train.epochs=1"
    assert r.may_go_on(2, None) and not r.may_go_on(1, None)
