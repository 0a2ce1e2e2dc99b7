"""The service's configuration: the production Serve config validates against Ray's schema
and names the code's deployments; inconsistent batching/autoscaling settings and a missing
model are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from resseg_ray.config import load_config
from resseg_ray.errors import ConfigError
from resseg_ray.serving.app import model_uri

ROOT = Path(__file__).resolve().parents[2]


def test_production_configs_are_valid_and_consistent() -> None:
    from ray.serve.schema import ServeDeploySchema

    deploy = ServeDeploySchema.model_validate(
        yaml.safe_load((ROOT / "configs/serve_production.yaml").read_text())
    )
    (app,) = deploy.applications
    assert app.import_path == "serve_app:app"
    names = {d.name: d for d in app.deployments}
    assert set(names) == {"SegmentModel", "SegmentAPI"}
    model = names["SegmentModel"]
    assert model.autoscaling_config["target_ongoing_requests"] <= model.max_ongoing_requests
    cfg = load_config(ROOT / app.runtime_env["env_vars"]["RESSEG_CONFIG"])
    assert cfg.serve.max_batch_size <= model.max_ongoing_requests
    assert cfg.serve.target <= cfg.serve.ongoing


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("serve.target_ongoing_requests=40", r"never scale up"),
        ("serve.max_ongoing_requests=4", r"below serve.max_batch_size"),
        ("serve.allowed_prefixes=[/data/]", r"not an s3://bucket"),
        ("serve.min_replicas=3", r"min_replicas \(3\) must be <= serve.max_replicas"),
    ],
)
def test_inconsistent_settings_are_refused(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_a_missing_model_says_how_to_get_one(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("RESSEG_MODEL", raising=False)
    with pytest.raises(ConfigError, match=r"make demo.*RESSEG_MODEL"):
        model_uri(load_config(None, [f"serve.model={tmp_path / 'none.resseg.safetensors'}"]))
    monkeypatch.setenv("RESSEG_MODEL", "models:/resseg-buildings@best")
    assert model_uri(load_config(None)) == "models:/resseg-buildings@best"


def test_map_catalogs_missing_are_said_before_serve_starts(tmp_path, monkeypatch) -> None:
    from resseg_ray.serving.app import map_catalogs

    with pytest.raises(ConfigError, match=r"map_catalogs: .*none/catalog.json does not exist.*make demo"):
        map_catalogs(load_config(None, [f"serve.map_catalogs=[{tmp_path / 'none' / 'catalog.json'}]"]))
    monkeypatch.chdir(tmp_path)  # no demo maps here: the page starts with no scene
    assert map_catalogs(load_config(None)) == []
    (tmp_path / "runs" / "demo-maps").mkdir(parents=True)
    (tmp_path / "runs" / "demo-maps" / "catalog.json").write_text("{}")
    assert map_catalogs(load_config(None)) == [str(tmp_path / "runs" / "demo-maps" / "catalog.json")]
