"""The scenes of the map: list, one scene, add one (an image segmented off the request),
remove one, its web-mercator tiles and its building polygons."""

import asyncio
import os
import tempfile
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from resseg_ray.models.bundle import BundleInfo
from resseg_ray.serving.records import ACTIVE, Removed, SceneList, SceneRecord, SceneState, SceneSummary
from resseg_ray.serving.requests import check_image, image_request
from resseg_ray.serving.routes.deps import scene_lookup, write_access
from resseg_ray.serving.routes.openapi import IMAGE_REF, body
from resseg_ray.serving.scenes import SCENE_ID, MapScene, buildings_wgs84
from resseg_ray.serving.service import MapService
from resseg_ray.serving.tiles import LAYERS, MAX_ZOOM, TileOutside, render_tile
from resseg_ray.serving.uploads import SlotsFull, scene_id_for

__all__ = ["scenes_router"]


def _tile_numbers(z: str, x: str, y: str) -> tuple[int, int, int]:
    """A tile's zoom, column and row from its path: a 400 (documented), not FastAPI's 422, when
    they are not whole numbers or the tile does not exist."""
    try:
        tile = int(z), int(x), int(y)
    except ValueError:
        raise HTTPException(400, f"tile {z}/{x}/{y} does not exist: z, x and y are whole numbers") from None
    if not (0 <= tile[0] <= MAX_ZOOM and 0 <= tile[1] < 2 ** tile[0] and 0 <= tile[2] < 2 ** tile[0]):
        raise HTTPException(400, f"tile {z}/{x}/{y} does not exist (zoom 0-{MAX_ZOOM}, x and y below 2^z)")
    return tile


def _rgb(bands: str | None, scene: MapScene) -> tuple[int, ...] | None:
    """``bands=R,G,B`` (1-based) checked against the scene's bands (400 otherwise)."""
    if bands is None:
        return None
    try:
        rgb = tuple(int(b) for b in bands.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(1 <= b <= len(scene.band_names) for b in rgb):
        raise HTTPException(
            400, f"bands={bands!r}: give three band indexes from 1 to {len(scene.band_names)}, e.g. 3,2,1"
        )
    return rgb


def scenes_router(service: MapService) -> APIRouter:
    """``/v1/scenes``: the scenes, one scene, add and remove, tiles and building polygons."""
    router = APIRouter(prefix="/v1/scenes")
    writes = [Depends(write_access(service))]
    SceneOrMap = Annotated[MapScene, Depends(scene_lookup(service, with_map=True))]

    @router.get("")
    async def list_scenes() -> SceneList:
        """The scenes the service knows (``serve.map_catalogs`` and those added), with their
        bounds and layers."""
        for scene_id in await asyncio.to_thread(service.uploads.ids):  # added by another replica
            if scene_id not in service.scenes:
                await asyncio.to_thread(service.added_scene, scene_id)
        ordered = sorted(service.scenes.values(), key=lambda s: s.id)
        return SceneList(scenes=[SceneSummary(**s.summary()) for s in ordered])

    @router.get("/{scene_id}", response_model=SceneSummary | SceneRecord, response_model_exclude_unset=True)
    async def scene_info(scene_id: str) -> SceneSummary | SceneRecord:
        """One scene: bounds (EPSG:4326), bands, default true-colour bands, layers, model, and
        ``state`` ``ready``; a scene being added answers its ``state`` (``segmenting``, or
        ``failed`` with the ``error``) and the time of each stage."""
        if SCENE_ID.fullmatch(scene_id) and scene_id not in service.scenes:
            try:
                record = await asyncio.to_thread(service.upload_record, scene_id)
            except KeyError:
                record = None
            if record is not None and record.state is not SceneState.READY:
                return record
        return SceneSummary(**service.scene(scene_id).summary(), state=SceneState.READY)

    @router.post(
        "", status_code=202, dependencies=writes, openapi_extra=body("image", "json", json_schema=IMAGE_REF)
    )
    async def add_scene(request: Request, name: str | None = None) -> JSONResponse:
        """Add a scene to the map: a GeoTIFF (raw body or multipart file), or JSON ``{"uri":
        "s3://..."}`` / ``{"item": {...}}`` under ``serve.allowed_prefixes``, as ``POST
        /v1/segment`` takes them; ``name`` is its id (default the file's stem). The checks of
        ``/v1/segment`` answer at once (413, 415, 422, 403); then (202) the image is kept as a
        COG and segmented by the model off the request, and ``GET /v1/scenes/{id}`` tells when
        it is ``ready``. 409 when the id is taken."""
        if name is not None and not SCENE_ID.fullmatch(name):
            raise HTTPException(
                400,
                f"name={name!r}: 1-128 letters, digits, '_', '.' or '-', starting with one of the first two",
            )
        limit = service.cfg.max_added_scenes
        try:  # a place is held from before the body is read until the scene is claimed
            with service.uploads.slot(limit, service.cfg.body_timeout_s + 600):
                scene_id, source, incoming, info = await _receive(service, request, name)
        except SlotsFull as full:
            raise HTTPException(
                403,
                f"the service holds {limit} added scenes (serve.max_added_scenes: {full}); remove some "
                "(DELETE /v1/scenes/{id}) first",
            ) from None
        service.start_adding(scene_id, source, incoming, info)
        return JSONResponse(service.uploads.load(scene_id), status_code=202)

    @router.delete("/{scene_id}", dependencies=writes)
    async def remove_scene(scene_id: str) -> Removed:
        """Remove a scene added at run time (its image and outputs; its annotations and
        refinements stay). Scenes of ``serve.map_catalogs`` are not removed here (403)."""
        try:
            record = (
                await asyncio.to_thread(service.upload_record, scene_id)
                if SCENE_ID.fullmatch(scene_id)
                else None
            )
        except KeyError:
            record = None
        if record is None:
            if scene_id in service.scenes:
                raise HTTPException(
                    403, f"scene {scene_id} comes from serve.map_catalogs; change the configuration"
                )
            raise HTTPException(404, f"no scene {scene_id!r}; GET /v1/scenes lists them")
        if record.state is SceneState.SEGMENTING:
            raise HTTPException(409, f"scene {scene_id} is being segmented; remove it once it is ready")
        for job in await asyncio.to_thread(service.refinements.jobs, scene_id):
            if (await asyncio.to_thread(service.record, scene_id, job)).state in ACTIVE:
                raise HTTPException(
                    409, f"refinement {job} of {scene_id} runs; cancel it or let it end first"
                )
        await asyncio.to_thread(service.uploads.remove, scene_id)
        service.scenes.pop(scene_id, None)
        return Removed(removed=scene_id)

    @router.get(
        "/{scene_id}/tiles/{layer}/{z}/{x}/{y}.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 204: {"description": "the tile misses the scene"}},
    )
    async def scene_tile(
        scene: SceneOrMap,
        layer: str,
        z: str,
        x: str,
        y: str,
        bands: Annotated[str | None, Query(description="R,G,B band indexes (1-based) of imagery")] = None,
    ) -> Response:
        """A 256 px web-mercator PNG of ``imagery`` (``bands=R,G,B``, 1-based; default true
        colour), ``probability`` or ``mask`` (of the served model, or with ``map=r<N>`` of a
        refinement's model); of a damage scene ``imagery`` (pre-event), ``post`` (post-event)
        or ``damage`` (the classes' colours); 204 where the tile misses the scene; 400 for a
        tile that does not exist (``z``, ``x``, ``y`` whole numbers, zoom 0-24); 404 for a
        layer the scene has not (``GET /v1/scenes/{id}`` lists its ``layers``)."""
        if layer not in LAYERS:
            raise HTTPException(404, f"no layer {layer!r}; layers: {', '.join(LAYERS)}")
        if layer not in scene.layers:
            raise HTTPException(
                404, f"scene {scene.id} has no layer {layer!r}; its layers: {', '.join(scene.layers)}"
            )
        tile = _tile_numbers(z, x, y)
        rgb = _rgb(bands, scene)
        try:
            png = await asyncio.to_thread(render_tile, scene, layer, *tile, service.settings, rgb)
        except TileOutside:
            return Response(status_code=204)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=60"})

    @router.get(
        "/{scene_id}/buildings",
        response_class=Response,
        responses={200: {"content": {"application/geo+json": {}}}},
    )
    async def scene_buildings(scene: SceneOrMap) -> Response:
        """The model's building polygons of the scene as GeoJSON in EPSG:4326 (``map=r<N>``: the
        refined model's)."""
        if scene.buildings is None:
            raise HTTPException(404, f"scene {scene.id} has no building polygons (predict --polygons)")
        data = await asyncio.to_thread(buildings_wgs84, scene, service.settings)
        return Response(data, media_type="application/geo+json")

    return router


async def _receive(
    service: MapService, request: Request, name: str | None
) -> tuple[str, str, str | None, BundleInfo]:
    """Read and check an added scene's image and claim its id: (id, image, the uploaded file to
    remove once kept, the model's metadata)."""
    uri, data = await image_request(request, service.cfg, service.settings)
    info = await service.bundle_info()
    incoming = None
    if uri is not None:
        source = uri
    else:
        os.makedirs(service.uploads.folder, exist_ok=True)
        fd, incoming = tempfile.mkstemp(dir=service.uploads.folder, prefix=".incoming-", suffix=".tif")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        source = incoming
    try:
        await asyncio.to_thread(check_image, source, info, service.cfg.max_pixels, service.settings)
        scene_id = scene_id_for(name, None if incoming else source)
        if scene_id in service.scenes:
            raise HTTPException(409, f"scene {scene_id!r} exists; give another name=")
        try:
            service.uploads.claim(scene_id, {"source": "upload" if incoming else source})
        except FileExistsError:
            raise HTTPException(409, f"scene {scene_id!r} exists; give another name=") from None
    except BaseException:
        if incoming is not None:
            os.unlink(incoming)
        raise
    return scene_id, source, incoming, info
