"""The typed report of a training run: the lines the train command prints, and its JSON."""

from __future__ import annotations

import json

from resseg_ray.train.fit import TrainResult
from resseg_ray.train.report import FORMAT, report_json, summary_lines
from resseg_ray.train.state import Progress


def _result(**changes: object) -> TrainResult:
    progress = Progress(epochs_done=2, best_val_loss=0.25, best_val_loss_epoch=2, best_val_f1=0.5,
                        best_val_f1_epoch=1, finished=True, stop_reason="reached train.epochs=2",
                        history=[{"epoch": 1, "val_loss": 0.3}, {"epoch": 2, "val_loss": 0.25}])  # fmt: skip
    fields: dict = dict(run_name="r", run_dir="runs/r", bundle_uri="runs/r/model.resseg.safetensors",
                        progress=progress, tracking_uri="sqlite:///m.db", mlflow_run_id="abc",
                        registered_model="buildings", registered_version="3", alias_moved=True,
                        resumed=False, seconds=12.0)  # fmt: skip
    return TrainResult(**{**fields, **changes})


def test_the_summary_says_the_best_epochs_where_things_are_and_the_version() -> None:
    lines = summary_lines(_result(), "best")
    assert lines[0] == (
        "run r: 2 epochs (reached train.epochs=2), best val loss 0.2500 (epoch 2), "
        "best val F1 0.5000 (epoch 1), 12 s"
    )
    assert lines[-1] == "  registered:   buildings version 3, alias 'best' now points to it"
    assert not any("registered" in x for x in summary_lines(_result(registered_version=None), "best"))


def test_the_json_report_holds_every_field_and_no_infinity() -> None:
    doc = json.loads(report_json(_result()))
    assert doc["format"] == FORMAT and doc["progress"]["history"][1] == {"epoch": 2, "val_loss": 0.25}
    assert (doc["mlflow_run_id"], doc["registered_version"], doc["seconds"]) == ("abc", "3", 12.0)
    fresh = _result(progress=Progress())  # no epoch yet: the best loss is infinite
    assert json.loads(report_json(fresh))["progress"]["best_val_loss"] is None
