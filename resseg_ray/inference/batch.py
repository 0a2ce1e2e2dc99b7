"""Segment scenes into output rasters: one scene (:func:`predict_scene`) or many, resumably,
in this process or on a Ray actor pool that also splits huge scenes into parts."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from resseg_ray import jobstate
from resseg_ray.config import PredictSection, to_dict
from resseg_ray.errors import failure_message
from resseg_ray.geo.scene import PREDICT_BANDS, open_scene
from resseg_ray.geo.storage import StorageSettings, exists, gdal_env, remove_tree
from resseg_ray.inference.actor_pool import actor_predictor, on_actor_pool, warning_lines
from resseg_ray.inference.outputs import (
    OutputOptions,
    SceneWriter,
    output_options,
    output_uris,
    outputs_complete,
    part_uris,
    staging_dir,
)
from resseg_ray.inference.predictor import (
    Norm,
    RowPart,
    ScenePredictor,
    row_parts,
    scene_norm,
    window_row_count,
)
from resseg_ray.inference.vectorize import Buildings
from resseg_ray.models.bundle import BundleInfo, bundle_info_from_bytes
from resseg_ray.progress import Progress, tenths

_log = logging.getLogger(__name__)


@dataclass
class SceneReport:
    """What happened to one scene."""

    uri: str
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    megapixels: float = 0.0
    skipped: bool = False
    error: str | None = None
    buildings: int | None = None
    """Building polygons written (None: none asked for, or the scene was skipped)."""
    already_mapped: int | None = None
    """Predicted buildings left out because ``--existing`` has them."""
    engine: str = ""
    """The runtime and precision that segmented the scene, e.g. ``openvino bf16`` ("" when unknown)."""

    @property
    def mpx_per_s(self) -> float:
        """Throughput of this scene (0 when skipped or failed)."""
        return self.megapixels / self.seconds if self.seconds > 0 and not self.skipped else 0.0


def predict_scene(
    predictor: ScenePredictor,
    scene_uri: str,
    out_dir: str,
    settings: StorageSettings,
    options: OutputOptions | None = None,
    overwrite: bool = False,
    progress: Callable[[float], None] | None = None,
    bands: Sequence[int] | None = None,
    report_errors: bool = False,
) -> SceneReport:
    """Segment one scene and publish its outputs under ``out_dir`` (skipped when complete).
    ``options`` and ``bands`` default to what the predictor's options ask for.

    With ``report_errors`` any failure (unreadable scene, wrong bands, a full disk) is returned
    as the report's ``error`` (:func:`~resseg_ray.errors.failure_message`) instead of raised,
    so a batch of scenes goes on."""
    if report_errors:
        try:
            return predict_scene(predictor, scene_uri, out_dir, settings, options, overwrite, progress, bands)
        except Exception as exc:
            return failed(scene_uri, exc)
    options = options or output_options(predictor.options, settings)
    bands = bands if bands is not None else predictor.options.bands
    uris = output_uris(out_dir, scene_uri, options)
    if not overwrite and outputs_complete(out_dir, scene_uri, options, settings):
        return SceneReport(scene_uri, uris, skipped=True)
    start = time.perf_counter()
    scene = open_scene(
        scene_uri, settings, bands=bands, expected_bands=predictor.info.in_bands, bands_option=PREDICT_BANDS
    )
    with gdal_env(settings), SceneWriter(scene, options) as writer:
        for strip in predictor.strips(scene, settings):
            writer.write(strip)
            if progress is not None:
                progress(strip.done(scene))
        buildings = writer.publish(uris, settings)
    return _with_buildings(
        SceneReport(
            scene_uri,
            uris,
            seconds=time.perf_counter() - start,
            megapixels=scene.width * scene.height / 1e6,
            engine=_engine(predictor),
        ),
        buildings,
    )


def _engine(predictor: ScenePredictor) -> str:
    d = predictor.describe_engine()
    return " ".join(d[k] for k in ("runtime", "precision") if k in d)


def _with_buildings(report: SceneReport, buildings: Buildings | None) -> SceneReport:
    if buildings is not None:
        report.buildings = len(buildings.collection["features"])
        report.already_mapped = buildings.already_mapped
    return report


def predict_scenes(
    predictor: ScenePredictor,
    scene_uris: Sequence[str],
    out_dir: str,
    settings: StorageSettings,
    options: OutputOptions | None = None,
    overwrite: bool = False,
    bands: Sequence[int] | None = None,
) -> list[SceneReport]:
    """Segment scenes one after another, a progress line (or bar) per scene; a scene that fails
    is reported and the others go on."""
    options = options or output_options(predictor.options, settings)
    reports = []
    with Progress("scene", len(scene_uris)) as bar:
        for uri in scene_uris:
            report = predict_scene(
                predictor, uri, out_dir, settings, options, overwrite, tenths(uri), bands, True
            )
            if report.error is not None:
                bar.step(f"{uri}: failed (the reason is in the error at the end)")
            elif report.skipped:
                bar.step(f"{uri}: outputs complete, skipped (--overwrite redoes it)")
            else:
                bar.step(f"{uri}: {report.megapixels:.1f} Mpx at {report.mpx_per_s:.2f} Mpx/s")
            reports.append(report)
    return reports


def predict_part(
    predictor: ScenePredictor,
    scene_uri: str,
    part: RowPart,
    norm: Norm,
    staging: str,
    settings: StorageSettings,
    options: OutputOptions,
    overwrite: bool = False,
    bands: Sequence[int] | None = None,
) -> SceneReport:
    """Segment one part (row range) of a scene and stage its rasters under ``staging``
    (skipped when already staged); ``norm`` is the whole scene's normalisation."""
    uris = part_uris(staging, part, options)
    if not overwrite and all(exists(u, settings) for u in uris.values()):
        return SceneReport(scene_uri, uris, skipped=True)
    start = time.perf_counter()
    scene = open_scene(
        scene_uri, settings, bands=bands, expected_bands=predictor.info.in_bands, bands_option=PREDICT_BANDS
    )
    with gdal_env(settings), SceneWriter(scene, options, part) as writer:
        for strip in predictor.strips(scene, settings, part, norm):
            writer.write(strip)
        writer.publish_part(uris, settings)
    mpx = scene.width * (part.row1 - part.row0) / 1e6
    return SceneReport(
        scene_uri, uris, seconds=time.perf_counter() - start, megapixels=mpx, engine=_engine(predictor)
    )


def assemble_scene(
    scene_uri: str,
    parts: Sequence[RowPart],
    staging: str,
    out_dir: str,
    settings: StorageSettings,
    options: OutputOptions,
) -> SceneReport:
    """Copy the staged parts of a split scene into its outputs, publish them, drop the parts."""
    start = time.perf_counter()
    scene = open_scene(scene_uri, settings)
    uris = output_uris(out_dir, scene_uri, options)
    with gdal_env(settings), SceneWriter(scene, options) as writer:
        for part in parts:
            writer.copy_part(part, part_uris(staging, part, options), settings)
        buildings = writer.publish(uris, settings)
    remove_tree(staging, settings, drop_empty_parent=True)
    return _with_buildings(SceneReport(scene_uri, uris, seconds=time.perf_counter() - start), buildings)


def failed(uri: str, exc: BaseException) -> SceneReport:
    """The report of a scene (or part) whose work raised ``exc``: the one conversion from an
    exception to what the user is told (the traceback goes to the debug log)."""
    _log.debug("%s failed", uri, exc_info=exc)
    return SceneReport(uri, error=failure_message(exc))


@dataclass
class ScenePlan:
    """How one scene is segmented on Ray: skipped, failed, whole, or in ``parts``."""

    uri: str
    skipped: bool = False
    error: str | None = None
    megapixels: float = 0.0
    parts: list[RowPart] = field(default_factory=list)
    norm: Norm | None = None
    staging: str = ""
    warnings: list[str] = field(default_factory=list)
    """What planning warned about (the scene's statistics far from the model's), for the driver."""


def plan_scene(
    uri: str,
    info: BundleInfo,
    predict: PredictSection,
    out_dir: str,
    settings: StorageSettings,
    overwrite: bool,
    split_mpx: float,
    min_parts: int,
    key: str,
    options: OutputOptions | None = None,
) -> ScenePlan:
    """Decide how a scene is segmented: skipped when its outputs are complete; split into
    about ``megapixels / split_mpx`` parts (at least ``min_parts``; each part at least two
    window rows) when ``split_mpx`` > 0, with the scene's normalisation computed once here
    for all its parts; otherwise whole. A scene that cannot be opened gets its error."""
    options = options or output_options(predict, settings)
    if not overwrite and outputs_complete(out_dir, uri, options, settings):
        return ScenePlan(uri, skipped=True)
    try:
        scene = open_scene(
            uri, settings, bands=predict.bands, expected_bands=info.in_bands, bands_option=PREDICT_BANDS
        )
        plan = ScenePlan(uri, megapixels=scene.width * scene.height / 1e6)
        if split_mpx <= 0:
            return plan
        count = max(math.ceil(plan.megapixels / split_mpx), min_parts)
        count = min(count, window_row_count(scene.height, predict.window, predict.overlap) // 2)
        if count < 2:
            return plan
        plan.parts = row_parts(scene.height, predict.window, predict.overlap, count)
        normalization = predict.normalization or str(info.extra.get("normalization", "pooled"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan.norm = scene_norm(info, normalization, scene, settings)
        plan.warnings = [str(w.message) for w in caught]
        plan.staging = staging_dir(out_dir, options.stem(uri), f"{key}-{count}")
        return plan
    except Exception as exc:
        return ScenePlan(uri, error=failed(uri, exc).error)


class _SceneActor:
    """Ray Data actor: loads the bundle once, then segments the scenes (or scene parts) it
    is handed."""

    def __init__(
        self,
        bundle_ref: object,
        predict: PredictSection,
        out_dir: str,
        settings: StorageSettings,
        overwrite: bool,
        threads: int | None,
        plans_ref: object = None,
        options: OutputOptions | None = None,
    ) -> None:
        import ray

        self.predictor = actor_predictor(bundle_ref, predict, threads)
        self.options = options or output_options(predict, settings)
        self.args = (out_dir, settings, overwrite)
        self.plans: dict[str, ScenePlan] = ray.get(plans_ref) if isinstance(plans_ref, ray.ObjectRef) else {}

    def _one(self, uri: str, index: int) -> SceneReport:
        out_dir, settings, overwrite = self.args
        bands = self.predictor.options.bands
        if index < 0:
            return predict_scene(
                self.predictor,
                uri,
                out_dir,
                settings,
                self.options,
                overwrite,
                bands=bands,
                report_errors=True,
            )
        plan = self.plans[uri]
        assert plan.norm is not None  # a split scene's plan has its normalisation
        try:
            return predict_part(
                self.predictor,
                uri,
                plan.parts[index],
                plan.norm,
                plan.staging,
                settings,
                self.options,
                overwrite,
                bands,
            )
        except Exception as exc:
            return failed(uri, exc)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        keys = "uri part seconds megapixels skipped error start end warnings buildings already_mapped engine"
        rows: dict[str, list[Any]] = {k: [] for k in keys.split()}
        for uri, index in zip(batch["uri"], batch["part"], strict=True):
            start = time.time()
            with warnings.catch_warnings(record=True) as caught:  # shown by the driver
                warnings.simplefilter("always")
                r = self._one(str(uri), int(index))
            rows["warnings"].append(warning_lines(caught))
            rows["uri"].append(r.uri)
            rows["part"].append(int(index))
            rows["seconds"].append(r.seconds)
            rows["megapixels"].append(r.megapixels)
            rows["skipped"].append(r.skipped)
            rows["error"].append(r.error or "")
            rows["start"].append(start)
            rows["end"].append(time.time())
            rows["buildings"].append(-1 if r.buildings is None else r.buildings)
            rows["already_mapped"].append(-1 if r.already_mapped is None else r.already_mapped)
            rows["engine"].append(r.engine)
        return rows


def predict_scenes_on_ray(
    bundle_bytes: bytes,
    predict: PredictSection,
    scene_uris: Sequence[str],
    out_dir: str,
    settings: StorageSettings,
    overwrite: bool = False,
    actors: int = 1,
    gpus_per_actor: float = 0,
    cpus_per_actor: float = 1,
    split_mpx: float = 64.0,
    options: OutputOptions | None = None,
) -> list[SceneReport]:
    """Segment scenes on a Ray cluster with the ``predict`` options (``options``: what is
    written and under which names; default what ``predict`` asks for, named by file name).

    Each scene is planned by a Ray task (:func:`plan_scene`): scenes larger than
    ``split_mpx`` megapixels, and all scenes when there are fewer scenes than actors, are
    split into row ranges. A Ray Data actor pool (``actors`` actors, each with
    ``gpus_per_actor`` GPUs) loads the model once per actor and takes one scene or part at
    a time; parts are staged under the output folder and each split scene is assembled by a
    Ray task once all its parts are done. Staged parts survive a failed run and are reused
    by the next one.
    """
    import ray

    jobstate.doing(f"segmenting {len(scene_uris)} scenes on Ray (finished outputs and parts under {out_dir})")
    options = options or output_options(predict, settings)
    info = bundle_info_from_bytes(bundle_bytes)
    key = parts_fingerprint(bundle_bytes, predict)
    min_parts = actors // len(scene_uris) if split_mpx > 0 and 0 < len(scene_uris) < actors else 1
    plan_task = ray.remote(num_cpus=1)(plan_scene)
    refs = [
        # Ray's typing stubs stop at 8 arguments
        plan_task.remote(u, info, predict, out_dir, settings, overwrite, split_mpx, min_parts, key, options)  # type: ignore[call-arg]
        for u in scene_uris
    ]
    plans: dict[str, ScenePlan] = dict(zip(scene_uris, ray.get(refs), strict=True))
    units: list[dict[str, object]] = []
    for u, plan in plans.items():
        if plan.error is None and not plan.skipped:
            # part -1: the whole scene
            units.extend({"uri": u, "part": k} for k in (range(len(plan.parts)) if plan.parts else [-1]))
    rows: list[dict[str, Any]] = []
    if units:
        rows = on_actor_pool(
            units,
            _SceneActor,
            {
                "bundle_ref": ray.put(bundle_bytes),
                "predict": predict,
                "out_dir": out_dir,
                "settings": settings,
                "overwrite": overwrite,
                "threads": max(1, int(cpus_per_actor)),
                "plans_ref": ray.put({u: p for u, p in plans.items() if p.parts}),
                "options": options,
            },
            actors,
            gpus_per_actor,
            cpus_per_actor,
        )
    return collect_reports(plans, rows, out_dir, settings, options)


def collect_reports(
    plans: dict[str, ScenePlan],
    rows: list[dict],
    out_dir: str,
    settings: StorageSettings,
    options: OutputOptions,
) -> list[SceneReport]:
    """Reports in scene order from the actors' rows; split scenes whose parts all succeeded
    are assembled (Ray tasks, in parallel)."""
    import ray

    by_uri: dict[str, list[dict]] = {}
    for r in rows:
        by_uri.setdefault(r["uri"], []).append(r)
    reports: dict[str, SceneReport] = {}
    assembling = {}
    assemble_task = ray.remote(num_cpus=1)(assemble_scene)
    for uri, plan in plans.items():
        if plan.error is not None or plan.skipped:
            reports[uri] = SceneReport(uri, skipped=plan.skipped, error=plan.error)
            continue
        got = by_uri.get(uri, [])
        said = [*plan.warnings, *(m for r in got for m in str(r.get("warnings") or "").split("\n") if m)]
        for message in dict.fromkeys(said):
            warnings.warn(message, UserWarning, stacklevel=2)  # from the actors, whose output stays there
        errors = [r["error"] for r in got if r["error"]]
        if errors:
            reports[uri] = SceneReport(uri, error=errors[0])
        elif not plan.parts:
            r = got[0]
            reports[uri] = SceneReport(
                uri,
                output_uris(out_dir, uri, options),
                float(r["seconds"]),
                float(r["megapixels"]),
                bool(r["skipped"]),
                buildings=int(r["buildings"]) if int(r.get("buildings", -1)) >= 0 else None,
                already_mapped=int(r["already_mapped"]) if int(r.get("already_mapped", -1)) >= 0 else None,
                engine=str(r.get("engine") or ""),
            )
        else:
            ref = assemble_task.remote(uri, plan.parts, plan.staging, out_dir, settings, options)
            assembling[uri] = (ref, got)
    for uri, (ref, got) in assembling.items():
        try:
            done = ray.get(ref)
        except Exception as exc:  # the assembly task failed: the scene has no outputs
            reports[uri] = failed(uri, exc)
            continue
        worked = [r for r in got if not r["skipped"]]
        wall = max(r["end"] for r in worked) - min(r["start"] for r in worked) if worked else 0.0
        reports[uri] = SceneReport(
            uri,
            done.outputs,
            wall + done.seconds,
            plans[uri].megapixels,
            buildings=done.buildings,
            already_mapped=done.already_mapped,
            engine=", ".join(dict.fromkeys(str(r.get("engine") or "") for r in worked if r.get("engine"))),
        )
    return [reports[u] for u in plans]


def parts_fingerprint(bundle_bytes: bytes, predict: PredictSection) -> str:
    """Short hash of everything that decides a part's rasters: the model and the options."""
    h = hashlib.sha256(bundle_bytes)
    h.update(json.dumps(to_dict(predict), sort_keys=True).encode())
    return h.hexdigest()[:12]
