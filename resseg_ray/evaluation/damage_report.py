"""The typed report of a damage evaluation (:class:`~resseg_ray.evaluation.damage.DamageEvaluation`)
as JSON (``resseg evaluate-damage --report FILE``): per pair and in total the metrics and the
counts they come from."""

from __future__ import annotations

from typing import Any

from resseg_ray.evaluation.damage import DamageCounts, DamageEvaluation
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES
from resseg_ray.jsondoc import dump_json

FORMAT = "resseg-damage-report/1"
"""The ``format`` of the JSON report."""


def _counts_doc(counts: DamageCounts) -> dict[str, Any]:
    return {
        "metrics": counts.metrics(),
        "pixels": counts.pixels.tolist(),
        "buildings": None if counts.buildings is None else counts.buildings.tolist(),
        "absent": counts.absent(),
    }


def damage_doc(ev: DamageEvaluation) -> dict[str, Any]:
    """The evaluation as plain data: the class names in raster order (1..4), per pair its
    name, URIs, time and counts with their metrics, and the total of all pairs."""
    return {
        "classes": list(DAMAGE_CLASSES),
        "pairs": [
            {
                "name": p.name,
                "pred": p.pred_uri,
                "truth": p.truth_uri,
                "seconds": p.seconds,
                **_counts_doc(p.counts),
            }
            for p in ev.pairs
        ],
        "total": _counts_doc(ev.total()),
    }


def damage_json(ev: DamageEvaluation) -> str:
    """The evaluation as a JSON document (:data:`FORMAT`)."""
    return dump_json({"format": FORMAT, **damage_doc(ev)})
