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
    (tmp_path / "runs" / "demo-damage-maps").mkdir(parents=True)  # make demo-damage's maps too
    (tmp_path / "runs" / "demo-damage-maps" / "catalog.json").write_text("{}")
    assert map_catalogs(load_config(None)) == [
        str(tmp_path / "runs" / d / "catalog.json") for d in ("demo-maps", "demo-damage-maps")
    ]


def test_the_damage_refinements_take_the_damage_demos_schedule(tmp_path, monkeypatch) -> None:
    from resseg_ray.serving.app import refine_config

    monkeypatch.chdir(ROOT)  # the demo configurations are there
    buildings, damage = refine_config(load_config(None)), refine_config(load_config(None), damage=True)
    assert (buildings.data.tile_size, damage.data.tile_size) == (192, 96)
    assert damage.train.class_weights == [1, 1, 2, 2, 1]
    own = tmp_path / "damage-refine.yaml"
    own.write_text("train:\n  epochs: 3\n")
    chosen = refine_config(load_config(None, [f"serve.damage_refine_config={own}"]), damage=True)
    assert chosen.train.epochs == 3
    with pytest.raises(ConfigError, match=r"serve.damage_refine_config: .*nothing.yaml does not exist"):
        missing = f"serve.damage_refine_config={tmp_path / 'nothing.yaml'}"
        refine_config(load_config(None, [missing]), damage=True)
    monkeypatch.chdir(tmp_path)  # no demo configuration: the building refinements' settings
    same = refine_config(load_config(None, [f"serve.refine_config={own}"]), damage=True)
    assert same.train.epochs == 3


def test_the_pages_refinements_train_in_process_unless_told_otherwise(tmp_path) -> None:
    """serve.refine_in_process (default) trains each refinement in its runner with one worker,
    whatever the refinement configuration's scaling; false keeps that scaling."""
    from resseg_ray.serving.app import refine_config

    own = tmp_path / "refine.yaml"
    own.write_text("scaling:\n  num_workers: 2\n  cpus_per_worker: 0.5\n")
    given = [f"serve.refine_config={own}"]
    local = refine_config(load_config(None, given)).scaling
    assert local.in_process and local.num_workers == 1 and local.cpus_per_worker == 0.5
    workers = refine_config(load_config(None, [*given, "serve.refine_in_process=false"])).scaling
    assert not workers.in_process and workers.num_workers == 2
