"""Refinements from the map page: refine the served model (or a refinement's) on a scene's
saved annotations off the HTTP path, follow it, list a scene's, cancel one."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from resseg_ray.config import Config, from_dict
from resseg_ray.errors import InputDataError
from resseg_ray.jsondoc import load_json
from resseg_ray.serving.records import RefinementList, RefinementRecord
from resseg_ray.serving.refine_runner import RefinementSpec, cpu_shortage, start_refinement
from resseg_ray.serving.refinements import (
    cancel_refinement,
    new_record,
    parse_refine_request,
    running_refinements,
)
from resseg_ray.serving.requests import read_body
from resseg_ray.serving.routes.deps import scene_lookup, write_access
from resseg_ray.serving.routes.openapi import REFINE, body
from resseg_ray.serving.routes.segment import busy
from resseg_ray.serving.scenes import MapScene
from resseg_ray.serving.service import MapService

__all__ = ["refinements_router"]


def refinements_router(service: MapService) -> APIRouter:
    """``/v1/scenes/{id}/refinements``."""
    router = APIRouter(prefix="/v1/scenes/{scene_id}/refinements")
    writes = [Depends(write_access(service))]
    Scene = Annotated[MapScene, Depends(scene_lookup(service))]

    @router.post(
        "",
        status_code=202,
        dependencies=writes,
        openapi_extra=body("json", json_schema=REFINE),
        responses={202: {"model": RefinementRecord}},
    )
    async def post_refinement(scene: Scene, request: Request) -> JSONResponse:
        """Refine the served model (or ``"from": "r<N>"``, a refinement of this scene; of a damage
        scene, the served damage network on the pair and the buildings' damage classes) on the
        scene's newest saved annotations, off the HTTP path: the answer (202) is the new
        refinement's record; its progress is at ``GET .../refinements/{id}``. Optional JSON
        body: ``{"epochs": 20, "adapt_bn": false, "from": "r1"}``. 503 when
        ``serve.max_refine_jobs`` refinements run already; 409 when the scene has no saved
        annotated area."""
        cfg = service.cfg
        data = await read_body(request, 64 * 1024, cfg.body_idle_timeout_s, cfg.body_timeout_s)
        try:
            doc = load_json(data, "the request body") if data.strip() else {}
            ask = parse_refine_request(doc, cfg.max_refine_epochs)
        except (ValueError, InputDataError) as exc:  # a bad field, or not JSON
            raise HTTPException(400, f"refinement request: {exc}") from None
        version, annotations = await asyncio.to_thread(service.annotations.load, scene.id)
        if not any(f["properties"]["kind"] == "area" for f in annotations["features"]):
            raise HTTPException(
                409,
                f"scene {scene.id} has no saved annotated area: draw the area you annotated and its "
                "buildings, save them, then refine",
            )
        damage = scene.kind == "damage"
        if damage and cfg.damage_model is None:
            raise HTTPException(
                409,
                f"scene {scene.id} is a damage scene and this service has no damage network to refine "
                "(serve.damage_model)",
            )
        parent, parent_mask = (cfg.damage_model if damage else cfg.model), scene.mask
        parent_buildings = scene.properties.get("resseg_ray:buildings")
        if ask.start is not None:
            start = service.scene(scene.id, ask.start)  # 404 unless it succeeded
            parent = service.record(scene.id, ask.start).model
            parent_mask, parent_buildings = start.mask, start.properties.get("resseg_ray:buildings")
        assert parent is not None  # build_app resolves serve.model
        base = service.damage_refine if damage else service.refine
        train = base["train"]
        epochs = ask.epochs or int(train["epochs"])
        refine = {**base, "train": {**train, "epochs": epochs}}
        # the count and the start happen with no await between: one replica never over-starts
        if running_refinements() >= cfg.max_refine_jobs:
            return busy(
                f"{cfg.max_refine_jobs} refinement(s) run already (serve.max_refine_jobs); "
                "retry when one has ended"
            )
        record = new_record(version, epochs, parent, ask.adapt_bn, ask.start)
        # its runner waits for the CPUs it trains on; said now (a GCS query of milliseconds,
        # not awaited: nothing may come between the count above and the start)
        if refine["scaling"].get("in_process"):
            record["waiting"] = cpu_shortage(from_dict(Config, refine), loaders=False)
        job = service.refinements.create(scene.id, record)
        spec = RefinementSpec(
            scene_id=scene.id,
            job=job,
            store=service.refinements.folder,
            imagery=scene.imagery,
            parent=parent,
            parent_mask=parent_mask,
            parent_buildings=parent_buildings,
            annotations=annotations,
            annotation_version=version,
            config=refine,
            adapt_bn=ask.adapt_bn,
            post=scene.post,
        )
        service.runners[(scene.id, job)] = start_refinement(spec)
        return JSONResponse(service.refinements.load(scene.id, job), status_code=202)

    @router.get("", response_model_exclude_unset=True)
    async def list_refinements(scene: Scene) -> RefinementList:
        """The scene's refinements, oldest first, each its record (state, progress, figures)."""
        jobs = await asyncio.to_thread(service.refinements.jobs, scene.id)
        records = [await asyncio.to_thread(service.record, scene.id, j) for j in jobs]
        return RefinementList(refinements=records)

    @router.get("/{job}", response_model_exclude_unset=True)
    async def get_refinement(scene: Scene, job: str) -> RefinementRecord:
        """One refinement: ``state`` (queued, running, succeeded, failed, cancelled), ``stage``,
        ``epoch`` of ``epochs`` and each epoch's losses (``history``), and when it succeeded the
        refined model (``model``, MLflow run and registered version) and its ``figures``; when
        it failed, ``error`` says why (the served model and map are unchanged)."""
        return await asyncio.to_thread(service.record, scene.id, job)

    @router.delete("/{job}", dependencies=writes, response_model_exclude_unset=True)
    async def delete_refinement(scene: Scene, job: str) -> RefinementRecord:
        """Cancel a refinement that has not ended (its training stops; nothing is registered
        after); a refinement that has ended is left as it is (409)."""
        record = await asyncio.to_thread(service.record, scene.id, job)
        if not record.state.active:
            raise HTTPException(409, f"refinement {job} of {scene.id} has ended ({record.state})")
        cancelled = await asyncio.to_thread(cancel_refinement, service.refinements, scene.id, job)
        service.forget(scene.id, job)
        return RefinementRecord.model_validate(cancelled)

    return router
