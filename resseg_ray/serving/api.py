"""The HTTP API (FastAPI ingress): images in, georeferenced building maps out.

``POST /v1/segment`` takes a GeoTIFF (raw body or multipart file) or JSON ``{"uri":
"s3://..."}`` naming an object under one of ``serve.allowed_prefixes`` (a GeoTIFF, or a STAC
item whose raster asset is taken; or the item inline, ``{"item": {...}, "asset": "visual"}``),
and answers a mask
GeoTIFF (``format=mask``, default), a probability GeoTIFF (``format=prob``) or building
polygons (``format=geojson``). The image goes through :func:`~resseg_ray.inference.batch.
predict_scene`, the code ``jobs/predict.py`` runs, with a predictor whose network is the
model deployment: the same windows, normalisation, blending and output writers, so an
uploaded scene gives what ``predict.py`` gives on it.

Limits are checked before work is done: the body size (413), the image size from its
header before any pixel is decoded (413), that the body is a raster (415), its band count
(422), and that a URI is ``s3://`` under an allowed prefix (403: no local files, no other
schemes or hosts). When the model replicas' queues are full the answer is 503.
"""

import asyncio
import dataclasses
import hmac
import json
import os
import re
import tempfile
import time
from typing import Literal

import numpy as np
import pystac
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from resseg_ray import __version__
from resseg_ray.adapt.suggest import suggest_regions
from resseg_ray.config import PredictSection, ServeSection, StacSection, StorageConfig, from_dict
from resseg_ray.errors import ConfigError, InputDataError, ResSegError, failure_message
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stac import SceneInputs, item_raster
from resseg_ray.geo.storage import StorageSettings, gdal_env, read_bytes, scene_stem, workdir
from resseg_ray.inference.batch import predict_scene
from resseg_ray.inference.outputs import output_options, output_uris
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.stac_items import ModelProvenance, write_run_catalog
from resseg_ray.jsondoc import load_json
from resseg_ray.models.bundle import BundleInfo
from resseg_ray.serving.annotations import AnnotationStore, validate_annotations
from resseg_ray.serving.export import EXPORT_FORMATS, export_buildings
from resseg_ray.serving.lru import LRU
from resseg_ray.serving.refinements import (
    ACTIVE,
    JOB_ID,
    RefinementSpec,
    RefinementStore,
    cancel_refinement,
    current_record,
    new_record,
    parse_refine_request,
    running_refinements,
    start_refinement,
)
from resseg_ray.serving.scenes import SCENE_ID, MapScene, buildings_wgs84, load_map_scenes
from resseg_ray.serving.tiles import LAYERS, MAX_ZOOM, TileOutside, render_tile
from resseg_ray.serving.uploads import (
    PRIVATE_ROOTS,
    SlotsFull,
    UploadStore,
    scene_id_for,
    to_cog,
    without_paths,
)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
"""The map page and its JavaScript (``vendor/``: Leaflet from the npm registry, built by make)."""

api = FastAPI(
    docs_url=None,  # served below with Swagger UI shipped in the package (no CDN: no internet needed)
    redoc_url=None,
    title="resseg-ray building segmentation",
    version=__version__,
    description=(
        "Send a post-event GeoTIFF (or an allowed s3:// URI) and get a georeferenced building "
        "mask, probability raster or building polygons back; browse the scenes the service "
        "knows on the map page at /, their tiles and polygons under /v1/scenes."
    ),
)
api.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")


@api.exception_handler(HTTPException)
async def _without_server_paths(request: Request, exc: HTTPException) -> JSONResponse:
    """Every error answer as FastAPI gives it, its server paths replaced by file names."""
    detail = without_paths(exc.detail) if isinstance(exc.detail, str) else exc.detail
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


SUGGESTIONS_KEPT = 64
"""Suggestion answers a replica keeps (each a small GeoJSON; one per scene and parameters)."""
ENDED_KEPT = 256
"""Ended refinements' records a replica keeps in memory (the store on disk holds them all)."""
MEDIA = {"mask": "image/tiff", "prob": "image/tiff", "geojson": "application/geo+json"}
_SEGMENT = re.compile(r"[A-Za-z0-9!_.*'()=+,;@&$ -]+")


def _body(*kinds: str, json_schema: dict | None = None) -> dict:
    """OpenAPI ``requestBody`` of a route that reads its body itself (images, GeoJSON)."""
    content: dict[str, dict] = {}
    for kind in kinds:
        if kind == "image":
            content["image/tiff"] = {"schema": {"type": "string", "format": "binary"}}
            content["multipart/form-data"] = {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            }
        elif kind == "json":
            content["application/json"] = {"schema": json_schema or {"type": "object"}}
    return {"requestBody": {"required": True, "content": content}}


IMAGE_REF = {
    "type": "object",
    "description": "an s3:// GeoTIFF or STAC item under serve.allowed_prefixes, or an inline STAC item",
    "properties": {
        "uri": {"type": "string", "example": "s3://my-post-event-bucket/incoming/D12.tif"},
        "item": {"type": "object", "description": "a STAC item (GeoJSON Feature with assets)"},
        "asset": {"type": "string", "example": "visual"},
    },
}
ANNOTATIONS = {
    "type": "object",
    "description": "GeoJSON FeatureCollection (EPSG:4326) of Polygons/MultiPolygons; properties.kind is "
    "'area' or 'building' (optional source: drawn or predicted, predicted_id, map, note)",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {"type": "object"}},
    },
}
REFINE = {
    "type": "object",
    "properties": {
        "epochs": {
            "type": "integer",
            "minimum": 1,
            "description": "default: serve.refine_config's train.epochs",
        },
        "adapt_bn": {"type": "boolean", "default": False},
        "from": {
            "type": "string",
            "pattern": "^r[1-9][0-9]*$",
            "description": "refine this refinement's model",
        },
    },
    "additionalProperties": False,
}


def busy(detail: str) -> JSONResponse:
    """A 503 answer asking to retry in a second."""
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})


def _tile_numbers(z: str, x: str, y: str) -> tuple[int, int, int]:
    """A tile's zoom, column and row from its path; not whole numbers: 400."""
    try:
        return int(z), int(x), int(y)
    except ValueError:
        raise HTTPException(400, f"tile {z}/{x}/{y} does not exist: z, x and y are whole numbers") from None


class Overloaded(Exception):
    """The model replicas refused a window: their queues are full."""


def check_uri(uri: object, allowed: list[str]) -> str:
    """``uri`` when it is ``s3://bucket/key`` under one of ``allowed`` (s3:// prefixes);
    otherwise an HTTP 403 that says why (other schemes, local paths, ``..``)."""
    if not isinstance(uri, str) or not uri:
        raise HTTPException(400, 'the JSON body must be {"uri": "s3://bucket/key.tif"}')
    if not uri.startswith("s3://"):
        raise HTTPException(403, f"{uri!r}: only s3:// URIs under the allowed prefixes are accepted")
    parts = uri[len("s3://") :].split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") or not _SEGMENT.fullmatch(p) for p in parts):
        raise HTTPException(403, f"{uri!r} is not a plain s3://bucket/key URI")
    for prefix in allowed:
        p = prefix if prefix.endswith("/") else prefix + "/"
        if uri.startswith(p):
            return uri
    allowed_text = ", ".join(allowed) if allowed else "none are configured (serve.allowed_prefixes)"
    raise HTTPException(403, f"{uri!r} is outside the allowed prefixes: {allowed_text}")


def request_scene(doc: dict, allowed: list[str], settings: StorageSettings) -> str:
    """The raster a JSON body names: ``{"uri": "s3://.../scene.tif"}``, a STAC item by URI
    (``{"uri": "s3://.../item.json"}``) or inline (``{"item": {...}}``), with an optional
    ``"asset"`` key (default: the first of analytic, visual, data). The item's and the asset's
    URIs must both lie under ``allowed`` (403 otherwise); a document that is no STAC item, or
    an item without a raster asset, is a 422 that says why."""
    asset = doc.get("asset")
    if asset is not None and not isinstance(asset, str):
        raise HTTPException(400, '"asset" must be an asset key such as "visual"')
    try:
        StacSection(asset=asset)
    except ConfigError as exc:
        raise HTTPException(400, f'"asset": {exc}') from None
    raw = doc.get("item")
    if raw is None:
        uri = check_uri(doc.get("uri"), allowed)
        if not uri.lower().endswith(".json"):
            return uri
        try:
            raw = json.loads(read_bytes(uri, settings))
        except InputDataError as exc:
            raise HTTPException(404 if "does not exist" in str(exc) else 422, str(exc)) from None
        except ValueError:
            raise HTTPException(422, f"{uri} is not a STAC item (not JSON)") from None
        href: str | None = uri
    else:
        href = None
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        raise HTTPException(422, "the STAC document is not an item (a Feature with assets); give one item")
    try:
        item = pystac.Item.from_dict(raw, preserve_dict=False)
        if href is not None:
            item.set_self_href(href)
        raster, _ = item_raster(item, asset)
    except InputDataError as exc:
        raise HTTPException(422, str(exc)) from None
    except Exception as exc:  # pystac's errors for a malformed item
        raise HTTPException(422, f"not a valid STAC item: {exc}") from None
    return check_uri(raster, allowed)


async def read_body(request: Request, limit: int, idle_s: float = 10.0, total_s: float = 300.0) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes, and with 408
    when nothing arrives for ``idle_s`` seconds or the whole body takes over ``total_s``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body ({int(declared)} bytes) exceeds the limit of {limit} bytes")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_s
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        wait = min(idle_s, deadline - loop.time())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            break
        except TimeoutError:
            what = f"nothing for {idle_s:g} s" if wait >= idle_s else f"not all within {total_s:g} s"
            raise HTTPException(408, f"the request body stalled ({what}); send it again") from None
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_file(request: Request, body: bytes) -> bytes:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=10).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"unreadable multipart body: {exc.message}") from None
    files = [v for v in form.values() if isinstance(v, UploadFile)]
    if not files:
        raise HTTPException(400, "the multipart body holds no file; send the GeoTIFF as a file field")
    data = await files[0].read()
    await form.close()
    return data


def check_image(uri: str, info: BundleInfo, max_pixels: int, settings: StorageSettings) -> None:
    """Header checks before any pixel is decoded: a raster (415), not too large (413), with
    the model's band count (422); a missing S3 object is 404."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with gdal_env(settings), rasterio.open(uri, driver=settings.driver) as ds:
            width, height, count = ds.width, ds.height, ds.count
    except RasterioIOError as exc:
        if uri.startswith("s3://") and ("No such file" in str(exc) or "does not exist" in str(exc)):
            raise HTTPException(404, f"no readable object at {uri}") from None
        raise HTTPException(
            415, f"the image is not a readable raster (send a GeoTIFF): {str(exc).splitlines()[0]}"
        ) from None
    if width * height > max_pixels:
        raise HTTPException(
            413, f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if count not in (info.in_bands, info.in_bands + 1):  # + 1: an alpha band
        raise HTTPException(
            422,
            f"the image has {count} bands but the model expects {info.in_bands} "
            f"({', '.join(info.band_names)})",
        )


@serve.deployment(name="SegmentAPI")
@serve.ingress(api)
class SegmentAPI:
    """Cuts images into windows, sends them to the model deployment, stitches the results."""

    def __init__(
        self, model: DeploymentHandle, serve_cfg: dict, predict_cfg: dict, storage: dict, refine: dict
    ) -> None:
        self.model = model
        self.cfg: ServeSection = from_dict(ServeSection, serve_cfg)
        # uploads are not segmented with --adapt-bn (the weights live on the model replicas)
        self.predict = dataclasses.replace(
            from_dict(PredictSection, predict_cfg), batch_size=256, device="cpu", adapt_bn=False
        )
        # whatever a request names is hostile: GeoTIFF only, no sidecars (see StorageSettings)
        self.settings = dataclasses.replace(
            StorageSettings.resolve(from_dict(StorageConfig, storage)), untrusted=True
        )
        self._info: BundleInfo | None = None
        self.scenes = load_map_scenes(self.cfg.map_catalogs or [], self.settings)
        # images are limited here, not by the deployment's request limit, so the map page's
        # light requests (page, tiles, polygons) are not refused while images are segmented
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0
        self.annotations = AnnotationStore(self.cfg.annotations_dir)
        self._suggested: LRU[tuple[str, float, int], bytes] = LRU(SUGGESTIONS_KEPT)
        """Suggestions computed, by scene and parameters (a client may vary the parameters)."""
        self.refine = refine
        """The refinements' configuration (a :class:`~resseg_ray.config.Config` as a dict)."""
        self.refinements = RefinementStore(self.cfg.refine_dir)
        self._runners: dict[tuple[str, str], object] = {}
        """Handles of the refinement actors this replica started (kept while they run)."""
        self._ended: LRU[tuple[str, str], dict] = LRU(ENDED_KEPT)
        """Records of ended refinements (they no longer change; evicted ones are read again)."""
        self.uploads = UploadStore(self.cfg.scenes_dir)
        PRIVATE_ROOTS.update(
            os.path.abspath(d)
            for d in (workdir(), self.cfg.scenes_dir, self.cfg.annotations_dir, self.cfg.refine_dir)
        )
        for scene_id in self.uploads.ids():  # scenes added before a restart
            if scene_id not in self.scenes:
                self._added_scene(scene_id)
        self._adding: set[asyncio.Task] = set()
        self._provenance: ModelProvenance | None = None

    async def _bundle_info(self) -> BundleInfo:
        if self._info is None:
            self._info = await self.model.info.remote()
        return self._info

    @api.get("/docs", include_in_schema=False)
    async def api_docs(self) -> Response:
        """The OpenAPI page (Swagger UI from ``static/vendor``, built by make)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title=f"{api.title}: API",
            swagger_js_url="static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    @api.get("/", include_in_schema=False)
    async def map_page(self) -> FileResponse:
        """The map page (Leaflet, shipped in the package)."""
        return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

    def _added_scene(self, scene_id: str) -> MapScene | None:
        """A scene added at run time (by this replica or another), once it is ready."""
        try:
            record = self.uploads.load(scene_id)
        except KeyError:
            return None
        if record.get("state") != "ready":
            return None
        found = load_map_scenes([self.uploads.catalog(scene_id)], self.settings).get(scene_id)
        if found is not None:
            self.scenes[scene_id] = found
        return found

    def _scene(self, scene_id: str, map: str | None = None) -> MapScene:
        """A scene by id; with ``map`` (a succeeded refinement's id) its refined model's map."""
        scene = None
        if SCENE_ID.fullmatch(scene_id):
            scene = self.scenes.get(scene_id) or self._added_scene(scene_id)
        if scene is None:
            raise HTTPException(404, f"no scene {scene_id!r}; GET /v1/scenes lists them")
        if map is None:
            return scene
        record = self._record(scene_id, map)
        if record.get("state") != "succeeded":
            raise HTTPException(
                404,
                f"refinement {map} of {scene_id} has no map ({record.get('state')}); wait for it to succeed",
            )
        out = record.get("outputs")
        if not out:  # the verdict kept the served model: the refinement made no map
            decision = record.get("decision") or {}
            raise HTTPException(
                404, f"refinement {map} of {scene_id} has no map: {decision.get('line', 'none was made')}"
            )
        figures = record.get("figures") or {}
        props = {
            **scene.properties,
            "resseg_ray:buildings": figures.get("buildings_after"),
            "resseg_ray:model": record.get("model"),
            "resseg_ray:refinement": map,
        }
        return dataclasses.replace(
            scene, mask=out["mask"], prob=out.get("prob"), buildings=out.get("buildings"), properties=props
        )

    def _record(self, scene_id: str, job: str) -> dict:
        """A refinement's current record (404 when there is none); ended ones are kept in memory."""
        if not JOB_ID.fullmatch(job):
            raise HTTPException(404, f"no refinement {job!r}; refinement ids are r1, r2, ...")
        ended = self._ended.get((scene_id, job))
        if ended is not None:
            return ended
        try:
            record = current_record(self.refinements, scene_id, job)
            if record.get("state") not in ACTIVE:
                self._ended.put((scene_id, job), record)
                self._runners.pop((scene_id, job), None)
            return record
        except KeyError:
            raise HTTPException(
                404,
                f"scene {scene_id} has no refinement {job}; GET /v1/scenes/{scene_id}/refinements lists them",
            ) from None

    @api.get("/v1/scenes")
    async def list_scenes(self) -> dict:
        """The scenes the service knows (from ``serve.map_catalogs``), with their bounds and layers."""
        for scene_id in await asyncio.to_thread(self.uploads.ids):  # added by another replica
            if scene_id not in self.scenes:
                await asyncio.to_thread(self._added_scene, scene_id)
        ordered = sorted(self.scenes.values(), key=lambda s: s.id)
        return {"scenes": [{**s.summary(), "state": "ready"} for s in ordered]}

    @api.get("/v1/scenes/{scene_id}")
    async def scene_info(self, scene_id: str) -> dict:
        """One scene: bounds (EPSG:4326), bands, default true-colour bands, layers, model, and
        ``state`` ``ready``; a scene being added answers its ``state`` (``segmenting``, or
        ``failed`` with the ``error``) and the time of each stage."""
        if SCENE_ID.fullmatch(scene_id) and scene_id not in self.scenes:
            try:
                record = await asyncio.to_thread(self.uploads.load, scene_id)
            except KeyError:
                record = None
            if record is not None and record.get("state") != "ready":
                return record
        return {**self._scene(scene_id).summary(), "state": "ready"}

    @api.post("/v1/scenes", status_code=202, openapi_extra=_body("image", "json", json_schema=IMAGE_REF))
    async def add_scene(self, request: Request, name: str | None = None) -> JSONResponse:
        """Add a scene to the map: a GeoTIFF (raw body or multipart file), or JSON ``{"uri":
        "s3://..."}`` / ``{"item": {...}}`` under ``serve.allowed_prefixes``, as ``POST
        /v1/segment`` takes them; ``name`` is its id (default the file's stem). The checks of
        ``/v1/segment`` answer at once (413, 415, 422, 403); then (202) the image is kept as a
        COG and segmented by the model off the request, and ``GET /v1/scenes/{id}`` tells when it
        is ``ready``. 409 when the id is taken."""
        self._check_write(request)
        if name is not None and not SCENE_ID.fullmatch(name):
            raise HTTPException(
                400,
                f"name={name!r}: 1-128 letters, digits, '_', '.' or '-', starting with one of the first two",
            )
        try:  # a place is held from before the body is read until the scene is claimed
            with self.uploads.slot(self.cfg.max_added_scenes, self.cfg.body_timeout_s + 600):
                scene_id, source, incoming, info = await self._receive_scene(request, name)
        except SlotsFull as full:
            raise HTTPException(
                403,
                f"the service holds {self.cfg.max_added_scenes} added scenes (serve.max_added_scenes: "
                f"{full}); remove some (DELETE /v1/scenes/{{id}}) first",
            ) from None
        task = asyncio.create_task(self._add(scene_id, source, incoming, info))
        self._adding.add(task)
        task.add_done_callback(self._adding.discard)
        return JSONResponse(self.uploads.load(scene_id), status_code=202)

    async def _receive_scene(
        self, request: Request, name: str | None
    ) -> tuple[str, str, str | None, BundleInfo]:
        """Read and check an added scene's image and claim its id: (id, image, the uploaded
        file to remove once kept, the model's metadata)."""
        uri, body = await self._image_request(request)
        info = await self._bundle_info()
        incoming = None
        if uri is not None:
            source = uri
        else:
            os.makedirs(self.uploads.folder, exist_ok=True)
            fd, incoming = tempfile.mkstemp(dir=self.uploads.folder, prefix=".incoming-", suffix=".tif")
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            source = incoming
        try:
            await asyncio.to_thread(check_image, source, info, self.cfg.max_pixels, self.settings)
            scene_id = scene_id_for(name, None if incoming else source)
            if scene_id in self.scenes:
                raise HTTPException(409, f"scene {scene_id!r} exists; give another name=")
            try:
                self.uploads.claim(scene_id, {"source": "upload" if incoming else source})
            except FileExistsError:
                raise HTTPException(409, f"scene {scene_id!r} exists; give another name=") from None
        except BaseException:
            if incoming is not None:
                os.unlink(incoming)
            raise
        return scene_id, source, incoming, info

    async def _add(self, scene_id: str, source: str, incoming: str | None, info: BundleInfo) -> None:
        """Keep the image as a COG and segment it, holding one of the ingress's image slots."""
        record = self.uploads.load(scene_id)
        try:
            if self._provenance is None:
                self._provenance = await self.model.provenance.remote()
            ran = await self.model.source.remote()  # the replicas' engine, for the STAC item
            engine = " ".join(ran[k] for k in ("runtime", "precision") if k in ran)
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.cfg.ingress_max_ongoing_requests)
            async with self._slots:
                await asyncio.to_thread(self._segment_added, scene_id, source, info, record, engine)
        except Exception as exc:
            await asyncio.to_thread(self.uploads.fail, scene_id, record, failure_message(exc))
        finally:
            if incoming is not None and os.path.exists(incoming):
                os.unlink(incoming)

    def _segment_added(self, scene_id: str, source: str, info: BundleInfo, record: dict, engine: str) -> None:
        """Run in a worker thread: the COG copy, ``jobs/predict.py``'s path with the model
        deployment, the STAC catalog; then the scene is on the map."""
        assert self._provenance is not None
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        image = self.uploads.image(scene_id)
        to_cog(source, image, self.settings)
        stages["store"] = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        options = dataclasses.replace(
            self.predict, prob=True, polygons=True, osm=False, vector_format="geojson",
            runtime=self.cfg.runtime, precision=self.cfg.precision,
        )  # fmt: skip
        predictor = ScenePredictor(info, options, forward=self._forward_waiting)
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

    @api.delete("/v1/scenes/{scene_id}")
    async def remove_scene(self, scene_id: str, request: Request) -> dict:
        """Remove a scene added at run time (its image and outputs; its annotations and
        refinements stay). Scenes of ``serve.map_catalogs`` are not removed here (403)."""
        self._check_write(request)
        try:
            record = (
                await asyncio.to_thread(self.uploads.load, scene_id) if SCENE_ID.fullmatch(scene_id) else None
            )
        except KeyError:
            record = None
        if record is None:
            if scene_id in self.scenes:
                raise HTTPException(
                    403, f"scene {scene_id} comes from serve.map_catalogs; change the configuration"
                )
            raise HTTPException(404, f"no scene {scene_id!r}; GET /v1/scenes lists them")
        if record.get("state") == "segmenting":
            raise HTTPException(409, f"scene {scene_id} is being segmented; remove it once it is ready")
        for job in await asyncio.to_thread(self.refinements.jobs, scene_id):
            if (await asyncio.to_thread(self._record, scene_id, job)).get("state") in ACTIVE:
                raise HTTPException(
                    409, f"refinement {job} of {scene_id} runs; cancel it or let it end first"
                )
        await asyncio.to_thread(self.uploads.remove, scene_id)
        self.scenes.pop(scene_id, None)
        return {"removed": scene_id}

    @api.get("/v1/scenes/{scene_id}/tiles/{layer}/{z}/{x}/{y}.png")
    async def scene_tile(
        self,
        scene_id: str,
        layer: str,
        z: str,
        x: str,
        y: str,
        bands: str | None = None,
        map: str | None = None,
    ) -> Response:
        """A 256 px web-mercator PNG of ``imagery`` (``bands=R,G,B``, 1-based; default true
        colour), ``probability`` or ``mask`` (of the served model, or with ``map=r<N>`` of a
        refinement's model); 204 where the tile misses the scene; 400 for a tile that does not
        exist (``z``, ``x``, ``y`` whole numbers, zoom 0-24)."""
        scene = self._scene(scene_id, map)
        if layer not in LAYERS:
            raise HTTPException(404, f"no layer {layer!r}; layers: {', '.join(LAYERS)}")
        tile = _tile_numbers(z, x, y)  # a 400 (documented), not FastAPI's 422 for a bad int
        if not (0 <= tile[0] <= MAX_ZOOM and 0 <= tile[1] < 2 ** tile[0] and 0 <= tile[2] < 2 ** tile[0]):
            raise HTTPException(
                400, f"tile {z}/{x}/{y} does not exist (zoom 0-{MAX_ZOOM}, x and y below 2^z)"
            )
        rgb = None
        if bands is not None:
            try:
                rgb = tuple(int(b) for b in bands.split(","))
            except ValueError:
                rgb = ()
            if len(rgb) != 3 or not all(1 <= b <= len(scene.band_names) for b in rgb):
                raise HTTPException(
                    400,
                    f"bands={bands!r}: give three band indexes from 1 to {len(scene.band_names)}, e.g. 3,2,1",
                )
        try:
            png = await asyncio.to_thread(render_tile, scene, layer, *tile, self.settings, rgb)
        except TileOutside:
            return Response(status_code=204)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=60"})

    @api.get("/v1/scenes/{scene_id}/buildings")
    async def scene_buildings(self, scene_id: str, map: str | None = None) -> Response:
        """The model's building polygons of the scene as GeoJSON in EPSG:4326 (``map=r<N>``: the
        refined model's)."""
        scene = self._scene(scene_id, map)
        if scene.buildings is None:
            raise HTTPException(404, f"scene {scene_id} has no building polygons (predict --polygons)")
        data = await asyncio.to_thread(buildings_wgs84, scene, self.settings)
        return Response(data, media_type="application/geo+json")

    def _check_write(self, request: Request) -> None:
        """With ``serve.api_token``, writes need ``Authorization: Bearer <token>`` (401)."""
        token = self.cfg.api_token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(
                401,
                "this service needs a token for writes: send Authorization: Bearer <serve.api_token>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @api.get("/v1/scenes/{scene_id}/annotations")
    async def get_annotations(self, scene_id: str, version: int | None = None) -> dict:
        """The newest saved annotations of a scene (or ``?version=N``), with the list of versions."""
        self._scene(scene_id)
        try:
            number, doc = await asyncio.to_thread(self.annotations.load, scene_id, version)
        except KeyError:
            raise HTTPException(404, f"scene {scene_id} has no annotation version {version}") from None
        return {"version": number, "versions": self.annotations.versions(scene_id), "annotations": doc}

    @api.post("/v1/scenes/{scene_id}/annotations", openapi_extra=_body("json", json_schema=ANNOTATIONS))
    async def save_annotations(self, scene_id: str, request: Request) -> dict:
        """Save the annotated areas and the buildings inside them (a GeoJSON FeatureCollection in
        EPSG:4326, each feature's ``properties.kind`` ``area`` or ``building``) as a new version."""
        self._check_write(request)
        scene = self._scene(scene_id)
        limit = int(self.cfg.max_annotation_mb * 1024 * 1024)
        body = await read_body(request, limit, self.cfg.body_idle_timeout_s, self.cfg.body_timeout_s)
        try:
            doc = load_json(body, "the annotations")
        except InputDataError as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            clean = validate_annotations(doc, scene.bounds)
        except InputDataError as exc:
            raise HTTPException(422, str(exc)) from None
        version = await asyncio.to_thread(self.annotations.save, scene_id, clean)
        kinds = [f["properties"]["kind"] for f in clean["features"]]
        return {"version": version, "areas": kinds.count("area"), "buildings": kinds.count("building")}

    @api.get("/v1/scenes/{scene_id}/suggestions")
    async def suggestions(self, scene_id: str, fraction: float = 0.07, region: int = 256) -> Response:
        """Where to annotate first: the most uncertain ``region`` px squares (mean entropy of the
        model's probabilities, highest first) covering ``fraction`` of the scene, GeoJSON in
        EPSG:4326 with their ``rank``; computed once per scene and parameters."""
        scene = self._scene(scene_id)
        if not 0 < fraction <= 0.5 or not 32 <= region <= 2048:
            raise HTTPException(400, "fraction must be in (0, 0.5] and region from 32 to 2048 pixels")
        key = (scene_id, round(fraction, 4), region)
        body = self._suggested.get(key)
        if body is None:
            info = await self._bundle_info()
            try:
                collection = await asyncio.to_thread(self._suggest, scene, info, fraction, region)
            except Overloaded:
                return busy("the model replicas are overloaded; retry shortly")
            body = json.dumps(collection).encode()
            self._suggested.put(key, body)
        return Response(body, media_type="application/geo+json")

    def _suggest(self, scene: MapScene, info: BundleInfo, fraction: float, region: int) -> dict:
        """Run in a worker thread: the entropy ranking of ``jobs/suggest_annotation.py``, its
        windows segmented by the model deployment."""
        predictor = ScenePredictor(info, self.predict, forward=self._forward)
        opened = open_scene(
            scene.imagery, self.settings, bands=self.predict.bands, expected_bands=info.in_bands
        )
        return suggest_regions(predictor, opened, self.settings, fraction, region, wgs84=True)

    @api.get("/v1/scenes/{scene_id}/export")
    async def export(
        self, scene_id: str, format: Literal["geojson", "osm"] = "geojson", map: str | None = None
    ) -> Response:
        """The buildings to take away: inside the annotated areas the drawn and accepted ones,
        outside them the model's (``map=r<N>``: the refined model's); GeoJSON (EPSG:4326) or a
        JOSM file (``format=osm``)."""
        scene = self._scene(scene_id, map)
        version, annotations = await asyncio.to_thread(self.annotations.load, scene_id)
        data = await asyncio.to_thread(export_buildings, scene, annotations, format, self.settings)
        media, suffix = EXPORT_FORMATS[format]
        return Response(
            data,
            media_type=media,
            headers={
                "Content-Disposition": f'attachment; filename="{scene_id}_buildings.{suffix}"',
                "X-Resseg-Annotation-Version": str(version),
            },
        )

    @api.post(
        "/v1/scenes/{scene_id}/refinements", status_code=202, openapi_extra=_body("json", json_schema=REFINE)
    )
    async def start_refinement(self, scene_id: str, request: Request) -> JSONResponse:
        """Refine the served model (or ``"from": "r<N>"``, a refinement of this scene) on the
        scene's newest saved annotations, off the HTTP path: the answer (202) is the new
        refinement's record; its progress is at ``GET .../refinements/{id}``. Optional JSON body:
        ``{"epochs": 20, "adapt_bn": false, "from": "r1"}``. 503 when ``serve.max_refine_jobs``
        refinements run already; 409 when the scene has no saved annotated area."""
        self._check_write(request)
        scene = self._scene(scene_id)
        body = await read_body(request, 64 * 1024, self.cfg.body_idle_timeout_s, self.cfg.body_timeout_s)
        try:
            doc = load_json(body, "the request body") if body.strip() else {}
            ask = parse_refine_request(doc, self.cfg.max_refine_epochs)
        except (ValueError, InputDataError) as exc:  # a bad field, or not JSON
            raise HTTPException(400, f"refinement request: {exc}") from None
        version, annotations = await asyncio.to_thread(self.annotations.load, scene_id)
        if not any(f["properties"]["kind"] == "area" for f in annotations["features"]):
            raise HTTPException(
                409,
                f"scene {scene_id} has no saved annotated area: draw the area you annotated and its "
                "buildings, save them, then refine",
            )
        parent, parent_mask, parent_buildings = (
            self.cfg.model,
            scene.mask,
            scene.properties.get("resseg_ray:buildings"),
        )
        if ask.start is not None:
            start = self._scene(scene_id, ask.start)  # 404 unless it succeeded
            parent = self._record(scene_id, ask.start)["model"]
            parent_mask, parent_buildings = start.mask, start.properties.get("resseg_ray:buildings")
        assert parent is not None  # build_app resolves serve.model
        epochs = ask.epochs or int(self.refine["train"]["epochs"])
        refine = {**self.refine, "train": {**self.refine["train"], "epochs": epochs}}
        # the count and the start happen with no await between: one replica never over-starts
        if running_refinements() >= self.cfg.max_refine_jobs:
            return busy(
                f"{self.cfg.max_refine_jobs} refinement(s) run already (serve.max_refine_jobs); "
                "retry when one has ended"
            )
        record = new_record(version, epochs, parent, ask.adapt_bn, ask.start)
        job = self.refinements.create(scene_id, record)
        spec = RefinementSpec(
            scene_id=scene_id,
            job=job,
            store=self.refinements.folder,
            imagery=scene.imagery,
            parent=parent,
            parent_mask=parent_mask,
            parent_buildings=parent_buildings,
            annotations=annotations,
            annotation_version=version,
            config=refine,
            adapt_bn=ask.adapt_bn,
        )
        self._runners[(scene_id, job)] = start_refinement(spec)
        return JSONResponse(self.refinements.load(scene_id, job), status_code=202)

    @api.get("/v1/scenes/{scene_id}/refinements")
    async def list_refinements(self, scene_id: str) -> dict:
        """The scene's refinements, oldest first, each its record (state, progress, figures)."""
        self._scene(scene_id)
        jobs = await asyncio.to_thread(self.refinements.jobs, scene_id)
        records = [await asyncio.to_thread(self._record, scene_id, j) for j in jobs]
        return {"refinements": records}

    @api.get("/v1/scenes/{scene_id}/refinements/{job}")
    async def refinement(self, scene_id: str, job: str) -> dict:
        """One refinement: ``state`` (queued, running, succeeded, failed, cancelled), ``stage``,
        ``epoch`` of ``epochs`` and each epoch's losses (``history``), and when it succeeded the
        refined model (``model``, MLflow run and registered version) and its ``figures``; when it
        failed, ``error`` says why (the served model and map are unchanged)."""
        self._scene(scene_id)
        return await asyncio.to_thread(self._record, scene_id, job)

    @api.delete("/v1/scenes/{scene_id}/refinements/{job}")
    async def cancel_refinement(self, scene_id: str, job: str, request: Request) -> dict:
        """Cancel a refinement that has not ended (its training stops; nothing is registered
        after); a refinement that has ended is left as it is (409)."""
        self._check_write(request)
        self._scene(scene_id)
        record = await asyncio.to_thread(self._record, scene_id, job)
        if record.get("state") not in ACTIVE:
            raise HTTPException(409, f"refinement {job} of {scene_id} has ended ({record.get('state')})")
        record = await asyncio.to_thread(cancel_refinement, self.refinements, scene_id, job)
        self._runners.pop((scene_id, job), None)
        return record

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress answers (model replicas are checked by Serve itself)."""
        return {"status": "ok"}

    @api.get("/v1/model")
    async def model_info(self) -> dict:
        """The served model: architecture, bands, classes, normalisation, version."""
        info = await self._bundle_info()
        source = await self.model.source.remote()
        extra = info.extra
        return {
            "architecture": info.architecture,
            "bands": info.band_names,
            "in_bands": info.in_bands,
            "classes": info.class_names,
            "normalization": {
                "mode": extra.get("normalization", "pooled"),
                "mean": info.norm_mean,
                "std": info.norm_std,
            },
            "tile_size": info.tile_size,
            "model_uri": source["uri"],
            "engine": {k: source[k] for k in ("device", "runtime", "precision") if k in source},
            "version": {
                "mlflow_run_id": extra.get("mlflow_run_id"),
                "run_name": extra.get("run_name"),
                "epoch": extra.get("epoch"),
                "created": info.created,
                "resseg_ray": __version__,
            },
            "windowing": {
                "window": self.predict.window,
                "overlap": self.predict.overlap,
                "blend": self.predict.blend,
            },
        }

    @api.post("/v1/segment", openapi_extra=_body("image", "json", json_schema=IMAGE_REF))
    async def segment(self, request: Request, format: Literal["mask", "prob", "geojson"] = "mask"):
        """Segment a GeoTIFF (raw body or multipart file) or JSON ``{"uri": "s3://..."}``."""
        start = time.perf_counter()
        # the body first, under its own deadlines (serve.body_idle_timeout_s, body_timeout_s):
        # an image slot is held only while an image is segmented, never while a body trickles in
        image = await self._image_request(request)
        if self._slots is None:  # made in the replica's own event loop
            self._slots = asyncio.Semaphore(self.cfg.ingress_max_ongoing_requests)
        if self._slots.locked() and self._waiting >= self.cfg.ingress_max_queued_requests:
            return busy("the service is busy with other images; retry shortly")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            return await self._segment_request(image, format, start)
        finally:
            self._slots.release()

    async def _image_request(self, request: Request) -> tuple[str | None, bytes]:
        """What an image request sends, read once for /v1/segment and /v1/scenes: ``(uri, b"")``
        for JSON naming an allowed s3:// image or STAC item, else ``(None, the GeoTIFF's bytes)``
        from a raw or multipart body (400 when empty or malformed, 413 over the limit)."""
        limit = int(self.cfg.max_body_mb * 1024 * 1024)
        body = await read_body(request, limit, self.cfg.body_idle_timeout_s, self.cfg.body_timeout_s)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                doc = load_json(body, "the JSON body")
            except InputDataError as exc:
                raise HTTPException(400, str(exc)) from None
            if not isinstance(doc, dict):
                raise HTTPException(400, 'the JSON body must be {"uri": "s3://bucket/key.tif"}')
            return await asyncio.to_thread(request_scene, doc, self.cfg.allowed_prefixes, self.settings), b""
        if ctype == "multipart/form-data":
            body = await _multipart_file(request, body)
        if not body:
            raise HTTPException(400, "empty body: send a GeoTIFF")
        return None, body

    async def _segment_request(self, image: tuple[str | None, bytes], format: str, start: float) -> Response:
        named, body = image
        info = await self._bundle_info()
        with tempfile.TemporaryDirectory(prefix="resseg-serve-") as tmp:
            if named is not None:
                uri = named
            else:
                uri = os.path.join(tmp, "image.tif")
                with open(uri, "wb") as f:
                    f.write(body)
            try:
                data = await asyncio.to_thread(self._segment, uri, tmp, format, info)
            except Overloaded:
                return busy("the model replicas are overloaded; retry shortly")
        stem = scene_stem(uri)
        suffix = "buildings.geojson" if format == "geojson" else f"{format}.tif"
        return Response(
            data,
            media_type=MEDIA[format],
            headers={
                "Content-Disposition": f'attachment; filename="{stem}_{suffix}"',
                "X-Resseg-Seconds": f"{time.perf_counter() - start:.3f}",
            },
        )

    def _segment(self, uri: str, tmp: str, fmt: str, info: BundleInfo) -> bytes:
        """Run in a worker thread: checks, then the batch path of ``jobs/predict.py``."""
        check_image(uri, info, self.cfg.max_pixels, self.settings)
        # batch_size 256: a whole window row at once, its windows go out concurrently
        options = dataclasses.replace(
            self.predict, prob=fmt == "prob", polygons=fmt == "geojson", osm=False, vector_format="geojson"
        )
        predictor = ScenePredictor(info, options, forward=self._forward)
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

    def _forward_waiting(self, windows: np.ndarray, patience_s: float = 300.0) -> np.ndarray:
        """:meth:`_forward` for work off the request path: when the model replicas are full it
        waits and asks again (up to ``patience_s``) instead of giving up."""
        deadline = time.monotonic() + patience_s
        delay = 0.05
        while True:
            try:
                return self._forward(windows)
            except Overloaded:
                if time.monotonic() + delay > deadline:
                    raise InputDataError(
                        f"the model replicas stayed overloaded for {patience_s:g} s; try again later"
                    ) from None
                time.sleep(delay)
                delay = min(2 * delay, 2.0)

    def _forward(self, windows: np.ndarray) -> np.ndarray:
        """Each window to the model deployment (batched there with other requests' windows)."""
        responses = [self.model.predict.remote(w) for w in windows]
        try:
            return np.stack([r.result() for r in responses])
        except BackPressureError:
            for r in responses:
                r.cancel()
            raise Overloaded() from None
