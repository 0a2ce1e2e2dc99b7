"""The typed report of a depth comparison (:class:`~resseg_ray.experiments.compare_depths.Comparison`)
as JSON (``resseg compare-depths --report FILE``): per architecture its training run (as the
train command's report) and its scores on the test scenes, the Table II markdown and where
the runs are in MLflow."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from resseg_ray.evaluation.report import evaluation_doc
from resseg_ray.jsondoc import dump_json

if TYPE_CHECKING:
    from resseg_ray.experiments.compare_depths import Comparison

FORMAT = "resseg-comparison-report/1"
"""The ``format`` of the JSON report."""


def comparison_json(c: Comparison) -> str:
    """The comparison as a JSON document (:data:`FORMAT`)."""
    return dump_json(
        {
            "format": FORMAT,
            "tracking_uri": c.tracking_uri,
            "experiment_id": c.experiment_id,
            "parent_run_id": c.parent_run_id,
            "archs": {
                arch: {"run": asdict(run), "test": evaluation_doc(c.evaluations[arch], arch)}
                for arch, run in c.runs.items()
            },
            "table": c.table,
        }
    )
