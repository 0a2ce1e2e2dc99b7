"""The one configuration system: sections, type checks, overrides, 'extends', shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from resseg_ray.config import load_config
from resseg_ray.errors import ConfigError
from resseg_ray.models import list_models

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_extends_merges_field_by_field(tmp_path) -> None:
    (tmp_path / "base.yaml").write_text("train:\n  lr: 0.01\n  epochs: 5\nmodel:\n  arch: prop34\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain:\n  epochs: 7\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.batch_size=4"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size, cfg.model.arch) == (0.01, 7, 4, "prop34")


def test_extends_cycle_is_an_error(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.lr=-0.1", "train.lr must be > 0"),
        ("train.select=val_iou", "train.select must be"),
        ("train.refine_start=scene", "train.refine_start must be one of parent, adapted, got 'scene'"),
        (
            "predict.blend=cosin",
            r"predict.blend \(--blend\) must be one of flat, linear, cosine, got 'cosin'; "
            "did you mean 'cosine'",
        ),
        ("train.l2sp=-1", "train.l2sp must be a strength >= 0"),
        ("train.l2sp=.inf", "train.l2sp must be a finite number"),
        ("scaling.num_workers=0", "scaling.num_workers must be >= 1"),
        ("run.name=has space", "run.name 'has space'"),
        ("train.epochs=many", "train.epochs must be an integer"),
        ("mlflow.experimnt=x", "did you mean 'mlflow.experiment'"),
        ("scaling.worker_resources=3", "scaling.worker_resources must be a mapping"),
        ("scaling.worker_resources={GPU: 1}", "GPU is set by scaling.cpus_per_worker / scaling.use_gpu"),
        (
            "scaling.worker_resources={train_slot: 0}",
            r"scaling.worker_resources.train_slot must be a number > 0",
        ),
        (
            "scaling.worker_resources={train_slot: one}",
            r"scaling.worker_resources.train_slot must be a number",
        ),
    ],
)
def test_bad_fields_are_named(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_shipped_configs_load_and_cover_table_ii() -> None:
    demo = load_config(CONFIGS / "demo.yaml")
    assert demo.model.arch == "prop18" and demo.run.name == "demo-prop18"
    assert demo.data.normalization == "per_scene"
    paper = load_config(CONFIGS / "paper.yaml")
    assert (paper.data.tile_size, paper.data.stride, paper.data.crop_size) == (364, 120, 256)
    assert (paper.train.lr, paper.train.momentum, paper.train.batch_size) == (0.005, 0.9, 8)
    assert (paper.train.lr_step_epochs, paper.train.lr_gamma) == (30, 0.2)
    refine = load_config(CONFIGS / "finetune_demo.yaml")  # bench/refinement.py's best recipe
    assert (refine.train.refine_start, refine.train.freeze_bn) == ("adapted", True)
    assert (refine.train.lr, refine.train.l2sp, refine.train.min_gain) == (0.001, 10.0, 0.01)
    archs = {load_config(p).model.arch for p in CONFIGS.glob("paper_*.yaml")}
    assert archs == set(list_models("buildings"))
    from resseg_ray.data.pairs import CLASS_NAMES

    damage = load_config(CONFIGS / "damage_demo.yaml")  # make demo-damage
    assert damage.model.arch == "damage-prop18" and damage.model.class_names == CLASS_NAMES
    assert damage.train.select == "val_f1" and len(damage.train.class_weights or []) == len(CLASS_NAMES)
    refine_damage = load_config(CONFIGS / "finetune_damage_demo.yaml")  # resseg finetune --pre --post
    assert (
        refine_damage.model.class_names == CLASS_NAMES
        and refine_damage.train.min_gain == refine.train.min_gain
    )


def test_worker_resources_reach_the_config() -> None:
    cfg = load_config(None, ["scaling.worker_resources={train_slot: 1}"])
    assert cfg.scaling.worker_resources == {"train_slot": 1.0}
    assert load_config(None).scaling.worker_resources == {}


def test_a_network_registers_under_its_task_s_name() -> None:
    """The default registry name follows the network's task, so a damage network never moves
    the alias of the building models (models:/resseg-buildings@best stays a building model)."""
    m = load_config(None).mlflow
    assert m.registry_name("buildings") == "resseg-buildings" and m.registry_name("damage") == "resseg-damage"
    assert load_config(None, ["mlflow.registered_model=mine"]).mlflow.registry_name("damage") == "mine"
    assert load_config(None, ["mlflow.registered_model=null"]).mlflow.registry_name("damage") is None
