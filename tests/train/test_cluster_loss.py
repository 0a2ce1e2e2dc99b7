"""A job attached to a Ray cluster that goes away mid-run: one error line saying what was
lost and how to go on, exit 2, its MLflow run FAILED (not RUNNING forever); re-run on a new
cluster, it resumes from the last checkpoint."""

from __future__ import annotations

import subprocess
import sys

from resseg_ray.train import tracking
from tests.helpers import ROOT, small_train_overrides
from tests.ray_nodes import LocalCluster


def _train(cluster: LocalCluster, overrides: list[str]) -> subprocess.Popen:
    args = [a for o in overrides for a in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "train.py"), *args],
        env={**cluster.env, "RAY_ADDRESS": cluster.gcs},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_lost_cluster_is_said_marked_failed_and_resumed(small_demo, tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = {"scaling.num_workers": 1, "scaling.cpus_per_worker": 1, "mlflow.registered_model": "null"}
    overrides = small_train_overrides(
        small_demo.root, str(tmp_path / "runs"), db, "lost", **{**common, "train.epochs": 30}
    )
    cluster = LocalCluster()
    try:
        cluster.start_head(num_cpus=2)
        gcs = cluster.gcs
        job = _train(cluster, overrides)
        assert job.stdout is not None
        for line in job.stdout:  # the first epoch is checkpointed: lose the cluster now
            if line.startswith("epoch 1/30"):
                break
        else:
            raise AssertionError(f"no epoch line; stderr: {job.stderr.read() if job.stderr else ''}")
        cluster.shutdown()
        out, err = job.communicate(timeout=120)
    finally:
        cluster.shutdown()
    assert job.returncode == 2, f"stdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    lines = [line for line in err.strip().splitlines() if not line.startswith(("warning:", "["))]
    port = gcs.rsplit(":", 1)[1]  # Ray names the head by its node address
    assert len(lines) == 1, err[-3000:]  # none of Ray's chatter, no traceback
    assert (
        lines[0].startswith("error: the Ray cluster at ")
        and f":{port} went away while training run lost" in lines[0]
    )
    assert "re-run the same command" in lines[0]
    c = tracking.client(db)
    (run,) = c.search_runs([c.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"
    done = max(m.step for m in c.get_metric_history(run.info.run_id, "val_loss"))

    # the same command on a new cluster goes on from the last checkpoint (a shorter schedule)
    again = LocalCluster()
    try:
        again.start_head(num_cpus=2)
        more = small_train_overrides(
            small_demo.root, str(tmp_path / "runs"), db, "lost", **{**common, "train.epochs": done + 1}
        )
        job = _train(again, more)
        out, err = job.communicate(timeout=600)
    finally:
        again.shutdown()
    assert job.returncode == 0, err[-3000:]
    assert "resuming run lost" in out + err
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val_loss")]
    # from the last checkpoint: at most the epoch in flight when the cluster went is trained again
    assert sorted(set(steps)) == list(range(1, done + 2)) and len(steps) <= done + 2, steps
    assert c.get_run(run.info.run_id).info.status == "FINISHED"
