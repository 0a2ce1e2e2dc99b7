"""`ray job submit` of jobs/train.py to a `ray start --head` cluster (token authentication on)."""

from __future__ import annotations

import subprocess

import pytest

from resseg_ray.train import tracking
from tests.helpers import ROOT, small_train_overrides
from tests.ray_nodes import BIN, LocalCluster


@pytest.fixture(scope="module")
def head_node():
    """A separate single-node Ray cluster started with `ray start --head --block`, shared by
    this module's tests (starting one costs ~7 s)."""
    cluster = LocalCluster()
    try:
        cluster.start_head(num_cpus=2)
        yield cluster.url, cluster.env
    finally:
        cluster.shutdown()


def test_ray_job_submit_trains_and_tracks(head_node, small_demo, tmp_path) -> None:
    url, env = head_node
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = small_train_overrides(
        small_demo.root,
        str(tmp_path / "runs"),
        db,
        "submitted",
        **{"scaling.num_workers": 1, "train.epochs": 1, "mlflow.registered_model": "null"},
    )
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        url,
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "jobs/train.py",
        *[a for o in overrides for a in ("--set", o)],
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "succeeded" in out and "run submitted: 1 epochs" in out
    c = tracking.client(db)
    runs = c.search_runs([c.get_experiment_by_name("tests").experiment_id])
    assert [r.data.tags[tracking.RUN_NAME_TAG] for r in runs] == ["submitted"]
    assert (tmp_path / "runs" / "submitted" / "model.resseg.safetensors").exists()


def test_submit_without_token_is_refused(head_node) -> None:
    url, env = head_node
    env = {**env, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "list", "--address", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
