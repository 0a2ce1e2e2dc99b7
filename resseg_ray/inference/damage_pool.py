"""Pairs mapped on Ray (``resseg damage --actors N``): a Ray Data actor pool whose actors load
the damage network once and map one pair at a time with :func:`~resseg_ray.inference.damage.
map_damage`, as ``predict --actors`` segments scenes; every pair is tried, and the pairs that
failed are said together at the end."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from typing import Any

from resseg_ray.config import PredictSection
from resseg_ray.errors import ResSegError
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.actor_pool import actor_predictor, on_actor_pool, warning_lines
from resseg_ray.inference.damage import DamageReport, map_damage
from resseg_ray.inference.vectorize import PolygonOptions

__all__ = ["PairOutcome", "map_pairs_on_ray"]


@dataclasses.dataclass(frozen=True)
class PairOutcome:
    """One pair's map (``report``), or why it failed (``error``: one line), and its warnings."""

    name: str
    report: DamageReport | None
    error: str = ""
    warnings: str = ""


class _PairActor:
    """Ray Data actor: loads the damage network once, then maps the pairs it is handed."""

    def __init__(
        self,
        bundle_ref: object,
        predict: PredictSection,
        out_dir: str,
        settings: StorageSettings,
        threads: int,
        polygons: PolygonOptions,
        vector_format: str,
    ) -> None:
        self.predictor = actor_predictor(bundle_ref, predict, threads)
        self.args = (out_dir, settings, polygons, vector_format)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out_dir, settings, polygons, vector_format = self.args
        rows: dict[str, list[Any]] = {"name": [], "report": [], "error": [], "warnings": []}
        for name, pre, post in zip(batch["name"], batch["pre"], batch["post"], strict=True):
            with warnings.catch_warnings(record=True) as caught:  # shown by the driver
                warnings.simplefilter("always")
                try:
                    r = map_damage(self.predictor, str(pre), str(post), out_dir, settings, str(name),
                                   polygons, vector_format)  # fmt: skip
                    report, error = json.dumps(dataclasses.asdict(r)), ""
                except ResSegError as exc:  # the pair's own problem: said, the others go on
                    report, error = "", str(exc)
            rows["name"].append(str(name))
            rows["report"].append(report)
            rows["error"].append(error)
            rows["warnings"].append(warning_lines(caught))
        return rows


def map_pairs_on_ray(
    bundle_bytes: bytes,
    predict: PredictSection,
    pairs: Sequence[tuple[str, str, str]],
    out_dir: str,
    settings: StorageSettings,
    polygons: PolygonOptions,
    vector_format: str = "geojson",
    actors: int = 1,
    gpus_per_actor: float = 0,
    cpus_per_actor: float = 1,
) -> list[PairOutcome]:
    """Map ``pairs`` (``(name, pre, post)``) under ``out_dir`` on a Ray Data actor pool of
    ``actors`` actors; one outcome per pair, in the order given."""
    import ray

    items = [{"name": n, "pre": a, "post": b} for n, a, b in pairs]
    kwargs = {
        "bundle_ref": ray.put(bundle_bytes),
        "predict": predict,
        "out_dir": out_dir,
        "settings": settings,
        "threads": max(1, int(cpus_per_actor)),
        "polygons": polygons,
        "vector_format": vector_format,
    }
    rows = on_actor_pool(items, _PairActor, kwargs, actors, gpus_per_actor, cpus_per_actor)
    by_name = {str(r["name"]): r for r in rows}
    out = []
    for name, _, _ in pairs:
        r = by_name[name]
        report = DamageReport(**json.loads(r["report"])) if r["report"] else None
        out.append(PairOutcome(name, report, str(r["error"]), str(r["warnings"])))
    return out
