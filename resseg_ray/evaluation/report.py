"""The typed report of an evaluation (:class:`~resseg_ray.evaluation.scenes.Evaluation`) as
JSON (``resseg evaluate --report FILE.json``): each scene's metrics and confusion counts, the
mean over scenes (the paper's) and the metrics of all pixels together."""

from __future__ import annotations

from typing import Any

from resseg_ray.evaluation.scenes import Evaluation
from resseg_ray.jsondoc import dump_json

FORMAT = "resseg-evaluation-report/1"
"""The ``format`` of the JSON report."""


def evaluation_doc(ev: Evaluation, name: str) -> dict[str, Any]:
    """The evaluation as plain data: ``name`` (the table's row), per scene its name, URI,
    metrics, confusion counts (rows: true class, columns: predicted) and time, the mean and the
    pooled metrics."""
    return {
        "name": name,
        "scenes": [
            {
                "name": s.name,
                "uri": s.uri,
                "metrics": s.metrics,
                "confusion": s.confusion.counts.tolist(),
                "seconds": s.seconds,
                "megapixels": s.megapixels,
            }
            for s in ev.scenes
        ],
        "mean": ev.mean(),
        "pooled": ev.pooled(),
    }


def evaluation_json(ev: Evaluation, name: str) -> str:
    """The evaluation as a JSON document (:data:`FORMAT`)."""
    return dump_json({"format": FORMAT, **evaluation_doc(ev, name)})
