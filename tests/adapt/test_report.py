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
