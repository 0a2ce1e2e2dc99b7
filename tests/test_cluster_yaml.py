"""cluster.yaml is a valid Ray cluster-launcher config (Ray's own schema and checks) that
matches the project: pinned Ray and Python in the images, the project installed with its
tested dependency set, token authentication, an MLflow server on the head, GPU workers
autoscaling from zero (on demand and spot)."""

from __future__ import annotations

import copy
import re
import sys

import pytest
import ray
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.helpers import ROOT

CLUSTER = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _validated(raw: dict) -> dict:
    cfg = prepare_config(copy.deepcopy(raw))  # Ray's defaults for AWS, as `ray up` does
    validate_config(cfg)
    return cfg


def test_cluster_yaml_passes_rays_schema(raw) -> None:
    cfg = _validated(raw)
    assert cfg["provider"]["type"] == "aws"
    assert cfg["head_node_type"] == "head"
    assert cfg["idle_timeout_minutes"] > 0


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda c: c["available_node_types"]["gpu"].update(resources={"GPU": 0.5}), ValidationError),
        (lambda c: c.update(head_node_type="missing"), ValueError),
        (lambda c: c.update(unknown_field=1), ValidationError),
    ],
)
def test_a_broken_copy_is_rejected(raw, edit, error) -> None:
    broken = copy.deepcopy(raw)
    edit(broken)
    with pytest.raises(error):
        _validated(broken)


def test_images_match_the_pinned_ray_and_python(raw) -> None:
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    docker = raw["docker"]
    assert docker["head_image"] == f"rayproject/ray:{ray.__version__}-{py}-cpu"
    assert docker["worker_image"] == f"rayproject/ray:{ray.__version__}-{py}-gpu"
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"ray\[train,data,serve\]>=([\d.]+),<([\d.]+)"', pyproject)
    assert pin and pin.group(1) <= ray.__version__ < pin.group(2)


def test_every_node_installs_the_project_with_the_tested_dependency_set(raw) -> None:
    assert raw["file_mounts"]["/home/ray/resseg-ray"] == "."
    (install,) = raw["setup_commands"]
    assert "-c /home/ray/resseg-ray/constraints.txt -e /home/ray/resseg-ray" in install
    for ignored in (".venv", "data", "runs", "mlruns"):
        assert ignored in raw["rsync_exclude"]


def test_token_auth_and_mlflow_on_the_head(raw) -> None:
    assert "-e RAY_AUTH_MODE=token" in raw["docker"]["run_options"]
    assert raw["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    head = " ".join(raw["head_start_ray_commands"])
    assert "mlflow server" in head and "--artifacts-destination s3://" in head
    assert "MLFLOW_TRACKING_URI=" in head and "ray start --head" in head
    worker = " ".join(raw["worker_start_ray_commands"])
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in worker


def test_gpu_workers_autoscale_from_zero_on_demand_and_spot(raw) -> None:
    types = raw["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}  # nothing heavy on the head
    for name in ("gpu", "gpu_spot"):
        assert types[name]["min_workers"] == 0 and types[name]["max_workers"] >= 1
        assert types[name]["node_config"]["InstanceType"].startswith(("g5.", "g6."))
    assert types["gpu_spot"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in types["gpu"]["node_config"]
