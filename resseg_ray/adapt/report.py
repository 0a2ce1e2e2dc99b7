"""The typed report of a refinement (:class:`~resseg_ray.adapt.refine.RefineResult`) as JSON
(``resseg finetune --report FILE.json``): the annotated area, the verdict with the held-out
figures it was chosen on, the rest of the scene scored per model, and what was made."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from resseg_ray.evaluation.scenes import Evaluation
from resseg_ray.jsondoc import dump_json

if TYPE_CHECKING:
    from resseg_ray.adapt.refine import RefineResult

FORMAT = "resseg-refine-report/1"
"""The ``format`` of the JSON report."""


def refine_json(r: RefineResult, parent: str) -> str:
    """The refinement of ``parent`` (the model given) as a JSON document (:data:`FORMAT`).
    ``post`` is a damage refinement's post-event scene (``scene`` its pre-event one), else null.
    ``rest_of_scene`` holds the metrics of the scene outside the annotated area for each model
    scored there (``parent``, ``adapted``: BatchNorm re-estimated, ``refined``); it is empty
    when the scene has no labels there."""
    scored = {"parent": r.before, "adapted": r.adapted, "refined": r.after}
    verdict: dict[str, Any] | None = None
    if r.verdict is not None:
        verdict = {**r.verdict.to_dict(), "ships": r.verdict.ships}
    return dump_json(
        {
            "format": FORMAT,
            "scene": r.scene,
            "post": r.post,
            "parent": parent,
            "area": asdict(r.area),
            "verdict": verdict,
            "rest_of_scene": {k: Evaluation([s]).mean() for k, s in scored.items() if s is not None},
            "bundle_uri": r.bundle_uri,
            "mlflow_run_id": r.mlflow_run_id,
            "registered_version": r.registered_version,
        }
    )
