"""The depth comparison (paper Table II): train several architectures, evaluate each on the
held-out test scenes, log everything to one MLflow experiment and print the table.

Each architecture is an ordinary training run named ``<prefix>-<arch>`` (so an interrupted
comparison resumes where it stopped), nested under one parent run that holds the table.
Test metrics (``test_<scene>_f1``, ``test_<scene>_accuracy``, ..., ``test_mean_f1``) are
logged into each training run, so the MLflow UI's compare view shows Table II.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from resseg_ray import jobstate
from resseg_ray.config import Config, PredictSection
from resseg_ray.data.prepare import load_dataset
from resseg_ray.errors import InputDataError
from resseg_ray.evaluation.scenes import Evaluation, markdown_table
from resseg_ray.geo.storage import StorageSettings, resolve_uri, workdir
from resseg_ray.train import tracking
from resseg_ray.train.checks import check_arch
from resseg_ray.train.fit import TrainResult
from resseg_ray.train.trainer import run_training

PAPER_ARCHS = ("prop18", "prop34", "prop50", "prop101", "prop152", "prop200", "unet19", "unet35")


@dataclass
class Comparison:
    """Results of a depth comparison."""

    parent_run_id: str
    runs: dict[str, TrainResult]
    evaluations: dict[str, Evaluation]
    table: str
    tracking_uri: str = ""
    experiment_id: str = ""


def _evaluate_task(
    bundle_uri: str,
    scenes: list[tuple[str, str]],
    bands: list[int],
    settings: StorageSettings,
    predict: PredictSection,
    threads: int | None,
) -> Evaluation:
    import torch

    from resseg_ray.evaluation.scenes import evaluate_scenes
    from resseg_ray.inference.predictor import ScenePredictor
    from resseg_ray.models.bundle import load_bundle_bytes
    from resseg_ray.models.source import fetch_bundle_bytes

    if threads:
        torch.set_num_threads(threads)
    predictor = ScenePredictor(
        load_bundle_bytes(fetch_bundle_bytes(bundle_uri, settings), bundle_uri), predict
    )
    return evaluate_scenes(predictor, scenes, settings, bands)


def evaluate_on_test_scenes(cfg: Config, bundle_uri: str) -> Evaluation:
    """Evaluate a bundle on the test scenes of ``cfg.train.dataset`` with the ``predict``
    options, as a Ray task on a GPU when ``scaling.use_gpu`` (else on the CPUs of one worker)."""
    import ray

    settings = StorageSettings.resolve(cfg.storage)
    desc = load_dataset(resolve_uri(cfg.train.dataset), settings)
    scenes = [(s["uri"], s["label_uri"]) for s in desc.scenes("test")]
    if not scenes:
        raise InputDataError(
            f"{desc.root} has no test scenes; prepare it with --test-scenes and "
            "--test-footprints/--test-labels"
        )
    task = ray.remote(_evaluate_task).options(
        num_cpus=cfg.scaling.cpus_per_worker, num_gpus=1 if cfg.scaling.use_gpu else 0
    )
    return ray.get(
        task.remote(bundle_uri, scenes, desc.bands, settings, cfg.predict, cfg.scaling.torch_threads)
    )


def summary(prefix: str, runs: dict[str, TrainResult], evaluations: dict[str, Evaluation], table: str) -> str:
    """The comparison at a glance (markdown): per architecture its run, epochs, best validation
    F1 and the test scenes' mean F1 and accuracy; then the per-scene table."""
    means = {arch: evaluations[arch].mean() for arch in runs}
    ranked = sorted(means, key=lambda a: -means[a]["f1"])
    glance = "; ".join(f"{a} {100 * means[a]['f1']:.2f} / {100 * means[a]['accuracy']:.2f}" for a in ranked)
    lines = [
        f"**Depth comparison `{prefix}`**, test mean F1 / accuracy in %: {glance}",
        "",
        "Test scenes segmented whole, never seen in training.",
        "",
        "| architecture | run | epochs | best val F1 | test mean F1 | test mean accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for arch in ranked:
        r, mean = runs[arch], means[arch]
        lines.append(
            f"| {arch} | {r.run_name} | {r.progress.epochs_done} | {100 * r.progress.best_val_f1:.2f} | "
            f"{100 * mean['f1']:.2f} | {100 * mean['accuracy']:.2f} |"
        )
    return "\n".join([*lines, "", "Per test scene:", "", table])


def compare_architectures(
    cfg: Config,
    archs: Sequence[str] = PAPER_ARCHS,
    prefix: str = "compare",
    log: Callable[[str], None] = print,
) -> Comparison:
    """Train and evaluate every architecture of ``archs`` with otherwise identical settings
    (test scenes segmented with the ``predict`` options)."""
    for arch in archs:
        check_arch(arch)
    uri = tracking.resolve_tracking_uri(cfg.mlflow, workdir())
    tracking.check_tracking(uri)
    parent = tracking.open_run(
        uri, cfg.mlflow.experiment, prefix, "compare", tags={"resseg.kind": "comparison"}
    )
    c = tracking.client(uri)
    runs: dict[str, TrainResult] = {}
    evaluations: dict[str, Evaluation] = {}
    try:
        for arch in archs:
            arch_cfg = cfg.replace(
                model=cfg.model.replace(arch=arch), run=cfg.run.replace(name=f"{prefix}-{arch}")
            )
            log(f"== {arch}: training run {prefix}-{arch}")
            result = run_training(arch_cfg, log=log, tags={"mlflow.parentRunId": parent.run_id})
            runs[arch] = result
            c.set_tag(result.mlflow_run_id, "mlflow.parentRunId", parent.run_id)
            log(f"== {arch}: evaluating {result.bundle_uri} on the test scenes")
            jobstate.doing(f"evaluating {arch} ({result.run_name}, trained) on the test scenes")
            ev = evaluate_on_test_scenes(arch_cfg, result.bundle_uri)
            evaluations[arch] = ev
            from mlflow.entities import Metric

            metrics = ev.mlflow_metrics()
            c.log_batch(result.mlflow_run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
            mean = ev.mean()
            log(f"== {arch}: test mean F1 {100 * mean['f1']:.2f}, accuracy {100 * mean['accuracy']:.2f}")
        table = markdown_table(evaluations)
        tracking.show_comparison(
            uri, parent.experiment_id, parent.run_id, summary(prefix, runs, evaluations, table)
        )
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "table2.md"), "w") as f:
                f.write(table)
            with open(os.path.join(d, "table2.json"), "w") as f:
                json.dump(
                    {
                        a: {"scenes": {s.name: s.metrics for s in e.scenes}, "mean": e.mean()}
                        for a, e in evaluations.items()
                    },
                    f,
                    indent=2,
                )
            c.log_artifact(parent.run_id, os.path.join(d, "table2.md"))
            c.log_artifact(parent.run_id, os.path.join(d, "table2.json"))
        c.set_terminated(parent.run_id, status="FINISHED")
    except BaseException:
        c.set_terminated(parent.run_id, status="FAILED")
        raise
    return Comparison(parent.run_id, runs, evaluations, table, uri, parent.experiment_id)
