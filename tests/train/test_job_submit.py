"""`ray job submit` of jobs/train.py to a `ray start --head` cluster (token authentication on)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from resseg_ray.train import tracking
from tests.conftest import ROOT, _free_port, poll, small_train_overrides

BIN = Path(sys.executable).parent


@pytest.fixture
def head_node():
    """A separate single-node Ray cluster started with `ray start --head --block`."""
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash = _free_port(), _free_port()
    # every per-node port of its own: the test session's Ray instance holds the defaults
    ports = [
        f"--{name}={_free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
            "node-manager-port",
            "object-manager-port",
        )
    ]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--temp-dir={temp}",
            "--include-dashboard=true",
            *ports,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash}"

    def dashboard_up() -> bool:
        try:
            return urllib.request.urlopen(url + "/api/version", timeout=2).status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for the token

    try:
        poll(dashboard_up, timeout=120, interval=0.5, what="Ray dashboard of `ray start --head`")

        def accepts_jobs() -> bool:  # the job agent starts after the dashboard
            probe = subprocess.run(
                [
                    str(BIN / "ray"),
                    "job",
                    "submit",
                    "--address",
                    url,
                    "--no-wait",
                    "--",
                    "python",
                    "-c",
                    "pass",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            return probe.returncode == 0

        poll(accepts_jobs, timeout=120, interval=1.0, what="job agent of `ray start --head`")
        yield url, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


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
