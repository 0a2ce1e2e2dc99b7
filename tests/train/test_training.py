"""Ray Train DDP on 2 CPU workers against a real `mlflow server`: what lands in MLflow,
checkpoints, resume, a worker crash survived from the checkpoint, and bad input. (Checkpoints
and bundles on S3 are covered by test_node_loss, whose run keeps them on the moto endpoint.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resseg_ray.config import load_config
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.models.bundle import load_bundle
from resseg_ray.train import tracking
from resseg_ray.train.state import (
    BEST_FILES,
    INFO_SUFFIX,
    SNAPSHOT_FILE,
    best_bundles,
    finished_checkpoint,
    local_checkpoint,
)
from resseg_ray.train.trainer import run_training
from tests.helpers import small_train_overrides

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def trained(small_demo, mlflow_server, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, small_train_overrides(small_demo.root, str(storage), mlflow_server, "ddp"))
    return cfg, run_training(cfg, log=lambda _: None)


def test_ddp_run_logs_params_metrics_artifacts_and_registers(
    trained, mlflow_server, small_demo, tmp_path
) -> None:
    _, result = trained
    assert result.progress.epochs_done == 3 and result.progress.finished
    c = tracking.client(mlflow_server)
    run = c.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["arch"] == "prop18" and p["depth"] == "18" and p["workers"] == "2"
    assert p["in_bands"] == "4" and p["bands"] == "blue,green,red,nir"
    assert p["lr"] == "0.005" and p["momentum"] == "0.9" and p["batch_size_per_worker"] == "4"
    assert p["manifest_sha256"] and p["seed"] == "0"
    for key in (
        "train_loss",
        "val_loss",
        "val_precision",
        "val_recall",
        "val_f1",
        "val_iou",
        "val_accuracy",
        "lr",
        "samples_per_s",
        "data_wait_fraction",
    ):
        history = c.get_metric_history(result.mlflow_run_id, key)
        assert [m.step for m in history] == [1, 2, 3], key
    assert 0 <= run.data.metrics["val_f1"] <= 1
    names = {a.path for a in c.list_artifacts(result.mlflow_run_id)}
    assert {"config.yaml", "data", "quicklook", "bundles", "progress.json"} <= names
    assert c.list_artifacts(result.mlflow_run_id, "quicklook")[0].path.endswith(".png")
    assert c.list_artifacts(result.mlflow_run_id, "data")[0].path == "data/stats.json"
    # registered, with the alias on it (the only version)
    mv = c.get_model_version_by_alias("test-buildings", "best")
    assert mv.version == result.registered_version and mv.run_id == result.mlflow_run_id
    assert mv.tags["arch"] == "prop18"
    # the final bundle carries the dataset's normalisation and loads through MLflow too
    bundle = load_bundle(result.bundle_uri)
    assert bundle.info.norm_mean == pytest.approx(small_demo.statistics.pooled.mean)
    assert bundle.info.extra["mlflow_run_id"] == result.mlflow_run_id
    import mlflow.pyfunc
    import numpy as np

    from resseg_ray.geo.storage import StorageSettings
    from resseg_ray.models.source import resolve_bundle

    fetched = resolve_bundle("models:/test-buildings@best", str(tmp_path), StorageSettings(), mlflow_server)
    assert load_bundle(fetched).info.extra["mlflow_run_id"] == result.mlflow_run_id
    # dst_path: MLflow otherwise leaves a copy of the model (57 MB) in a fresh /tmp folder
    (tmp_path / "pyfunc").mkdir()
    model = mlflow.pyfunc.load_model("models:/test-buildings@best", dst_path=str(tmp_path / "pyfunc"))
    prob = model.predict(np.full((1, 4, 40, 50), 300, np.float32))
    assert prob.shape == (1, 40, 50) and 0 <= prob.min() and prob.max() <= 1
    # the registry's model predicts what jobs/predict.py predicts on the same window
    from resseg_ray.config import PredictSection
    from resseg_ray.inference.batch import predict_scene
    from resseg_ray.inference.predictor import ScenePredictor
    from tests.rasters import write_tif

    pixels = np.random.default_rng(5).uniform(100, 2000, (4, 40, 50)).astype(np.float32)
    pixels[:, :3, :4] = 0  # no data
    scene = write_tif(tmp_path / "window.tif", pixels, nodata=0)
    options = PredictSection(prob_dtype="float32", device="cpu")
    out = predict_scene(ScenePredictor(bundle, options), scene, str(tmp_path / "out"), StorageSettings())
    import rasterio

    with rasterio.open(out.outputs["prob"]) as src:
        expected = src.read(1)
    raw = pixels.copy()
    raw[:, :3, :4] = np.nan
    got = model.predict(raw[None])[0]
    assert np.isnan(got[:3, :4]).all() and np.isnan(expected[:3, :4]).all()
    assert np.nanmax(np.abs(got - expected)) < 1e-5


def test_checkpoints_every_epoch_and_rerun_resumes(trained, mlflow_server, tmp_path) -> None:
    cfg, result = trained
    run_dir = Path(result.run_dir)
    kept = sorted(p.name for p in run_dir.glob("epoch_*"))
    assert kept == ["epoch_0002", "epoch_0003"]  # run.checkpoints_to_keep=2
    # the best bundles travel in the last checkpoint: a bundle of its own epoch as metadata only
    last = run_dir / "epoch_0003"
    bundles = best_bundles(str(last), str(tmp_path / "best"))
    epochs = {"val_loss": result.progress.best_val_loss_epoch, "val_f1": result.progress.best_val_f1_epoch}
    for key, epoch in epochs.items():
        name = BEST_FILES[key]
        assert (last / name).exists() == (epoch != 3)
        assert (last / (name + INFO_SUFFIX)).exists() == (epoch == 3)
        assert load_bundle(bundles[name]).info.extra["epoch"] == epoch
    # a re-run of the finished run: nothing to train, and no Ray Train start to learn that
    from resseg_ray.train.loop import train_loop_per_worker

    marker = tmp_path / "a worker ran"

    def loop(config: dict) -> None:
        marker.touch()
        train_loop_per_worker(config)

    said: list[str] = []
    again = run_training(cfg, log=said.append, loop=loop)
    assert not marker.exists()
    assert "run ddp has ended (reached train.epochs=3): nothing to train" in said, said
    assert again.resumed and again.mlflow_run_id == result.mlflow_run_id
    assert again.progress.epochs_done == 3 and again.registered_version == result.registered_version
    epoch = load_bundle(result.bundle_uri).info.extra["epoch"]
    assert load_bundle(again.bundle_uri).info.extra["epoch"] == epoch
    # given more epochs, it goes on: Ray Train starts and resumes it
    assert finished_checkpoint(str(run_dir), 3, None, StorageSettings()) == str(last)
    assert finished_checkpoint(str(run_dir), 4, None, StorageSettings()) is None
    assert finished_checkpoint(str(tmp_path / "no-run"), 3, None, StorageSettings()) is None
    c = tracking.client(mlflow_server)
    assert (
        len(
            c.search_runs(
                [c.get_run(result.mlflow_run_id).info.experiment_id], "tags.`resseg.run_name` = 'ddp'"
            )
        )
        == 1
    )
    assert [m.step for m in c.get_metric_history(result.mlflow_run_id, "val_loss")] == [1, 2, 3]


def test_an_in_process_run_trains_in_this_process_and_is_not_resumed(
    small_demo, mlflow_server, tmp_path
) -> None:
    """scaling.in_process: Ray Train's local mode runs the loop in the calling process (no
    worker start), logs the run and its model as a worker run does, leaves this process's
    torch threads as they were, and keeps no checkpoint: a re-run of its name is refused."""
    import torch

    from resseg_ray.train.loop import train_loop_per_worker

    pids: list[int] = []

    def loop(config: dict) -> None:
        pids.append(os.getpid())
        train_loop_per_worker(config)

    overrides = small_train_overrides(small_demo.root, str(tmp_path), mlflow_server, "in-process")
    cfg = load_config(
        None,
        [*overrides, "train.epochs=2", "scaling.num_workers=1", "scaling.in_process=true",
         "scaling.torch_threads=1", "mlflow.registered_model=null"],
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        said: list[str] = []
        result = run_training(cfg, log=said.append, loop=loop)
        assert torch.get_num_threads() == threads + 1
    finally:
        torch.set_num_threads(threads)
    assert pids == [os.getpid()]
    assert "training run in-process in this process (scaling.in_process): no Ray Train workers" in said
    assert result.progress.epochs_done == 2 and result.progress.finished and not result.resumed
    assert load_bundle(result.bundle_uri).info.extra["run_name"] == "in-process"
    c = tracking.client(mlflow_server)
    assert c.get_run(result.mlflow_run_id).info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(result.mlflow_run_id, "val_loss")] == [1, 2]
    run_dir = Path(result.run_dir)
    assert not list(run_dir.glob("epoch_*")) and not (run_dir / SNAPSHOT_FILE).exists()
    with pytest.raises(ConfigError, match=r"run in-process exists under .* choose a new run.name"):
        run_training(cfg, log=said.append, loop=loop)
    assert pids == [os.getpid()]
    with pytest.raises(ConfigError, match=r"scaling.num_workers must be 1 with scaling.in_process, got 2"):
        load_config(None, [*overrides, "scaling.in_process=true"])


def test_a_finished_run_on_s3_is_found_and_its_checkpoint_fetched(trained, s3_bucket, s3_settings) -> None:
    """The same for a run kept on S3: its latest checkpoint found by Ray Train's record there
    and copied into a local folder for the driver; a record that is not as expected (torn,
    naming a folder outside the run) leaves the decision to Ray Train."""
    from resseg_ray.geo.storage import filesystem, write_bytes

    _, result = trained
    run_dir = f"{s3_bucket}/runs/ddp"
    filesystem(run_dir, s3_settings).put(result.run_dir + "/", run_dir + "/", recursive=True)
    found = finished_checkpoint(run_dir, 3, None, s3_settings)
    assert found == f"{run_dir}/epoch_0003"
    with local_checkpoint(found, s3_settings) as local:
        kept = Path(result.run_dir) / "epoch_0003"
        assert sorted(os.listdir(local)) == sorted(os.listdir(kept))
        assert (Path(local) / "state.pt").read_bytes() == (kept / "state.pt").read_bytes()
    assert not os.path.exists(local)
    record = (Path(result.run_dir) / SNAPSHOT_FILE).read_text()
    for bad in (record[: len(record) // 2], record.replace('"epoch_0003"', '"../ddp/epoch_0003"'), "[]"):
        write_bytes(f"{run_dir}/{SNAPSHOT_FILE}", bad.encode(), s3_settings)
        assert finished_checkpoint(run_dir, 3, None, s3_settings) is None, bad[:80]


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("model.arch=prop19", ConfigError, r"model.arch 'prop19'.*did you mean"),
        ("train.lr=-0.1", ConfigError, r"train.lr must be > 0"),
        ("train.dataset=/nonexistent/prepared", InputDataError, r"/nonexistent/prepared is not a prepared"),
        ("mlflow.tracking_uri=http://127.0.0.1:9", ConfigError, r"http://127.0.0.1:9 is unreachable"),
        ("train.batch_size=100000", InputDataError, r"training tiles.*fewer than one batch"),
        ("train.select=best", ConfigError, r"train.select must be one of val_loss, val_f1, last, got 'best'"),
    ],
)
def test_bad_input_fails_before_training(small_demo, mlflow_server, tmp_path, override, error, match) -> None:
    base = small_train_overrides(small_demo.root, str(tmp_path), mlflow_server, "bad")
    with pytest.raises(error, match=match):
        run_training(load_config(None, [*base, override]), log=lambda _: None)
    assert not (tmp_path / "bad").exists()
    c = tracking.client(mlflow_server)
    exp = c.get_experiment_by_name("tests")
    if exp is not None:
        assert not c.search_runs([exp.experiment_id], "tags.`resseg.run_name` = 'bad'")


def test_missing_scene_fails_before_training(small_demo, mlflow_server, tmp_path) -> None:
    import shutil

    copy = tmp_path / "prepared"
    shutil.copytree(small_demo.root, copy)
    import json

    desc = json.loads((copy / "dataset.json").read_text())
    victim = next(s for s in desc["scenes"] if s["role"] == "train")
    moved = tmp_path / "elsewhere.tif"
    shutil.copy(victim["uri"], moved)
    victim["uri"] = str(tmp_path / "gone.tif")
    (copy / "dataset.json").write_text(json.dumps(desc))
    cfg = load_config(None, small_train_overrides(str(copy), str(tmp_path), mlflow_server, "bad"))
    with pytest.raises(InputDataError, match=r"gone\.tif"):
        run_training(cfg, log=lambda _: None)
    assert not os.path.exists(tmp_path / "bad")


@pytest.mark.parametrize("local_tiles", [0, 256], ids=["ray-data-loader", "read-in-worker"])
def test_unreadable_scene_data_fails_the_run_with_the_file_named(
    small_demo, mlflow_server, tmp_path, local_tiles
) -> None:
    """A scene whose header reads but whose pixels do not (damaged tiles) passes the
    pre-flight check and fails inside a Ray Data loader of a Ray Train worker, or in the
    worker's own reader thread (a small epoch, data.local_loader_tiles): the error the user
    sees is still the one-line InputDataError naming the file."""
    import json
    import shutil

    from resseg_ray.errors import user_error

    copy = tmp_path / "prepared"
    shutil.copytree(small_demo.root, copy)
    desc = json.loads((copy / "dataset.json").read_text())
    manifest_scenes = [s for s in desc["scenes"] if s["role"] == "train"]
    for s in manifest_scenes:  # every training scene's compressed tiles overwritten in the middle
        data = bytearray(Path(s["uri"]).read_bytes())
        a, b = len(data) // 3, 2 * len(data) // 3
        data[a:b] = (bytes(range(256)) * ((b - a) // 256 + 1))[: b - a]
        (tmp_path / Path(s["uri"]).name).write_bytes(bytes(data))
    # the manifest names the original URIs: point them at the truncated copies
    import pyarrow.parquet as pq

    table = pq.read_table(copy / "manifest.parquet").to_pandas()
    for s in manifest_scenes:
        table.loc[table.scene_uri == s["uri"], "scene_uri"] = str(tmp_path / Path(s["uri"]).name)
        s["uri"] = str(tmp_path / Path(s["uri"]).name)
    table.to_parquet(copy / "manifest.parquet", index=False)
    import hashlib

    desc["manifest_sha256"] = hashlib.sha256((copy / "manifest.parquet").read_bytes()).hexdigest()
    (copy / "dataset.json").write_text(json.dumps(desc))
    cfg = load_config(
        None,
        small_train_overrides(
            str(copy),
            str(tmp_path / "runs"),
            mlflow_server,
            f"truncated-{local_tiles}",
            **{
                "run.max_failures": 0,
                "scaling.num_workers": 1,
                "train.epochs": 1,
                "data.local_loader_tiles": local_tiles,
            },
        ),
    )
    with pytest.raises(Exception) as info:
        run_training(cfg, log=lambda _: None)
    err = user_error(info.value)
    assert isinstance(err, InputDataError), info.value
    assert str(tmp_path) in str(err)
    c = tracking.client(mlflow_server)
    name = f"truncated-{local_tiles}"
    experiment = c.get_experiment_by_name("tests").experiment_id
    runs = c.search_runs([experiment], f"tags.`resseg.run_name` = '{name}'")
    assert [r.info.status for r in runs] == ["FAILED"]


def _crashing_loop(config: dict) -> None:
    """The production loop, whose last worker exits abruptly right after epoch 2 is committed
    (once per run: not after a restart), so the restart point is deterministic."""
    import os

    import ray.train

    from resseg_ray.train.loop import train_loop_per_worker

    ctx = ray.train.get_context()
    restored = ray.train.get_checkpoint() is not None
    report = ray.train.report

    def report_then_crash(metrics: dict, *args, **kwargs) -> None:
        report(metrics, *args, **kwargs)
        if metrics.get("epoch") == 2 and not restored and ctx.get_world_rank() == ctx.get_world_size() - 1:
            ray.train.get_all_reported_checkpoints(timeout_s=60)
            os._exit(17)

    ray.train.report = report_then_crash  # in this worker process only
    train_loop_per_worker(config)


def test_the_same_seed_gives_the_same_run_even_across_a_worker_crash(
    trained, small_demo, mlflow_server, tmp_path
) -> None:
    """run.seed fixes the weights' initialisation, every worker's tiles and order and every
    augmentation draw: a second 2-worker run with seed 0, whose last worker dies right after
    epoch 2 and which goes on from that checkpoint (epoch 3 not redone from scratch), repeats
    the first one's per-epoch metrics (to 1e-6) and its weights exactly. (One run checks both:
    a crash survived and the same run, as a user resuming expects.) The first run read its small
    epochs in its workers (data.local_loader_tiles), this one through Ray Data loaders: the
    same run either way. That another seed draws
    other tiles, order and augmentation is tested on the pipeline (tests/data/test_pipeline.py);
    that it gives another whole run, by ``python -m bench.same_seed`` on the demo configuration
    (a Ray Train start costs ~20 CPU-seconds here)."""
    import torch

    _, first = trained

    def run(name: str, *extra: str, loop=None):
        overrides = small_train_overrides(small_demo.root, str(tmp_path / "runs"), mlflow_server, name)
        cfg = load_config(None, [*overrides, "mlflow.registered_model=null", *extra])
        return run_training(cfg, log=lambda _: None, loop=loop)

    def history(result) -> dict[str, list[float]]:
        c = tracking.client(mlflow_server)
        keys = ("train_loss", "val_loss", "val_f1", "val_accuracy")
        return {k: [m.value for m in c.get_metric_history(result.mlflow_run_id, k)] for k in keys}

    def weights(result) -> dict[str, torch.Tensor]:
        return load_bundle(result.bundle_uri).model.state_dict()

    again = run("ddp-again", "run.max_failures=1", "data.local_loader_tiles=0", loop=_crashing_loop)
    assert again.progress.epochs_done == 3 and again.progress.restarts == 1
    c = tracking.client(mlflow_server)
    # epochs 1-2 before the crash, epoch 3 after: the run did not start over from epoch 0
    assert [m.step for m in c.get_metric_history(again.mlflow_run_id, "val_loss")] == [1, 2, 3]
    assert [m.value for m in c.get_metric_history(again.mlflow_run_id, "restarts")] == [0, 0, 1]
    assert again.registered_version is None
    h1, h2 = history(first), history(again)
    assert len(h1["val_loss"]) == 3
    for key in h1:
        assert h2[key] == pytest.approx(h1[key], abs=1e-6, rel=0), key
    w1, w2 = weights(first), weights(again)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
