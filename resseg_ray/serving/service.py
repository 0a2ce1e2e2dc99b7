"""What one ingress replica holds and does: the scenes it knows, the stores of annotations,
added scenes and refinements, its image slots, and the model deployment it sends windows to.

The HTTP routes (:mod:`resseg_ray.serving.routes`) are thin: they check what a request sends,
then call this. Images go through :func:`~resseg_ray.inference.batch.predict_scene`, the code
``jobs/predict.py`` runs, with a predictor whose network is the model deployment: the same
windows, normalisation, blending and output writers, so an uploaded scene gives what
``predict.py`` gives on it. Pairs (``/v1/damage``) go through ``resseg damage``'s
:func:`~resseg_ray.inference.damage.map_damage` the same way, with the damage network's
deployment (``serve.damage_model``).
"""

import asyncio
import dataclasses
import os
import time
from typing import Any

import numpy as np
from fastapi import HTTPException
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from resseg_ray.adapt.suggest import suggest_regions
from resseg_ray.config import PredictSection, ServeSection, StorageSection, from_dict
from resseg_ray.errors import InputDataError, ResSegError, failure_message
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stac import SceneInputs
from resseg_ray.geo.storage import StorageSettings, workdir
from resseg_ray.inference.batch import predict_scene
from resseg_ray.inference.damage import map_damage
from resseg_ray.inference.outputs import output_options, output_uris
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.stac_items import ModelProvenance, write_run_catalog
from resseg_ray.models.bundle import BundleInfo
from resseg_ray.serving.annotations import AnnotationStore
from resseg_ray.serving.lru import LRU
from resseg_ray.serving.records import RefinementRecord, RefinementState, SceneRecord, SceneState
from resseg_ray.serving.refinements import JOB_ID, RefinementStore, current_record
from resseg_ray.serving.requests import check_image
from resseg_ray.serving.scenes import SCENE_ID, MapScene, load_map_scenes
from resseg_ray.serving.uploads import PRIVATE_ROOTS, UploadStore, to_cog

__all__ = ["ENDED_KEPT", "SUGGESTIONS_KEPT", "MapService", "Overloaded"]

SUGGESTIONS_KEPT = 64
"""Suggestion answers a replica keeps (each a small GeoJSON; one per scene and parameters)."""
ENDED_KEPT = 256
"""Ended refinements' records a replica keeps in memory (the store on disk holds them all)."""


class Overloaded(Exception):
    """The model replicas refused a window: their queues are full."""


class MapService:
    """The state and the work of one ingress replica (see the module docstring)."""

    def __init__(
        self,
        model: DeploymentHandle,
        serve_cfg: dict[str, Any],
        predict_cfg: dict[str, Any],
        storage: dict[str, Any],
        refine: dict[str, Any],
        damage_model: DeploymentHandle | None = None,
        damage_refine: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.damage_model = damage_model
        """The damage network's deployment (``serve.damage_model``), or None."""
        self.cfg: ServeSection = from_dict(ServeSection, serve_cfg)
        # uploads are not segmented with --adapt-bn (the weights live on the model replicas)
        self.predict = from_dict(PredictSection, predict_cfg).replace(
            batch_size=256, device="cpu", adapt_bn=False
        )
        # whatever a request names is hostile: GeoTIFF only, no sidecars (see StorageSettings)
        self.settings = dataclasses.replace(
            StorageSettings.resolve(from_dict(StorageSection, storage)), untrusted=True
        )
        self.refine = refine
        """The refinements' configuration (a :class:`~resseg_ray.config.Config` as a dict)."""
        self.damage_refine = damage_refine or refine
        """The damage network's refinements' configuration."""
        self.scenes = load_map_scenes(self.cfg.map_catalogs or [], self.settings)
        self.annotations = AnnotationStore(self.cfg.annotations_dir)
        self.refinements = RefinementStore(self.cfg.refine_dir)
        self.uploads = UploadStore(self.cfg.scenes_dir)
        self.suggested: LRU[tuple[str, float, int], bytes] = LRU(SUGGESTIONS_KEPT)
        """Suggestions computed, by scene and parameters (a client may vary the parameters)."""
        self.runners: dict[tuple[str, str], object] = {}
        """Handles of the refinement actors this replica started (kept while they run)."""
        self._ended: LRU[tuple[str, str], RefinementRecord] = LRU(ENDED_KEPT)
        self._info: BundleInfo | None = None
        self._damage_info: BundleInfo | None = None
        self._provenance: ModelProvenance | None = None
        # images are limited here, not by the deployment's request limit, so the map page's
        # light requests (page, tiles, polygons) are not refused while images are segmented
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0
        self._adding: set[asyncio.Task] = set()
        PRIVATE_ROOTS.update(
            os.path.abspath(d)
            for d in (workdir(), self.cfg.scenes_dir, self.cfg.annotations_dir, self.cfg.refine_dir)
        )
        for scene_id in self.uploads.ids():  # scenes added before a restart
            if scene_id not in self.scenes:
                self.added_scene(scene_id)

    async def bundle_info(self) -> BundleInfo:
        """The served model's metadata (asked of the model deployment once)."""
        if self._info is None:
            self._info = await self.model.info.remote()
        return self._info

    async def damage_info(self) -> BundleInfo:
        """The damage network's metadata (asked of its deployment once)."""
        assert self.damage_model is not None
        if self._damage_info is None:
            self._damage_info = await self.damage_model.info.remote()
        return self._damage_info

    # -- scenes and refinements by id ---------------------------------------------------------

    def added_scene(self, scene_id: str) -> MapScene | None:
        """A scene added at run time (by this replica or another), once it is ready."""
        try:
            record = self.upload_record(scene_id)
        except KeyError:
            return None
        if record.state is not SceneState.READY:
            return None
        found = load_map_scenes([self.uploads.catalog(scene_id)], self.settings).get(scene_id)
        if found is not None:
            self.scenes[scene_id] = found
        return found

    def upload_record(self, scene_id: str) -> SceneRecord:
        """An added scene's record; KeyError when there is none."""
        return SceneRecord.model_validate(self.uploads.load(scene_id))

    def scene(self, scene_id: str, refined: str | None = None) -> MapScene:
        """A scene by id (404 when unknown); with ``refined`` (a succeeded refinement's id) its
        refined model's map."""
        scene = None
        if SCENE_ID.fullmatch(scene_id):
            scene = self.scenes.get(scene_id) or self.added_scene(scene_id)
        if scene is None:
            raise HTTPException(404, f"no scene {scene_id!r}; GET /v1/scenes lists them")
        if refined is None:
            return scene
        record = self.record(scene_id, refined)
        if record.state is not RefinementState.SUCCEEDED:
            raise HTTPException(
                404,
                f"refinement {refined} of {scene_id} has no map ({record.state}); wait for it to succeed",
            )
        out = record.outputs or {}
        mask = out.get("mask")
        if mask is None:  # the verdict kept the served model: the refinement made no map
            decision = record.decision or {}
            raise HTTPException(
                404, f"refinement {refined} of {scene_id} has no map: {decision.get('line', 'none was made')}"
            )
        figures = record.figures or {}
        props = {
            **scene.properties,
            "resseg_ray:buildings": figures.get("buildings_after"),
            "resseg_ray:model": record.model,
            "resseg_ray:refinement": refined,
        }
        return dataclasses.replace(
            scene, mask=mask, prob=out.get("prob"), buildings=out.get("buildings"), properties=props
        )  # a damage scene's: its damage classes as the mask, its counts per class

    def record(self, scene_id: str, job: str) -> RefinementRecord:
        """A refinement's current record (404 when there is none); ended ones are kept in memory."""
        if not JOB_ID.fullmatch(job):
            raise HTTPException(404, f"no refinement {job!r}; refinement ids are r1, r2, ...")
        ended = self._ended.get((scene_id, job))
        if ended is not None:
            return ended
        try:
            record = RefinementRecord.model_validate(current_record(self.refinements, scene_id, job))
        except KeyError:
            raise HTTPException(
                404,
                f"scene {scene_id} has no refinement {job}; GET /v1/scenes/{scene_id}/refinements lists them",
            ) from None
        if not record.state.active:
            self._ended.put((scene_id, job), record)
            self.forget(scene_id, job)
        return record

    def forget(self, scene_id: str, job: str) -> None:
        """Drop the handle of a refinement this replica started (it ended or was cancelled)."""
        self.runners.pop((scene_id, job), None)

    # -- images ---------------------------------------------------------------------------

    def image_slots(self) -> asyncio.Semaphore:
        """The images segmented at once (made in the replica's own event loop)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.cfg.ingress_max_ongoing_requests)
        return self._slots

    async def hold_image_slot(self) -> bool:
        """Wait for an image slot; False (hold none) when ``serve.ingress_max_queued_requests``
        images wait already."""
        slots = self.image_slots()
        if slots.locked() and self._waiting >= self.cfg.ingress_max_queued_requests:
            return False
        self._waiting += 1
        try:
            await slots.acquire()
        finally:
            self._waiting -= 1
        return True

    def segment(self, uri: str, tmp: str, fmt: str, info: BundleInfo) -> bytes:
        """Run in a worker thread: checks, then the batch path of ``jobs/predict.py``; the bytes
        of the ``fmt`` output (``mask``, ``prob`` or ``geojson``)."""
        check_image(uri, info, self.cfg.max_pixels, self.settings)
        # batch_size 256: a whole window row at once, its windows go out concurrently
        options = self.predict.replace(
            prob=fmt == "prob", polygons=fmt == "geojson", osm=False, vector_format="geojson"
        )
        predictor = ScenePredictor(info, options, forward=self.forward)
        out = os.path.join(tmp, "out")
        try:
            written = dataclasses.replace(output_options(options), provenance=False)  # no server paths
            predict_scene(predictor, uri, out, self.settings, written, overwrite=True)
        except InputDataError as exc:
            raise HTTPException(422, str(exc)) from None
        except ResSegError as exc:
            raise HTTPException(400, str(exc)) from None
        key = {"mask": "mask", "prob": "prob", "geojson": "buildings"}[fmt]
        with open(output_uris(out, uri, output_options(options))[key], "rb") as f:
            return f.read()

    def damage(self, pre: str, post: str, tmp: str, fmt: str, info: BundleInfo) -> bytes:
        """Run in a worker thread: checks of both images, then ``resseg damage``'s path with the
        damage deployment; the bytes of the ``fmt`` output (``damage``: the class raster,
        ``prob``, ``geojson``: the buildings with their damage, ``summary``)."""
        for role, uri in (("pre", pre), ("post", post)):
            check_image(uri, info, self.cfg.max_pixels, self.settings, role)
        predictor = ScenePredictor(info, self.predict, forward=self.forward_damage)
        try:
            report = map_damage(predictor, pre, post, os.path.join(tmp, "out"), self.settings, "pair",
                                provenance=False)  # fmt: skip
        except InputDataError as exc:
            raise HTTPException(422, str(exc)) from None
        except ResSegError as exc:
            raise HTTPException(400, str(exc)) from None
        key = {"damage": "damage", "prob": "prob", "geojson": "buildings", "summary": "summary"}[fmt]
        with open(report.outputs[key], "rb") as f:
            return f.read()

    def suggest(self, scene: MapScene, info: BundleInfo, fraction: float, region: int) -> dict[str, Any]:
        """Run in a worker thread: the entropy ranking of ``jobs/suggest_annotation.py``, its
        windows segmented by the model deployment."""
        predictor = ScenePredictor(info, self.predict, forward=self.forward)
        opened = open_scene(
            scene.imagery, self.settings, bands=self.predict.bands, expected_bands=info.in_bands
        )
        return suggest_regions(predictor, opened, self.settings, fraction, region, wgs84=True)

    def start_adding(self, scene_id: str, source: str, incoming: str | None, info: BundleInfo) -> None:
        """Keep and segment a claimed scene off the request (a task of this replica's loop)."""
        task = asyncio.create_task(self._add(scene_id, source, incoming, info))
        self._adding.add(task)
        task.add_done_callback(self._adding.discard)

    async def _add(self, scene_id: str, source: str, incoming: str | None, info: BundleInfo) -> None:
        """Keep the image as a COG and segment it, holding one of the ingress's image slots."""
        record = self.uploads.load(scene_id)
        try:
            if self._provenance is None:
                self._provenance = await self.model.provenance.remote()
            ran = await self.model.source.remote()  # the replicas' engine, for the STAC item
            engine = " ".join(ran[k] for k in ("runtime", "precision") if k in ran)
            async with self.image_slots():
                await asyncio.to_thread(self._segment_added, scene_id, source, info, record, engine)
        except Exception as exc:
            await asyncio.to_thread(self.uploads.fail, scene_id, record, failure_message(exc))
        finally:
            if incoming is not None and os.path.exists(incoming):
                os.unlink(incoming)

    def _segment_added(
        self, scene_id: str, source: str, info: BundleInfo, record: dict[str, Any], engine: str
    ) -> None:
        """Run in a worker thread: the COG copy, ``jobs/predict.py``'s path with the model
        deployment, the STAC catalog; then the scene is on the map."""
        assert self._provenance is not None
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        image = self.uploads.image(scene_id)
        to_cog(source, image, self.settings)
        stages["store"] = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        options = self.predict.replace(
            prob=True, polygons=True, osm=False, vector_format="geojson",
            runtime=self.cfg.runtime, precision=self.cfg.precision,
        )  # fmt: skip
        predictor = ScenePredictor(info, options, forward=self.forward_waiting)
        out = self.uploads.outputs(scene_id)
        written = output_options(options, self.settings)
        report = predict_scene(predictor, image, out, self.settings, written, overwrite=True)
        stages["segment"] = round(time.perf_counter() - t1, 2)
        write_run_catalog(
            out, [(image, report.buildings, report.already_mapped, engine)], written, options,
            self._provenance,
            SceneInputs(), self.settings,
        )  # fmt: skip
        scene = load_map_scenes([self.uploads.catalog(scene_id)], self.settings)[scene_id]
        stages["total"] = round(time.perf_counter() - t0, 2)
        self.uploads.finish(scene_id, record, stage_seconds=stages, megapixels=round(report.megapixels, 3))
        self.scenes[scene_id] = scene

    # -- the model deployment -------------------------------------------------------------

    def forward_waiting(self, windows: np.ndarray, patience_s: float = 300.0) -> np.ndarray:
        """:meth:`forward` for work off the request path: when the model replicas are full it
        waits and asks again (up to ``patience_s``) instead of giving up."""
        deadline = time.monotonic() + patience_s
        delay = 0.05
        while True:
            try:
                return self.forward(windows)
            except Overloaded:
                if time.monotonic() + delay > deadline:
                    raise InputDataError(
                        f"the model replicas stayed overloaded for {patience_s:g} s; try again later"
                    ) from None
                time.sleep(delay)
                delay = min(2 * delay, 2.0)

    def forward(self, windows: np.ndarray) -> np.ndarray:
        """Each window to the model deployment (batched there with other requests' windows)."""
        return self._forward(self.model, windows)

    def forward_damage(self, windows: np.ndarray) -> np.ndarray:
        """:meth:`forward` to the damage network's deployment."""
        assert self.damage_model is not None
        return self._forward(self.damage_model, windows)

    @staticmethod
    def _forward(model: DeploymentHandle, windows: np.ndarray) -> np.ndarray:
        responses = [model.predict.remote(w) for w in windows]
        try:
            return np.stack([r.result() for r in responses])
        except BackPressureError:
            for r in responses:
                r.cancel()
            raise Overloaded() from None
