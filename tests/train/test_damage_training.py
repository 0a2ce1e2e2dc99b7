"""A Siamese damage network trained on Ray Train, tracked in MLflow, as a building network is:
on a damage data set of the demo's events, started from a building model (the two-stage
recipe), with class weights; its epochs are scored as xView2 scores; its bundle names the pre
and post bands and the damage classes. Mismatched tasks fail before any worker starts."""

from __future__ import annotations

import pytest

from resseg_ray.config import load_config
from resseg_ray.data.pairs import CLASS_NAMES, DamagePair, prepare_pairs
from resseg_ray.demo.events import default_events, write_event
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.models import build_model, load_bundle, save_bundle
from resseg_ray.train import tracking
from resseg_ray.train.trainer import run_training
from tests.helpers import SMALL_DATA, small_train_overrides

pytestmark = pytest.mark.usefixtures("ray_session")
DAMAGE = [f"model.class_names={CLASS_NAMES}", "model.arch=damage-prop18"]


@pytest.fixture(scope="module")
def damage_data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("damage")
    train, _ = default_events(0.3)
    pairs = []
    for ev in train:
        s = write_event(ev, str(root / "scenes"))
        pairs.append(DamagePair(ev.name, s["pre"], s["post"], s["damage"]))
    prepare_pairs(pairs, str(root / "ds"), load_config(None, [*SMALL_DATA, *DAMAGE]))
    return str(root / "ds")


def test_a_damage_network_trains_from_a_building_model(damage_data, mlflow_server, tmp_path) -> None:
    buildings = tmp_path / "buildings.resseg.safetensors"
    save_bundle(buildings, build_model("prop18", in_bands=4), norm_mean=[0.0] * 4, norm_std=[1.0] * 4)
    overrides = small_train_overrides(
        damage_data, str(tmp_path / "runs"), mlflow_server, "damage",
        **{"train.epochs": 1, "scaling.num_workers": 1, "scaling.cpus_per_worker": 1,
           "scaling.in_process": True,  # Ray Train's workers train a damage network in test_refine_damage
           "mlflow.registered_model": "null", "train.class_weights": "[1, 1, 3, 2, 2]",
           "model.init_from": str(buildings), "train.select": "val_f1"},
    )  # fmt: skip
    cfg = load_config(None, [*overrides, *DAMAGE])
    result = run_training(cfg, log=lambda _: None)
    assert result.progress.epochs_done == 1
    c = tracking.client(mlflow_server)
    run = c.get_run(result.mlflow_run_id)
    p, m = run.data.params, run.data.metrics
    assert p["family"] == "damage" and p["depth"] == "18" and p["in_bands"] == "8"
    assert p["init_from"] == str(buildings) and p["class_weights"] == "1.0,1.0,3.0,2.0,2.0"
    for key in ("val_localization_f1", "val_damage_f1", "val_f1_no-damage", "val_f1_destroyed"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["val_score"] == pytest.approx(0.3 * m["val_localization_f1"] + 0.7 * m["val_damage_f1"])
    # what selects the epoch: the score over the grades present in the validation blocks
    assert m["val_f1"] == pytest.approx(0.3 * m["val_localization_f1"] + 0.7 * m["val_damage_f1_present"])
    assert m["val_f1"] >= m["val_score"] - 1e-9
    bundle = load_bundle(result.bundle_uri)
    assert bundle.info.architecture == "damage-prop18" and bundle.info.class_names == CLASS_NAMES
    names = ["blue", "green", "red", "nir"]
    assert bundle.info.band_names == [f"pre:{n}" for n in names] + [f"post:{n}" for n in names]
    assert len(bundle.info.norm_mean) == 8  # the pre and the post sensor each normalised


def test_mismatched_tasks_fail_before_training(damage_data, small_demo, mlflow_server, tmp_path) -> None:
    def overrides(dataset: str, *extra: str) -> list[str]:
        return [*small_train_overrides(dataset, str(tmp_path), mlflow_server, "x"), *extra]

    with pytest.raises(InputDataError, match="is not a damage data set"):
        run_training(load_config(None, overrides(small_demo.root, *DAMAGE)), log=lambda _: None)
    with pytest.raises(ConfigError, match=r"model\.init_from starts a damage network"):
        run_training(load_config(None, overrides(small_demo.root, "model.init_from=b.safetensors")))
    with pytest.raises(ConfigError, match=r"damage-prop18 maps damage: model\.class_names must be"):
        run_training(load_config(None, overrides(damage_data, "model.arch=damage-prop18")))
    with pytest.raises(ConfigError, match=r"train\.class_weights has 3 weights for 2 classes"):
        load_config(None, ["train.class_weights=[1, 2, 3]"])
