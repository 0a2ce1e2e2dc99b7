"""The refinement's typed report (``resseg finetune --report FILE.json``): the area, the
verdict with the held-out figures it was chosen on, the rest of the scene scored per model
and what was made, as strict JSON."""

from __future__ import annotations

import json

import numpy as np

from resseg_ray.adapt.area import AreaLabels
from resseg_ray.adapt.gate import Verdict
from resseg_ray.adapt.refine import RefineResult
from resseg_ray.adapt.report import refine_json
from resseg_ray.evaluation.metrics import Confusion
from resseg_ray.evaluation.scenes import SceneScore


def _score(tp: int, fp: int, fn: int, tn: int) -> SceneScore:
    return SceneScore("D12", "s3://b/D12.tif", Confusion(np.array([[tn, fp], [fn, tp]], np.int64)), 2.0, 1.5)


def test_the_report_says_what_was_kept_on_which_figures() -> None:
    verdict = Verdict(
        chosen="adapted",
        f1={"refined": 0.80, "parent": 0.78, "adapted": 0.83},
        accuracy={"refined": 0.95, "parent": 0.94, "adapted": 0.96},
        pixels=5120,
        blocks=3,
        min_gain=0.005,
    )
    r = RefineResult(
        scene="s3://b/D12.tif",
        area=AreaLabels("/tmp/r.tif", "/tmp/e.tif", 0.07, 5000, 60000),
        before=_score(80, 20, 20, 880),
        adapted=_score(85, 15, 15, 885),
        after=None,  # not scored: the rest of the scene is unlabelled here
        bundle_uri="/runs/refine/model.resseg.safetensors",
        mlflow_run_id="abc",
        registered_version=None,
        verdict=verdict,
    )
    doc = json.loads(refine_json(r, "models:/resseg-buildings@best"))
    assert doc["format"] == "resseg-refine-report/1" and doc["parent"] == "models:/resseg-buildings@best"
    assert doc["area"]["fraction"] == 0.07 and doc["area"]["refine_pixels"] == 5000
    v = doc["verdict"]
    assert v["chosen"] == "adapted" and v["ships"] is False and v["pixels"] == 5120
    assert v["f1"] == {"refined": 0.80, "parent": 0.78, "adapted": 0.83} and v["line"] == verdict.line()
    assert set(doc["rest_of_scene"]) == {"parent", "adapted"}  # the refined model was not scored
    assert doc["rest_of_scene"]["parent"]["f1"] == 0.8 and doc["rest_of_scene"]["adapted"]["f1"] == 0.85
    assert doc["registered_version"] is None and doc["mlflow_run_id"] == "abc"


def test_held_out_blocks_without_a_building_keep_the_parent_and_say_why() -> None:
    """Held-out pixels of ground alone score every model alike (F1 1.0 when none predicts a
    building): the verdict keeps the parent, whatever the figures, and says why; with building
    pixels it decides by F1 as usual."""
    from resseg_ray.adapt.gate import decide

    def scores(refined_fp: int) -> dict[str, Confusion]:
        ground = {
            "parent": [[1000, 9], [0, 0]],
            "adapted": [[1000, 5], [0, 0]],
            "refined": [[1000, refined_fp], [0, 0]],
        }
        return {k: Confusion(np.array(v, np.int64)) for k, v in ground.items()}

    v = decide(scores(0), blocks=1, min_gain=0.01)
    assert v.chosen == "parent" and not v.ships and v.building_pixels == 0
    assert "no building lies in them, so they cannot tell the models apart" in v.line()
    assert v.to_dict()["building_pixels"] == 0
    roofs = {
        "parent": Confusion(np.array([[900, 20], [40, 60]], np.int64)),
        "adapted": Confusion(np.array([[900, 20], [30, 70]], np.int64)),
        "refined": Confusion(np.array([[910, 10], [10, 90]], np.int64)),
    }
    v = decide(roofs, blocks=1, min_gain=0.01)
    assert v.ships and v.building_pixels == 100 and v.line().startswith("kept the refined model: F1 on 1020 ")
