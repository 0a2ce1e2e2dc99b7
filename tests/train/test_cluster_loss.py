"""A job attached to a Ray cluster that goes away mid-run: one error line saying what was
lost and how to go on, exit 2, its MLflow run FAILED (not RUNNING forever); re-run on a new
cluster, it resumes from the last checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

from resseg_ray.train import tracking
from tests.helpers import ROOT, small_train_overrides
from tests.ray_nodes import LocalCluster


def _train(cluster: LocalCluster, overrides: list[str], *extra: str) -> subprocess.Popen:
    args = [a for o in overrides for a in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "train.py"), *args, *extra],
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
        cluster.start_head(num_cpus=2, dashboard=False)
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
        again.start_head(num_cpus=2, dashboard=False)
        more = small_train_overrides(
            small_demo.root, str(tmp_path / "runs"), db, "lost", **{**common, "train.epochs": done + 1}
        )
        job = _train(again, more, "--report", str(tmp_path / "report.json"))
        out, err = job.communicate(timeout=600)
    finally:
        again.shutdown()
    assert job.returncode == 0, err[-3000:]
    assert "resuming run lost" in out + err
    report = json.loads((tmp_path / "report.json").read_text())  # the run's typed report
    assert report["format"] == "resseg-train-report/1" and report["run_name"] == "lost"
    assert report["resumed"] and report["mlflow_run_id"] == run.info.run_id
    assert report["progress"]["epochs_done"] == done + 1 and report["registered_version"] is None
    assert [h["epoch"] for h in report["progress"]["history"]][-1] == done + 1
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val_loss")]
    # from the last checkpoint: at most the epoch in flight when the cluster went is trained again
    assert sorted(set(steps)) == list(range(1, done + 2)) and len(steps) <= done + 2, steps
    assert c.get_run(run.info.run_id).info.status == "FINISHED"


HOLD = """
import signal, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=1)
class Hold:
    def ready(self):
        return True

holder = Hold.remote()
ray.get(holder.ready.remote())
print("held", flush=True)
signal.pause()
"""


def test_a_job_on_a_busy_instance_says_which_and_what_it_waits_for(small_demo, tmp_path) -> None:
    """A job that joins a Ray instance whose CPU another program holds (as ``serve run`` holds a
    small machine's for its replicas) says in one line which instance it joined and what is
    free, then, within seconds, what it waits for and how to run on its own instance."""
    import threading

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = small_train_overrides(
        small_demo.root, str(tmp_path / "runs"), db, "busy",
        **{"scaling.num_workers": 1, "scaling.cpus_per_worker": 0.5, "mlflow.registered_model": "null"},
    )  # fmt: skip
    cluster = LocalCluster()
    holder = job = None
    try:
        cluster.start_head(num_cpus=1, dashboard=False)
        holder = subprocess.Popen([sys.executable, "-c", HOLD, cluster.gcs], env=cluster.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        job = _train(cluster, overrides)
        deadline = threading.Timer(180, job.kill)  # the job would wait for the CPU forever
        deadline.start()
        seen: list[str] = []
        assert job.stdout is not None
        for line in job.stdout:
            seen.append(line.rstrip())
            if line.startswith("waiting for Ray resources"):
                break
        deadline.cancel()
    finally:
        for proc in (job, holder):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
        cluster.shutdown()
    joined = [s for s in seen if s.startswith("Ray: joined the running Ray instance at ")]
    assert joined and joined[0].endswith(": 1 CPUs (0 free)") and "RAY_ADDRESS=local" in joined[0], seen
    waiting = seen[-1]
    port = cluster.gcs.rsplit(":", 1)[1]  # Ray names the head by its node address
    assert waiting.startswith("waiting for Ray resources at ") and f":{port}: " in waiting, seen
    # its small epochs are read in its worker (data.local_loader_tiles): no loader CPUs reserved
    assert "reserves 0.5 CPUs (scaling.num_workers x scaling.cpus_per_worker) and" in waiting
    assert "0 of the instance's 1 are free" in waiting
    assert waiting.endswith("start it again with RAY_ADDRESS=local")
