"""A damage network refined on a pair, as a building network is on a scene: the pair stacked
and its damage footprints burned in the run folder, trained inside the annotated area only,
its verdict taken by the xView2 score on annotated blocks kept out of training, scored on the
rest of the pair, registered under the damage task's own name; a network given the wrong
kind of input (a pair for a building network, one scene for a damage network) is refused
before anything is written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio

from resseg_ray.data.pairs import CLASS_NAMES
from resseg_ray.demo.events import default_events, write_event
from resseg_ray.models import build_model
from resseg_ray.models.bundle import save_bundle
from resseg_ray.train import tracking
from tests.helpers import run_here

REFINE_DATA = ["data.tile_size=64", "data.stride=16", "data.crop_size=64", "data.split_block=64"]
BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(scope="module")
def event(tmp_path_factory) -> dict:
    """The demo's unseen storm, small: pre, post (another sensor, another grid) and damage."""
    _, test = default_events(0.3)
    storm = next(e for e in test if e.name == "storm_01")
    return write_event(storm, str(tmp_path_factory.mktemp("storm")))


@pytest.fixture(scope="module")
def blind_damage_parent(tmp_path_factory) -> str:
    """A damage network whose classifier says 'background' everywhere: xView2 score 0 on any
    pair, so the refined model cannot score below it and ships (train.min_gain=0)."""
    import torch

    model = build_model("damage-prop18", in_bands=8, num_classes=len(CLASS_NAMES))
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([30.0, -30.0, -30.0, -30.0, -30.0]))
    path = tmp_path_factory.mktemp("damage-parent") / "damage.resseg.safetensors"
    save_bundle(
        path, model, norm_mean=[0.0] * 8, norm_std=[1.0] * 8,
        band_names=[f"pre:{b}" for b in BANDS] + [f"post:{b}" for b in BANDS], class_names=CLASS_NAMES,
        extra={"normalization": "per_scene", "mlflow_run_id": "damage-parent-run"},
    )  # fmt: skip
    return str(path)


def _sets(tmp_path, mlflow_server: str, *extra: str) -> list[str]:
    sets = [*REFINE_DATA, f"mlflow.tracking_uri={mlflow_server}", "mlflow.registered_model=test-{task}",
            f"run.storage_path={tmp_path}", "scaling.cpus_per_worker=0.5", "data.loader_num_cpus=0.5",
            *extra]  # fmt: skip
    return [x for o in sets for x in ("--set", o)]


def test_a_damage_network_is_refined_on_a_pair_and_judged_by_the_xview2_score(
    event, blind_damage_parent, mlflow_server, tmp_path, ray_session, capsys
) -> None:
    report = tmp_path / "refine.json"
    args = ["--model", blind_damage_parent, "--pre", event["pre"], "--post", event["post"],
            "--footprints", event["damage"], "--fraction", "0.3", "--report", str(report),
            *_sets(tmp_path, mlflow_server, "run.name=storm", "train.epochs=1",
                   "train.min_gain=0")]  # fmt: skip
    proc = run_here("finetune.py", *args, capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the pair stacked on the pre grid (pre bands, then post) and its damage raster, in the run
    run_dir = tmp_path / "storm"
    with rasterio.open(run_dir / "storm_01_pair.tif") as pair, rasterio.open(event["pre"]) as pre:
        assert pair.count == 8 and pair.descriptions[4] == "post:blue"
        assert (pair.width, pair.height, pair.transform) == (pre.width, pre.height, pre.transform)
    with rasterio.open(run_dir / "storm_01_damage_labels.tif") as lab:
        values = set(np.unique(lab.read(1)).tolist())
    assert values <= {0, 1, 2, 3, 4, 255} and len(values - {0, 255}) >= 2  # graded buildings
    with rasterio.open(run_dir / "labels" / "storm_01_refine_labels.tif") as r:
        assert set(np.unique(r.read(1)).tolist()) - {0, 255}  # damage classes to learn in the area

    # the verdict and every score are the xView2 score's; the table says so
    doc = json.loads(report.read_text())
    assert doc["scene"] == event["pre"] and doc["post"] == event["post"]
    verdict = doc["verdict"]
    assert verdict["measure"] == "xView2 score of the grades present" and verdict["f1"]["parent"] < 1e-5
    assert verdict["chosen"] == "refined" and verdict["ships"] is True
    assert verdict["line"].startswith("kept the refined model: xView2 score of the grades present on ")
    assert verdict["line"] in proc.stdout
    rest = doc["rest_of_scene"]
    assert set(rest) == {"parent", "adapted", "refined"} and rest["parent"]["score"] < 1e-5
    for m in rest.values():
        assert m["score"] == pytest.approx(0.3 * m["localization_f1"] + 0.7 * m["damage_f1"])
    assert "score / localization_f1 / damage_f1 in %" in proc.stdout

    # registered under the damage task's own name, never the building model's
    c = tracking.client(mlflow_server)
    version = c.get_model_version_by_alias("test-damage", "refined-storm_01")
    assert str(version.version) == doc["registered_version"] and version.run_id == doc["mlflow_run_id"]
    tags = c.get_run(doc["mlflow_run_id"]).data.tags
    assert tags["resseg.refined_post"] == event["post"] and tags["resseg.refine_kept"] == "refined"


def test_a_network_given_the_wrong_kind_of_input_is_refused(
    event, blind_damage_parent, small_demo, mlflow_server, tmp_path, ray_session, capsys
) -> None:
    test_scene = next(s for s in small_demo.scenes if s.role == "test")
    buildings = tmp_path / "buildings.resseg.safetensors"
    save_bundle(buildings, build_model("prop18", in_bands=4), norm_mean=[0.0] * 4, norm_std=[1.0] * 4)
    sets = _sets(tmp_path / "runs", mlflow_server)
    folder = os.path.dirname(event["pre"])
    pair = ["--pre", event["pre"], "--post", event["post"], "--footprints", event["damage"],
            "--fraction", "0.3"]  # fmt: skip
    cases = [
        (["--model", str(buildings), *pair], "is a building network (prop18): it refines on one scene"),
        (["--model", blind_damage_parent, "--scene", test_scene.uri, "--labels", test_scene.label_uri,
          "--fraction", "0.3"], "is a damage network (damage-prop18): it refines on a pair"),
        (["--model", blind_damage_parent, "--scene", event["pre"], *pair], "one of the two"),
        (["--model", blind_damage_parent, "--pre", event["pre"], "--fraction", "0.3"], "one of the two"),
        (["--model", blind_damage_parent, "--pre", folder, "--post", event["post"], "--fraction", "0.3"],
         f"--pre {folder} gives 2 scenes"),  # a folder holding the pre and the post scene
    ]  # fmt: skip
    for args, said in cases:
        proc = run_here("finetune.py", *args, *sets, capsys=capsys)
        assert proc.returncode == 2 and said in proc.stderr, (args, proc.stderr[-2000:])
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing written
