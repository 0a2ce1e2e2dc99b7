"""The depth comparison: two architectures trained into one experiment, evaluated on the
held-out test scene, nested under a parent run holding the Table II markdown."""

from __future__ import annotations

import json

import pytest

from resseg_ray.config import load_config
from resseg_ray.evaluation.scenes import scene_name
from resseg_ray.experiments.compare_depths import compare_architectures
from resseg_ray.experiments.report import comparison_json
from resseg_ray.train import tracking
from tests.helpers import browser_text, run_script, small_train_overrides

pytestmark = pytest.mark.usefixtures("ray_session")


def test_compare_logs_table_ii(small_demo, mlflow_server, tmp_path) -> None:
    overrides = small_train_overrides(
        small_demo.root,
        str(tmp_path),
        mlflow_server,
        "unused",
        **{
            "scaling.num_workers": 1,
            "scaling.cpus_per_worker": 1,
            "scaling.in_process": True,  # the comparison is tested here, not Ray Train's workers
            "train.epochs": 1,
            "mlflow.experiment": "compare-tests",
            "mlflow.registered_model": "null",
            "predict.window": 64,
            "predict.overlap": 16,
        },
    )
    cfg = load_config(None, overrides)
    result = compare_architectures(cfg, ["prop18", "unet19"], prefix="cmp", log=lambda _: None)
    test_scene = next(s for s in small_demo.scenes if s.role == "test")
    name = scene_name(test_scene.uri)
    lines = result.table.splitlines()
    assert lines[2] == f"| model | {name} | mean |"
    assert lines[4].startswith("| prop18 | ") and lines[5].startswith("| unet19 | ")
    c = tracking.client(mlflow_server)
    for arch, run in result.runs.items():
        r = c.get_run(run.mlflow_run_id)
        assert r.info.run_name == f"cmp-{arch}"
        assert r.data.tags["mlflow.parentRunId"] == result.parent_run_id
        for key in (f"test_{name}_f1", f"test_{name}_accuracy", "test_mean_f1", "test_mean_accuracy"):
            assert 0.0 <= r.data.metrics[key] <= 1.0, key
        assert r.data.metrics["test_mean_f1"] == pytest.approx(result.evaluations[arch].mean()["f1"])
    parent = c.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    doc = json.loads(comparison_json(result))  # the typed report of `resseg compare-depths --report`
    assert doc["format"] == "resseg-comparison-report/1" and doc["parent_run_id"] == result.parent_run_id
    assert list(doc["archs"]) == ["prop18", "unet19"] and doc["table"] == result.table
    for arch, entry in doc["archs"].items():
        assert entry["run"]["mlflow_run_id"] == result.runs[arch].mlflow_run_id
        assert entry["test"]["mean"]["f1"] == pytest.approx(result.evaluations[arch].mean()["f1"])
    assert {a.path for a in c.list_artifacts(result.parent_run_id)} == {"table2.md", "table2.json"}

    # the MLflow UI opens the experiment as model training with the comparison at a glance
    exp = c.get_experiment(result.experiment_id)
    assert exp.tags[tracking.KIND_TAG] == tracking.MODEL_TRAINING
    note = exp.tags[tracking.NOTE_TAG]
    means = {a: result.evaluations[a].mean() for a in result.runs}
    for arch, m in means.items():
        assert f"{arch} {100 * m['f1']:.2f} / {100 * m['accuracy']:.2f}" in note.splitlines()[1]
        assert f"| {arch} | cmp-{arch} | 1 | {100 * result.runs[arch].progress.best_val_f1:.2f} |" in note
    assert parent.data.tags[tracking.NOTE_TAG] == note
    url = tracking.experiment_url(mlflow_server, result.experiment_id)
    png = tmp_path / "mlflow-experiment.png"
    text = browser_text(url, tmp_path / "browser", screenshot=png)  # one browser run for both
    assert "matching run" in text and "Sort: test_mean_f1" in text, text[:2000]  # the runs table
    assert "Detect Issues" not in text  # not the GenAI overview
    glance = note.splitlines()[1].split(": ", 1)[1]  # prop18 F1 / accuracy; unet19 ...
    assert "Depth comparison" in text and glance in text
    for arch in result.runs:
        assert f"cmp-{arch}" in text
    assert png.stat().st_size > 10_000


def test_compare_job_rejects_unknown_architecture_before_starting_ray(tmp_path) -> None:
    proc = run_script("compare_depths.py", "--archs", "prop18", "prop19", env={"RAY_ADDRESS": "local"})
    assert proc.returncode == 2
    assert "model.arch 'prop19' is not an architecture; did you mean" in proc.stderr
    assert "Traceback" not in proc.stderr
