"""``POST /v1/segment``: a GeoTIFF (raw body or multipart file) or JSON ``{"uri": "s3://..."}``
naming an object under one of ``serve.allowed_prefixes`` (a GeoTIFF, or a STAC item whose
raster asset is taken; or the item inline, ``{"item": {...}, "asset": "visual"}``) in; a mask
GeoTIFF (``format=mask``, default), a probability GeoTIFF (``format=prob``) or building
polygons (``format=geojson``) out.

Limits are checked before work is done: the body size (413), the image size from its header
before any pixel is decoded (413), that the body is a raster (415), its band count (422), and
that a URI is ``s3://`` under an allowed prefix (403). When the model replicas' queues are
full, or ``serve.ingress_max_queued_requests`` images wait already, the answer is 503.
"""

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from resseg_ray.geo.storage import scene_stem
from resseg_ray.serving.requests import ImageRequest, image_request
from resseg_ray.serving.routes.openapi import IMAGE_REF, body
from resseg_ray.serving.service import MapService, Overloaded

__all__ = ["MEDIA", "busy", "in_image_slot", "segment_router"]

MEDIA = {"mask": "image/tiff", "prob": "image/tiff", "geojson": "application/geo+json"}
SegmentFormat = Literal["mask", "prob", "geojson"]


def busy(detail: str) -> JSONResponse:
    """A 503 answer asking to retry in a second."""
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})


def segment_router(service: MapService) -> APIRouter:
    """``POST /v1/segment``."""
    router = APIRouter()

    @router.post(
        "/v1/segment",
        openapi_extra=body("image", "json", json_schema=IMAGE_REF),
        responses={200: {"content": {"image/tiff": {}, "application/geo+json": {}}}},
        response_class=Response,
    )
    async def segment(
        request: Request, fmt: Annotated[SegmentFormat, Query(alias="format")] = "mask"
    ) -> Response:
        """Segment a GeoTIFF (raw body or multipart file) or JSON ``{"uri": "s3://..."}``."""
        start = time.perf_counter()
        # the body first, under its own deadlines (serve.body_idle_timeout_s, body_timeout_s):
        # an image slot is held only while an image is segmented, never while a body trickles in
        image = await image_request(request, service.cfg, service.settings)
        return await in_image_slot(service, lambda: _segmented(service, image, fmt, start))

    return router


async def in_image_slot(service: MapService, work: Callable[[], Awaitable[Response]]) -> Response:
    """``work()`` holding one of the ingress's image slots (released after); a 503 at once when
    ``serve.ingress_max_queued_requests`` images wait already."""
    if not await service.hold_image_slot():
        return busy("the service is busy with other images; retry shortly")
    try:
        return await work()
    finally:
        service.image_slots().release()


async def _segmented(service: MapService, image: ImageRequest, fmt: str, start: float) -> Response:
    named, data = image
    info = await service.bundle_info()
    with tempfile.TemporaryDirectory(prefix="resseg-serve-") as tmp:
        if named is not None:
            uri = named
        else:
            uri = os.path.join(tmp, "image.tif")
            with open(uri, "wb") as f:
                f.write(data)
        try:
            out = await asyncio.to_thread(service.segment, uri, tmp, fmt, info)
        except Overloaded:
            return busy("the model replicas are overloaded; retry shortly")
    stem = scene_stem(uri)
    suffix = "buildings.geojson" if fmt == "geojson" else f"{fmt}.tif"
    return Response(
        out,
        media_type=MEDIA[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{stem}_{suffix}"',
            "X-Resseg-Seconds": f"{time.perf_counter() - start:.3f}",
        },
    )
