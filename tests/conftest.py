"""Shared fixtures: deterministic seeds, one Ray instance and one moto S3 server per session,
an MLflow server and the small demo data set (helpers: tests/helpers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import SMALL_DATA, free_port, poll

# Fake credentials for the local moto endpoint; set before anything (Ray workers included)
# starts, so no test can reach a real AWS account.
for _k, _v in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_k] = _v
os.environ.pop("AWS_PROFILE", None)
# Exported graphs and runtime choices (resseg_ray.runtime) of this session only, for every job
# and Ray worker the tests start: nothing read from or left in the user's ~/.cache.
os.environ["RESSEG_CACHE_DIR"] = _CACHE_DIR = tempfile.mkdtemp(prefix="resseg-test-cache-")
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_ENDPOINT_URL_S3", None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's graph cache (gigabytes of exported graphs: left behind, a few
    sessions filled the disk)."""
    import shutil

    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 endpoint (moto server) on 127.0.0.1, for the whole session."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: urllib.request.urlopen(url + "/moto-api/", timeout=1).status == 200, what="moto server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_settings(moto_endpoint: str):
    """Storage settings pointing at the moto endpoint."""
    from resseg_ray.geo.storage import StorageSettings

    return StorageSettings(endpoint_url=moto_endpoint, region="us-east-1")


@pytest.fixture
def s3_bucket(s3_settings, request) -> str:
    """A fresh bucket per test: ``s3://<name>``."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_settings.endpoint_url)
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + f"-{os.getpid()}"
    name = "".join(c for c in name if c.isalnum() or c == "-")[:60]
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray instance for the whole test session (2 CPUs)."""
    import ray

    from resseg_ray.device import ray_runtime_env

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env=ray_runtime_env(),
        )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory, ray_session):
    """The demo set at 1/5 scale, prepared with small tiles (shared by the session)."""
    from resseg_ray.config import load_config
    from resseg_ray.data.prepare import prepare_dataset
    from resseg_ray.demo import DemoSet, default_demo, write_demo_scenes
    from resseg_ray.geo.storage import StorageSettings

    root = tmp_path_factory.mktemp("demo")
    demo = default_demo(0.2)
    summary = write_demo_scenes(str(root / "scenes"), DemoSet(train=demo.train[:3], test=demo.test[:1]))
    cfg = load_config(None, SMALL_DATA)
    return prepare_dataset(
        [s["scene"] for s in summary["train"]],
        str(root / "prepared"),
        cfg,
        footprints=[s["footprints"] for s in summary["train"]],
        test_scenes=[s["scene"] for s in summary["test"]],
        test_footprints=[s["footprints"] for s in summary["test"]],
        settings=StorageSettings(),
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server`` process on 127.0.0.1 (SQLite store, served artifacts)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # no job runner: it starts a dozen huey consumers (~20 CPU-seconds) for GenAI jobs
        # the project never submits
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        poll(
            lambda: urllib.request.urlopen(url + "/health", timeout=1).status == 200,
            timeout=90,
            interval=0.5,
            what=f"mlflow server (log: {root / 'server.log'})",
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
