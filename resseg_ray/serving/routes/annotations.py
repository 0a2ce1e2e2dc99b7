"""What a mapper draws and takes away: the annotated areas and buildings of a scene (saved
as versions), where to annotate first (suggestions) and the export of the buildings (GeoJSON
or a JOSM file)."""

import asyncio
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from resseg_ray.errors import InputDataError
from resseg_ray.jsondoc import load_json
from resseg_ray.serving.annotations import validate_annotations
from resseg_ray.serving.export import EXPORT_FORMATS, export_buildings
from resseg_ray.serving.records import AnnotationsDocument, AnnotationsSaved
from resseg_ray.serving.requests import read_body
from resseg_ray.serving.routes.deps import scene_lookup, write_access
from resseg_ray.serving.routes.openapi import ANNOTATIONS, body
from resseg_ray.serving.routes.segment import busy
from resseg_ray.serving.scenes import MapScene
from resseg_ray.serving.service import MapService, Overloaded

__all__ = ["annotations_router"]


def annotations_router(service: MapService) -> APIRouter:
    """``/v1/scenes/{id}/annotations``, ``/suggestions`` and ``/export``."""
    router = APIRouter(prefix="/v1/scenes/{scene_id}")
    Scene = Annotated[MapScene, Depends(scene_lookup(service))]
    SceneOrMap = Annotated[MapScene, Depends(scene_lookup(service, with_map=True))]

    @router.get("/annotations")
    async def get_annotations(scene: Scene, version: int | None = None) -> AnnotationsDocument:
        """The newest saved annotations of a scene (or ``?version=N``), with the list of versions."""
        try:
            number, doc = await asyncio.to_thread(service.annotations.load, scene.id, version)
        except KeyError:
            raise HTTPException(404, f"scene {scene.id} has no annotation version {version}") from None
        versions = service.annotations.versions(scene.id)
        return AnnotationsDocument(version=number, versions=versions, annotations=doc)

    @router.post(
        "/annotations",
        dependencies=[Depends(write_access(service))],
        openapi_extra=body("json", json_schema=ANNOTATIONS),
    )
    async def save_annotations(scene: Scene, request: Request) -> AnnotationsSaved:
        """Save the annotated areas and the buildings inside them (a GeoJSON FeatureCollection in
        EPSG:4326, each feature's ``properties.kind`` ``area`` or ``building``; on a damage
        scene each building's ``properties.damage``: ``no-damage``, ``minor-damage``,
        ``major-damage`` or ``destroyed``) as a new version."""
        cfg = service.cfg
        limit = int(cfg.max_annotation_mb * 1024 * 1024)
        data = await read_body(request, limit, cfg.body_idle_timeout_s, cfg.body_timeout_s)
        try:
            doc = load_json(data, "the annotations")
        except InputDataError as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            clean = validate_annotations(doc, scene.bounds, damage=scene.kind == "damage")
        except InputDataError as exc:
            raise HTTPException(422, str(exc)) from None
        version = await asyncio.to_thread(service.annotations.save, scene.id, clean)
        kinds = [f["properties"]["kind"] for f in clean["features"]]
        return AnnotationsSaved(version=version, areas=kinds.count("area"), buildings=kinds.count("building"))

    @router.get(
        "/suggestions", response_class=Response, responses={200: {"content": {"application/geo+json": {}}}}
    )
    async def suggestions(scene: Scene, fraction: float = 0.07, region: int = 256) -> Response:
        """Where to annotate first: the most uncertain ``region`` px squares (mean entropy of the
        model's probabilities, highest first) covering ``fraction`` of the scene, GeoJSON in
        EPSG:4326 with their ``rank``; computed once per scene and parameters (409 for a damage
        scene)."""
        if scene.kind == "damage":
            raise HTTPException(
                409,
                f"scene {scene.id} is a damage scene: where to annotate first is ranked for building scenes",
            )
        if not 0 < fraction <= 0.5 or not 32 <= region <= 2048:
            raise HTTPException(400, "fraction must be in (0, 0.5] and region from 32 to 2048 pixels")
        key = (scene.id, round(fraction, 4), region)
        answer = service.suggested.get(key)
        if answer is None:
            info = await service.bundle_info()
            try:
                collection = await asyncio.to_thread(service.suggest, scene, info, fraction, region)
            except Overloaded:
                return busy("the model replicas are overloaded; retry shortly")
            answer = json.dumps(collection).encode()
            service.suggested.put(key, answer)
        return Response(answer, media_type="application/geo+json")

    @router.get(
        "/export",
        response_class=Response,
        responses={200: {"content": {"application/geo+json": {}, "application/xml": {}}}},
    )
    async def export(
        scene: SceneOrMap, fmt: Annotated[Literal["geojson", "osm"], Query(alias="format")] = "geojson"
    ) -> Response:
        """The buildings to take away: inside the annotated areas the drawn and accepted ones,
        outside them the model's (``map=r<N>``: the refined model's); GeoJSON (EPSG:4326) or a
        JOSM file (``format=osm``)."""
        version, annotations = await asyncio.to_thread(service.annotations.load, scene.id)
        data = await asyncio.to_thread(export_buildings, scene, annotations, fmt, service.settings)
        media, suffix = EXPORT_FORMATS[fmt]
        return Response(
            data,
            media_type=media,
            headers={
                "Content-Disposition": f'attachment; filename="{scene.id}_buildings.{suffix}"',
                "X-Resseg-Annotation-Version": str(version),
            },
        )

    return router
