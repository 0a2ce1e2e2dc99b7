"""Shared fixtures: deterministic seeds, one Ray instance and one moto S3 server per session,
small GeoTIFF writers, and models with non-trivial BatchNorm statistics."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

# Fake credentials for the local moto endpoint; set before anything (Ray workers included)
# starts, so no test can reach a real AWS account.
for _k, _v in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_k] = _v
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_ENDPOINT_URL_S3", None)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running stats and affine parameters, so that
    tests comparing outputs (bundles, folding) cannot pass on identity BatchNorms."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
    return model


# Ports for test servers come from 20000-32767: above Ray's worker ports (10002-19999) and
# below the kernel's ephemeral range (32768-60999), from which outgoing connections take
# their source ports. A port asked of the kernel with bind(0) is an ephemeral one: between
# closing the probe socket and the server binding it, any client connection can take it.
_PORT_RANGE = (20000, 32767)
_ports_given: set[int] = set()
_port_rng = random.Random(os.getpid())


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and was not handed out before in this session."""
    for _ in range(1000):
        port = _port_rng.randint(*_PORT_RANGE)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {_PORT_RANGE} after 1000 tries")


def poll(check, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Call ``check`` until it returns a truthy value or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not ready yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s (last error: {last})")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 endpoint (moto server) on 127.0.0.1, for the whole session."""
    port = _free_port()
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


SMALL_DATA = [
    "data.tile_size=96",
    "data.stride=48",
    "data.crop_size=64",
    "data.split_block=192",
    "data.stats_block=256",
    "data.loader_batch=8",
    "data.loader_num_cpus=0.5",
]
"""Overrides that scale the paper's tiling down to the small test scenes."""


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


ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``jobs/<script>`` as a user does: a subprocess from the repository root."""
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server`` process on 127.0.0.1 (SQLite store, served artifacts)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
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


def small_train_overrides(
    dataset: str, storage: str, tracking_uri: str, name: str, **extra: object
) -> list[str]:
    """Overrides for a quick 2-worker CPU training on the small demo (prop18, 64 px crops)."""
    items = {
        "train.dataset": dataset,
        "model.arch": "prop18",
        "train.epochs": 3,
        "train.batch_size": 4,
        "train.train_tiles_per_epoch": 16,
        "train.val_tiles": 8,
        "train.patience": 0,
        "train.quicklook_samples": 2,
        "scaling.num_workers": 2,
        "scaling.cpus_per_worker": 0.5,
        "scaling.torch_threads": 1,
        "run.name": name,
        "run.storage_path": storage,
        "mlflow.tracking_uri": tracking_uri,
        "mlflow.experiment": "tests",
        "mlflow.registered_model": "test-buildings",
        **extra,
    }
    return [*SMALL_DATA, *(f"{k}={v}" for k, v in items.items())]
