"""A map-page refinement's run: the project's refinement
(:func:`~resseg_ray.adapt.refine.refine_scene`, the code of ``jobs/finetune.py``) on a scene's
saved annotations, in a Ray actor of its own off the HTTP path, then the map of the scene by
the model the verdict kept; its record (:mod:`resseg_ray.serving.refinements`) rewritten at
each step, so that the page shows its progress.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resseg_ray.errors import InputDataError
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.serving.records import RefinementState
from resseg_ray.serving.refinements import RefinementStore, actor_name, now

__all__ = ["RefinementSpec", "annotation_inputs", "cpu_shortage", "run_refinement", "start_refinement"]


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class RefinementSpec:
    """Everything the actor needs, as plain data (it crosses a process boundary)."""

    scene_id: str
    job: str
    store: str
    """The :class:`RefinementStore` folder."""
    imagery: str
    """The scene's image (local path or s3://), as the service knows it."""
    parent: str
    """Bundle path, s3:// bundle or models:/ URI of the model to refine."""
    parent_mask: str
    """The parent's mask of the scene (the map shown before refinement)."""
    parent_buildings: int | dict[str, int] | None
    """Buildings of the map before refinement (per damage class of a damage scene)."""
    annotations: dict[str, Any]
    annotation_version: int
    config: dict[str, Any]
    """The refinement's :class:`~resseg_ray.config.Config` as a dict."""
    adapt_bn: bool = False
    post: str | None = None
    """A damage scene's post-event image: a damage network refines on the pair (``imagery`` the
    pre-event one), on the buildings' damage classes."""


def annotation_inputs(annotations: dict[str, Any], folder: str) -> tuple[str, str, int]:
    """Write the areas and the buildings (drawn and accepted) of saved annotations as two GeoJSON
    files under ``folder``; (areas file, buildings file, number of buildings). A building's damage
    class (a damage scene's) is its ``subtype``, as xBD's. An InputDataError when there is no
    area."""
    features = annotations.get("features", [])
    areas = [f for f in features if f["properties"]["kind"] == "area"]
    buildings = [f for f in features if f["properties"]["kind"] == "building"]
    if not areas:
        raise InputDataError(
            "the saved annotations hold no annotated area: draw the area you annotated, its "
            "buildings, save, then refine"
        )
    os.makedirs(folder, exist_ok=True)
    out = []
    for name, feats in (("area.geojson", areas), ("buildings.geojson", buildings)):
        path = os.path.join(folder, name)
        clean = [
            {"type": "Feature", "properties": _grade(f["properties"]), "geometry": f["geometry"]}
            for f in feats
        ]
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"type": "FeatureCollection", "features": clean}, f)
        out.append(path)
    return out[0], out[1], len(buildings)


def _grade(properties: dict[str, Any]) -> dict[str, Any]:
    return {"subtype": properties["damage"]} if "damage" in properties else {}


def _changed_fraction(before: str, after: str, settings: Any) -> float:
    """Share of the scene's valid pixels whose class differs between two masks of one grid."""
    from resseg_ray.evaluation.metrics import IGNORE
    from resseg_ray.geo.scene import open_scene, read_window

    a, b = open_scene(before, settings, bands=[1]), open_scene(after, settings, bands=[1])
    changed = total = 0
    for r in range(0, a.height, 512):
        h = min(512, a.height - r)
        x, xv = read_window(a, settings, 0, r, a.width, h)
        y, yv = read_window(b, settings, 0, r, a.width, h)
        ok = xv & yv & (x[0] != IGNORE) & (y[0] != IGNORE)
        changed += int((x[0][ok] != y[0][ok]).sum())
        total += int(ok.sum())
    return changed / max(total, 1)


def cpu_shortage(cfg: Any, loaders: bool = True) -> str | None:
    """Why the refinement's training may not start at once (the service's replicas hold CPUs
    of the Ray instance); None when what it reserves (with ``loaders``, its Ray Data loaders'
    CPUs too) is free."""
    from resseg_ray.train.resources import shortage

    return shortage(cfg, "of serve.refine_config", loaders=loaders)


def run_refinement(spec: RefinementSpec, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Refine ``spec.parent`` on the annotations, map the scene with the refined model and
    return the final record; the record is rewritten at each step (progress on the page). A
    failure is recorded (``state: failed`` and the one-line reason) and not raised."""
    import torch

    from resseg_ray.adapt.refine import AreaSpec, refine_scene
    from resseg_ray.config import Config, from_dict
    from resseg_ray.errors import failure_message
    from resseg_ray.inference.batch import predict_scene
    from resseg_ray.inference.damage import map_damage
    from resseg_ray.inference.outputs import output_options
    from resseg_ray.inference.predictor import ScenePredictor
    from resseg_ray.models.bundle import load_bundle_bytes
    from resseg_ray.models.source import fetch_bundle_bytes

    store = RefinementStore(spec.store)
    record = store.load(spec.scene_id, spec.job)
    stages: dict[str, float] = {}
    lines: list[str] = []
    started = time.perf_counter()

    def update(**changes: Any) -> None:
        record.update(changes)
        record["stage_seconds"] = dict(stages)
        record["log"] = lines[-20:]
        store.write(spec.scene_id, spec.job, record)

    def say(line: str) -> None:
        lines.append(line)
        log(line)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        history = record.setdefault("history", [])
        history.append({"epoch": epoch, **{k: _finite(v) for k, v in metrics.items()}})
        update(epoch=epoch, waiting=None)

    try:
        cfg = from_dict(Config, spec.config)
        settings = StorageSettings.resolve(cfg.storage)
        threads = cfg.scaling.torch_threads or max(1, math.floor(cfg.scaling.cpus_per_worker))
        torch.set_num_threads(threads)
        folder = store.job_dir(spec.scene_id, spec.job)
        waiting = None if cfg.scaling.in_process else cpu_shortage(cfg)  # in process: it holds them
        update(state=RefinementState.RUNNING, stage="training", started=now(), waiting=waiting)
        area, buildings, drawn = annotation_inputs(spec.annotations, os.path.join(folder, "inputs"))
        name = f"map-{spec.scene_id}-{spec.job}"
        rcfg = cfg.replace(run=cfg.run.replace(name=name, storage_path=folder))
        t0 = time.perf_counter()
        result = refine_scene(
            rcfg,
            spec.parent,
            spec.imagery,
            AreaSpec(polygons=area),
            footprints=buildings,
            adapt_bn=spec.adapt_bn,
            alias=f"refined-{spec.scene_id}",
            log=say,
            score_rest=False,  # outside the areas nothing is known
            on_epoch=on_epoch,
            post=spec.post,
        )
        stages["refine"] = round(time.perf_counter() - t0, 2)
        verdict = result.verdict
        assert verdict is not None
        decision = verdict.to_dict()
        kept = {"refined": result.bundle_uri, "adapted": "adapted", "parent": None}[verdict.chosen]
        update(
            stage="mapping" if kept else "done",
            model=result.bundle_uri,
            mlflow_run_id=result.mlflow_run_id,
            registered_version=result.registered_version,
            alias=f"refined-{spec.scene_id}" if verdict.ships else None,
            decision=decision,
        )
        figures: dict[str, Any] = {
            "area_percent": round(100 * result.area.fraction, 2),
            "labelled_pixels": result.area.refine_pixels,
            "annotated_buildings": drawn,
            "heldout_pixels": verdict.pixels,
            **{f"f1_heldout_{k}": _finite(v) for k, v in verdict.f1.items()},
            "val_f1": (record.get("history") or [{}])[-1].get("val_f1"),
            "buildings_before": spec.parent_buildings,
        }
        outputs = None
        if kept is not None:  # the map of the model kept: the refined one, or the adapted parent
            t0 = time.perf_counter()
            chosen = (
                load_bundle_bytes(fetch_bundle_bytes(result.bundle_uri, settings), result.bundle_uri)
                if verdict.ships
                else load_bundle_bytes(result.adapted_bundle or b"", "the parent with BatchNorm re-estimated")
            )
            options = cfg.predict.replace(prob=True, polygons=True, osm=False, adapt_bn=False)
            predictor = ScenePredictor(chosen, options)
            out = os.path.join(folder, "map")
            if spec.post is not None:  # a damage network maps the pair: classes as the mask
                pair = map_damage(predictor, spec.imagery, spec.post, out, settings, spec.scene_id)
                mask, prob, polygons = pair.outputs["damage"], None, pair.outputs["buildings"]
                figures["buildings_after"] = dict(pair.buildings)
            else:
                report = predict_scene(
                    predictor, spec.imagery, out, settings, output_options(options, settings), overwrite=True
                )
                mask, prob, polygons = (report.outputs[k] for k in ("mask", "prob", "buildings"))
                figures["buildings_after"] = report.buildings
            stages["map"] = round(time.perf_counter() - t0, 2)
            outputs = {"mask": mask, "prob": prob, "buildings": polygons}
            figures["changed_percent"] = round(100 * _changed_fraction(spec.parent_mask, mask, settings), 3)
        stages["total"] = round(time.perf_counter() - started, 2)
        update(
            state=RefinementState.SUCCEEDED, stage="done", finished=now(), outputs=outputs, figures=figures
        )
        say(verdict.line())
        say(f"refinement {spec.job} of {spec.scene_id} ended in {stages['total']:.0f} s")
    except Exception as exc:
        stages["total"] = round(time.perf_counter() - started, 2)
        update(state=RefinementState.FAILED, stage="done", finished=now(), error=failure_message(exc))
        say(f"refinement {spec.job} of {spec.scene_id} failed: {record['error']}")
    return record


class _Runner:
    """The Ray actor of one refinement: runs it, then exits (its name is then free)."""

    def run(self, spec: RefinementSpec) -> None:
        import ray

        run_refinement(spec)  # it records its own end, failures included
        ray.actor.exit_actor()


def start_refinement(spec: RefinementSpec) -> Any:
    """Start ``spec`` in its own Ray actor, named by :func:`actor_name` so that any ingress
    replica can find it (to cancel it, or to tell that it is gone); returns the actor handle,
    which the caller keeps while the refinement runs. The actor reserves what the training
    reserves when it trains in it (``scaling.in_process``), else nothing (the Ray Train workers
    reserve theirs); the map of the scene runs in it afterwards."""
    import ray

    from resseg_ray.config import Config, from_dict

    scaling = from_dict(Config, spec.config).scaling
    local = scaling.in_process
    runner = ray.remote(
        num_cpus=scaling.cpus_per_worker if local else 0,
        num_gpus=1 if local and scaling.use_gpu else 0,
        max_restarts=0,
        max_task_retries=0,
    )(_Runner)
    actor = runner.options(name=actor_name(spec.scene_id, spec.job)).remote()
    actor.run.remote(spec)  # type: ignore[attr-defined]
    return actor
