"""Refinement end to end on the small demo's test scene: trained from the parent's weights
and normalisation on the annotated block only, its epoch chosen and its verdict taken on the
annotated blocks kept out of training, scored before/after on the rest, logged, and
registered under its own alias only when it beats its parent there; bad areas fail before
anything is trained or registered and leave no files behind."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from resseg_ray.adapt.refine import AreaSpec, refine_scene
from resseg_ray.config import load_config
from resseg_ray.errors import InputDataError
from resseg_ray.models import build_model
from resseg_ray.models.bundle import load_bundle, read_bundle_info, save_bundle
from resseg_ray.train import tracking
from tests.helpers import assert_cogs, randomize_batchnorm, run_here, small_train_overrides

REFINE_DATA = ["data.tile_size=64", "data.stride=16", "data.crop_size=64", "data.split_block=64"]


@pytest.fixture(scope="module")
def parent(small_demo, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("parent") / "parent.resseg.safetensors"
    stats = small_demo.statistics.pooled
    save_bundle(
        path,
        randomize_batchnorm(build_model("prop18", in_bands=4)),
        norm_mean=list(stats.mean),
        norm_std=list(stats.std),
        band_names=["blue", "green", "red", "nir"],
        extra={"normalization": "pooled", "mlflow_run_id": "parent-run-0", "dataset": small_demo.root},
    )
    return str(path)


@pytest.fixture(scope="module")
def blind_parent(parent, tmp_path_factory) -> str:
    """The parent with its classifier biased to 'ground' everywhere: F1 0 on any scene, so the
    refined model cannot score below it and the verdict keeps it (train.min_gain=0)."""
    import torch

    b = load_bundle(parent)
    with torch.no_grad():
        b.model.classifier.bias.copy_(torch.tensor([30.0, -30.0]))
    path = tmp_path_factory.mktemp("blind") / "blind.resseg.safetensors"
    i = b.info
    save_bundle(path, b.model, norm_mean=i.norm_mean, norm_std=i.norm_std, band_names=i.band_names,
                extra=dict(i.extra))  # fmt: skip
    return str(path)


def _test_scene(small_demo) -> tuple[str, str]:
    scene = next(s for s in small_demo.scenes if s.role == "test")
    return scene.uri, scene.label_uri


def test_refinement_trains_inside_the_area_and_scores_the_rest(
    small_demo, blind_parent, mlflow_server, tmp_path, ray_session
) -> None:
    parent = blind_parent
    scene, labels = _test_scene(small_demo)
    overrides = small_train_overrides(
        small_demo.root, str(tmp_path), mlflow_server, "refine-test", **{"train.epochs": 2}
    )
    cfg = load_config(
        None,
        [*overrides, *REFINE_DATA, "scaling.num_workers=1", "scaling.in_process=true", "train.lr=0.0001",
         "train.select=last", "train.min_gain=0", "train.rehearsal_tiles=2"],
    )  # fmt: skip
    said: list[str] = []
    result = refine_scene(
        cfg, parent, scene, AreaSpec(fraction=0.25), labels=labels, adapt_bn=True, log=said.append
    )

    # rehearsal: tiles of the dataset the parent was trained on (its bundle's) beside the area's
    assert any(line.startswith(f"rehearsal: 2 training tiles of the parent's dataset {small_demo.root}")
               for line in said), said  # fmt: skip
    run_dir = tmp_path / "refine-test"
    with rasterio.open(run_dir / "labels" / f"{result.before.name}_evaluate_labels.tif") as e:
        evaluate = e.read(1)
    with rasterio.open(run_dir / "labels" / f"{result.before.name}_refine_labels.tif") as r:
        refine = r.read(1)
    inside = refine != 255
    assert_cogs(*(run_dir / "labels").iterdir())  # refinement, evaluation and area rasters
    assert inside.any() and (evaluate[inside] == 255).all()  # scored only outside the area
    assert result.before.confusion.counts.sum() == (evaluate != 255).sum()
    assert abs(result.area.fraction - 0.25) < 0.02
    rows, cols = np.nonzero(inside)
    for t in pq.read_table(run_dir / "data" / "manifest.parquet").to_pylist():
        r0, c0 = t["row_off"], t["col_off"]
        assert r0 + 64 <= rows.max() + 1 and c0 + 64 <= cols.max() + 1  # the tile lies in the block
    area = json.loads((run_dir / "area.geojson").read_text())
    assert len(area["features"]) == 1
    # trained in this process (scaling.in_process): no Ray Train checkpoints left to resume from
    assert "training run refine-test in this process (scaling.in_process): no Ray Train workers" in said
    assert not list(run_dir.glob("epoch_*"))

    info = read_bundle_info(result.bundle_uri)
    parent_info = read_bundle_info(parent)
    assert info.extra["source"] == "refine" and info.extra["parent_run_id"] == "parent-run-0"
    assert info.extra["epoch"] == 2  # train.select=last: the fixed schedule's last epoch
    assert info.norm_mean == parent_info.norm_mean  # the parent's pooled normalisation kept
    refined = load_bundle(result.bundle_uri).model.state_dict()
    assert any(
        not np.allclose(v.numpy(), load_bundle(parent).model.state_dict()[k].numpy())
        for k, v in refined.items()
    )

    c = tracking.client(mlflow_server)
    run = c.get_run(result.mlflow_run_id)
    assert run.data.tags["resseg.parent_run_id"] == "parent-run-0"
    assert run.data.tags["resseg.refined_scene"] == scene
    for key in ("rest_before_f1", "rest_after_f1", "rest_bn_adapted_f1", "area_fraction"):
        assert key in run.data.metrics
    assert any(a.path == "table3.md" for a in c.list_artifacts(result.mlflow_run_id))
    alias = "refined-" + result.before.name
    assert c.get_model_version_by_alias("test-buildings", alias).version == result.registered_version
    assert "before refinement" in result.table() and "BatchNorm re-estimated" in result.table()

    # the verdict: chosen on the held-out blocks of the area (not on the training tiles), the
    # parent at F1 0 there, so the refined model ships; said in one line and kept in MLflow
    verdict = result.verdict
    assert verdict is not None and verdict.chosen == "refined" and verdict.ships
    assert verdict.f1["parent"] == 0.0 and verdict.f1["refined"] >= 0.0
    blocks = json.loads((run_dir / "data" / "dataset.json").read_text())["scenes"][0]["val_blocks"]
    held = np.zeros_like(inside)
    for col, row, w, h in blocks:
        held[row : row + h, col : col + w] = True
    assert held.any() and (inside[held]).all()  # inside the annotated area ...
    for t in pq.read_table(run_dir / "data" / "manifest.parquet").to_pylist():
        if t["split"] == "train":  # ... where no training tile reaches
            r0, c0 = t["row_off"], t["col_off"]
            assert not held[max(r0, 0) : r0 + 64, max(c0, 0) : c0 + 64].any()
    assert verdict.pixels == int((held & (refine != 255)).sum())
    assert verdict.line() in said and verdict.line().startswith("kept the refined model: F1 on ")
    assert run.data.tags["resseg.refine_kept"] == "refined"
    assert run.data.tags["resseg.refine_verdict"] == verdict.line()
    for key in ("heldout_parent_f1", "heldout_adapted_f1", "heldout_refined_f1", "heldout_pixels"):
        assert key in run.data.metrics, key


def test_a_cross_validated_refinement_holds_out_every_block_once(
    small_demo, parent, mlflow_server, tmp_path, ray_session
) -> None:
    """train.folds=2: two refinements, each keeping one fold of the area's blocks out of its
    training, scored there and pooled, so every block of the area is held out once; then one
    refinement on every block, for the median of the epochs the folds chose, is what may ship.
    Too many folds for the area: refused before anything is trained, nothing left behind."""
    scene, labels = _test_scene(small_demo)
    sets = [*REFINE_DATA, "scaling.num_workers=1", "scaling.in_process=true", "train.lr=0.001",
            "train.select=val_f1", "train.min_gain=0"]  # fmt: skip

    def config(name: str, *more: str):
        overrides = small_train_overrides(small_demo.root, str(tmp_path), mlflow_server, name)
        return load_config(None, [*overrides, *sets, *more])

    too_many = config("too-many", "train.folds=10")  # the area holds fewer whole 64 px blocks
    fewer = r"train\.folds=10: the annotated area holds \d whole data\.split_block \(64 px\) blocks"
    with pytest.raises(InputDataError, match=fewer + r", fewer than one per fold: .*lower train\.folds"):
        refine_scene(too_many, parent, scene, AreaSpec(fraction=0.25), labels=labels, score_rest=False)
    assert not (tmp_path / "too-many").exists() and not list(tmp_path.glob("too-many-fold*"))

    said: list[str] = []
    cfg = config("refine-folds", "train.folds=2", "train.epochs=2")
    area = AreaSpec(fraction=0.25)
    result = refine_scene(cfg, parent, scene, area, labels=labels, log=said.append, score_rest=False)
    run_dir = tmp_path / "refine-folds"
    folds = []
    for i in (1, 2):
        prepared = json.loads((run_dir / f"data-fold{i}" / "dataset.json").read_text())
        folds.append({tuple(b) for b in prepared["scenes"][0]["val_blocks"]})
    assert folds[0] and folds[1] and not folds[0] & folds[1]
    final = json.loads((run_dir / "data" / "dataset.json").read_text())
    assert final["tiles"]["val"] == 0 and not final["scenes"][0]["val_blocks"]
    (refine_labels,) = (run_dir / "labels").glob("*_refine_labels.tif")
    with rasterio.open(refine_labels) as r:
        annotated = r.read(1) != 255
    held = np.zeros_like(annotated)
    for col, row, w, h in folds[0] | folds[1]:
        held[row : row + h, col : col + w] = True
    assert (annotated[held]).all()
    # every 64 px block wholly inside the area is in a fold
    h, w = annotated.shape
    whole = {(c, r) for r in range(0, h - 63, 64) for c in range(0, w - 63, 64)
             if annotated[r : r + 64, c : c + 64].all()}  # fmt: skip
    assert {(c, r) for c, r, _, _ in folds[0] | folds[1]} == whole

    verdict = result.verdict
    assert verdict is not None and verdict.folds == 2 and verdict.blocks == len(whole)
    assert verdict.pixels == int(held.sum())  # the refined figure pools both folds' predictions
    assert "blocks in 2 folds, each kept out of one of 2 refinements" in verdict.line()
    assert verdict.line() in said
    (line,) = [x for x in said if x.startswith("refining on every annotated block for ")]
    chosen = [int(e) for e in line.split("chose: ")[1].rstrip(")").split(", ")]
    epochs = int(line.split(" for ")[1].split(" ")[0])
    assert len(chosen) == 2 and epochs == max(1, -(-sum(chosen) // 2))  # the median of two, up
    for i, epoch in enumerate(chosen, 1):
        assert (
            read_bundle_info(tmp_path / f"refine-folds-fold{i}" / "model.resseg.safetensors").extra["epoch"]
            == epoch
        )
    assert read_bundle_info(result.bundle_uri).extra["epoch"] == epochs  # train.select=last there

    c = tracking.client(mlflow_server)
    runs = {
        r.info.run_name: r
        for r in c.search_runs(
            [c.get_experiment_by_name("tests").experiment_id], "tags.mlflow.runName LIKE 'refine-folds%'"
        )
    }
    assert set(runs) == {"refine-folds", "refine-folds-fold1", "refine-folds-fold2"}
    last = runs["refine-folds"].data
    assert "train_loss" in last.metrics and "val_loss" not in last.metrics  # no validation tiles
    assert last.tags["resseg.refine_verdict"] == verdict.line()
    assert "val_f1" in runs["refine-folds-fold1"].data.metrics
    assert runs["refine-folds-fold2"].data.tags["resseg.fold"] == "2/2" and "resseg.fold" not in last.tags

    # the dataset without validation tiles chooses no epoch on them
    from resseg_ray.errors import ConfigError
    from resseg_ray.train.trainer import plan_training

    plain = config("plain", f"train.dataset={run_dir / 'data'}", "data.val_fraction=0")
    with pytest.raises(ConfigError, match=r"no validation tiles .*train\.select=last"):
        plan_training(plain, log=lambda _: None)


def test_bad_areas_fail_before_training_and_register_nothing(
    small_demo, parent, mlflow_server, tmp_path, ray_session, capsys
) -> None:
    def finetune(*args: str):  # jobs/finetune.py in this process, on the session's Ray
        return run_here("finetune.py", *args, capsys=capsys)

    scene, labels = _test_scene(small_demo)
    base = [
        "--model", parent, "--scene", scene, "--labels", labels,
        *(x for o in [*REFINE_DATA, f"mlflow.tracking_uri={mlflow_server}",
                      "mlflow.registered_model=never-registered", f"run.storage_path={tmp_path}"]
          for x in ("--set", o)),
    ]  # fmt: skip
    everything = tmp_path / "everything.geojson"
    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs.to_string()
    everything.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": crs}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [
                                [[left - 9, bottom - 9], [right + 9, bottom - 9], [right + 9, top + 9],
                                 [left - 9, top + 9], [left - 9, bottom - 9]]
                            ],
                        },
                    }
                ],
            }
        )
    )  # fmt: skip
    proc = finetune(*base, "--area", str(everything))
    assert proc.returncode == 2 and "nothing is left to evaluate" in proc.stderr, proc.stderr[-2000:]
    proc = finetune(*base, "--fraction", "1.5")
    assert proc.returncode == 2 and "--fraction must be between 0 and 1" in proc.stderr
    proc = finetune(*base)
    assert proc.returncode == 2 and "--area POLYGONS or as --fraction" in proc.stderr
    proc = finetune(*base, "--fraction", "0.07", "--report", str(tmp_path))  # checked before training
    assert proc.returncode == 2
    assert proc.stderr == f"error: --report {tmp_path} is a folder; give a file name\n"
    # an area too small for one 64-px tile fails after its label rasters were written:
    # the run folder it created goes with them, nothing half-made is left
    proc = finetune(*base, "--fraction", "0.01")
    assert proc.returncode == 2 and "no training tiles" in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["everything.geojson"]
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        tracking.client(mlflow_server).get_registered_model("never-registered")


def test_a_refinement_that_does_not_beat_its_parent_is_not_registered(
    small_demo, parent, mlflow_server, tmp_path, ray_session, capsys
) -> None:
    """jobs/finetune.py whose refined model cannot beat its parent by train.min_gain (0.99): it
    says in one line which model it kept and why, with the figures, registers nothing, and
    records the verdict on its MLflow run."""
    scene, labels = _test_scene(small_demo)
    sets = [*REFINE_DATA, f"mlflow.tracking_uri={mlflow_server}", "mlflow.registered_model=never-shipped",
            f"run.storage_path={tmp_path}", "run.name=kept", "train.epochs=1", "train.min_gain=0.99",
            "scaling.cpus_per_worker=0.5", "scaling.in_process=true", "data.loader_num_cpus=0.5"]  # fmt: skip
    args = ["--model", parent, "--scene", scene, "--labels", labels, "--fraction", "0.25",
            "--report", str(tmp_path / "refine.json"), *(x for o in sets for x in ("--set", o))]  # fmt: skip
    proc = run_here("finetune.py", *args, capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = [line for line in proc.stdout.splitlines() if line.startswith("kept ")]
    assert len(kept) == 1 and ", not the refined model: F1 on " in kept[0], proc.stdout[-2000:]
    assert "by 99.0 points (train.min_gain) to ship" in kept[0]
    assert (
        "not registered: keep mapping this scene with" in proc.stdout and "nothing registered" in proc.stdout
    )
    from mlflow.exceptions import MlflowException

    c = tracking.client(mlflow_server)
    with pytest.raises(MlflowException):
        c.get_registered_model("never-shipped")
    (run,) = c.search_runs(
        [c.get_experiment_by_name("resseg-demo").experiment_id], "tags.mlflow.runName = 'kept'"
    )
    assert run.data.tags["resseg.refine_kept"] in ("parent", "adapted")
    assert run.data.tags["resseg.refine_verdict"] == kept[0]
    report = json.loads((tmp_path / "refine.json").read_text())  # the typed report says the same
    assert report["format"] == "resseg-refine-report/1" and report["parent"] == parent
    assert report["verdict"]["line"] == kept[0] and report["verdict"]["ships"] is False
    assert report["verdict"]["chosen"] == run.data.tags["resseg.refine_kept"]
    assert report["mlflow_run_id"] == run.info.run_id and report["registered_version"] is None
