"""A 2-worker training on a real multi-node Ray cluster (separate `ray start` nodes on
127.0.0.1, token authentication on: a client without the token is refused), one worker per
node, checkpoints and the model bundle on the moto S3 endpoint, submitted with
`ray job submit` as a user does; one worker node is killed mid-training, a replacement
joins, and the run completes from the latest checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

import pytest

from resseg_ray.geo.storage import download, filesystem
from resseg_ray.models.bundle import load_bundle
from resseg_ray.train import tracking
from tests.helpers import ROOT, poll, small_train_overrides
from tests.ray_nodes import BIN, LocalCluster

SLOT = {"train_slot": 1}  # one per worker node: a training worker reserves it, so one per node
EPOCHS = 4


@pytest.fixture
def cluster():
    """Head (2 CPUs for the driver and Ray Data, no train slot) and two 1-CPU worker nodes."""
    c = LocalCluster()
    try:
        c.start_head(num_cpus=2, jobs=True)
        first = c.add_node(num_cpus=1, resources=SLOT)
        second = c.add_node(num_cpus=1, resources=SLOT)
        yield c, first, second
    finally:
        c.shutdown()


def _train_workers(c: LocalCluster) -> dict[str, str]:
    """Alive Ray Train worker actors: actor id -> node id."""
    actors = c.state("actors", "state=ALIVE", "class_name=RayTrainWorker")
    return {a["actor_id"]: a["node_id"] for a in actors}


def test_training_survives_the_loss_of_a_node(
    cluster, small_demo, mlflow_server, moto_endpoint, s3_bucket, s3_settings
) -> None:
    c, first, second = cluster
    slot_nodes = {first.node_id, second.node_id}
    name = "node-loss"
    overrides = small_train_overrides(
        small_demo.root,
        f"{s3_bucket}/runs",
        mlflow_server,
        name,
        **{
            "train.epochs": EPOCHS,
            "scaling.num_workers": 2,
            "scaling.cpus_per_worker": 1,
            "scaling.worker_resources": json.dumps(SLOT),  # JSON is YAML: the same slot
            "run.max_failures": 3,
            "storage.endpoint_url": moto_endpoint,
            "mlflow.registered_model": "null",
        },
    )
    refused = subprocess.run(  # token authentication is on: no token, no access
        [str(BIN / "ray"), "job", "list", "--address", c.url],
        env={**c.env, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode != 0, refused.stdout
    job_id = f"node-loss-{os.getpid()}"
    submit = c.ray(
        "job", "submit", "--address", c.url, "--no-wait", "--submission-id", job_id,
        "--working-dir", str(ROOT), "--",
        "python", "jobs/train.py", *[a for o in overrides for a in ("--set", o)],
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout + submit.stderr

    def running(condition):
        """``condition`` while the job runs; a failed job fails the test with its output."""

        def check() -> bool:
            if c.job_status(job_id) in ("FAILED", "STOPPED"):
                pytest.fail("the job ended early:\n" + c.job_logs(job_id)[-4000:])
            return condition()

        return check

    def wait(condition, timeout: float, what: str) -> None:
        """Poll; on timeout fail with what the cluster was doing (job output, actors)."""
        try:
            poll(running(condition), timeout=timeout, interval=1.0, what=what)
        except TimeoutError as exc:
            actors = [(a["class_name"], a["state"], a["node_id"][:8]) for a in c.state("actors")]
            pytest.fail(f"{exc}\nactors: {actors}\njob output:\n{c.job_logs(job_id)[-4000:]}")

    # both workers up, one on each worker node
    wait(lambda: len(_train_workers(c)) == 2, 240, "two training workers")
    assert set(_train_workers(c).values()) == slot_nodes

    # kill the second worker node once epoch 2 has started writing its checkpoint to S3: by
    # then epoch 1's checkpoint is complete and committed (reports are sequential)
    fs = filesystem(s3_bucket, s3_settings)
    run_dir = f"{s3_bucket}/runs/{name}"

    def second_checkpoint() -> bool:
        fs.invalidate_cache()
        return fs.exists(f"{run_dir}/epoch_0002/state.pt")

    wait(second_checkpoint, 300, "epoch 2 checkpoint on S3")
    c.kill_node(second)
    fs.invalidate_cache()
    assert not fs.exists(f"{run_dir}/epoch_{EPOCHS:04d}"), "training ended before the node was lost"
    replacement = c.add_node(num_cpus=1, resources=SLOT)

    # the new worker group: one worker on the surviving node, one on the replacement
    wait(
        lambda: set(_train_workers(c).values()) == {first.node_id, replacement.node_id},
        300,
        "training workers on the surviving and the replacement node",
    )
    poll(
        lambda: c.job_status(job_id) in ("SUCCEEDED", "FAILED", "STOPPED"),
        timeout=600,
        interval=1.0,
        what="end",
    )
    assert c.job_status(job_id) == "SUCCEEDED", c.job_logs(job_id)[-4000:]

    # the run went on from its latest checkpoint: epochs 1-2 before the loss, no epoch redone
    # from scratch, and restarts counted from the first epoch after the loss
    client = tracking.client(mlflow_server)
    run = next(
        r for r in client.search_runs([client.get_experiment_by_name("tests").experiment_id])
        if r.data.tags.get(tracking.RUN_NAME_TAG) == name
    )  # fmt: skip
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "val_loss")})
    assert steps == list(range(1, EPOCHS + 1))
    restarts = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "restarts")}
    assert restarts[1] == 0 and restarts[EPOCHS] >= 1
    resumed_at = min(step for step, v in restarts.items() if v >= 1)
    assert resumed_at >= 2, f"restarted at epoch {resumed_at}: not from a checkpoint"
    fs.invalidate_cache()
    last = f"{run_dir}/epoch_{EPOCHS:04d}"
    best = f"{last}/best_val_loss.resseg.safetensors"  # or its record, when of the last epoch
    assert fs.exists(f"{last}/state.pt") and (fs.exists(best) or fs.exists(best + ".info.json"))
    with tempfile.TemporaryDirectory() as d:  # the bundle on S3 loads, and says which run made it
        bundle = download(f"{run_dir}/model.resseg.safetensors", d, s3_settings)
        assert load_bundle(bundle).info.extra["run_name"] == name
    assert second.node_id not in {n["node_id"] for n in c.alive_nodes()}
