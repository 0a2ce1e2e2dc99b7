"""``POST /v1/damage``: a pair of images of one place, before and after an event (JSON
``{"pre": ..., "post": ...}`` whose members are what ``/v1/segment``'s JSON body may be, or
the multipart files ``pre`` and ``post``) in; the damage network's map of the pair out: the
class GeoTIFF (``format=damage``, default: 0 background, 1..4 damage, 255 no data), the class
probabilities (``format=prob``), the buildings with their damage and confidence
(``format=geojson``) or the count of buildings per class (``format=summary``).

The checks are ``/v1/segment``'s, for each image: the body size, each image's size from its
header, a raster, the band count (the damage network's, per scene), URIs under the allowed
prefixes; a pair that does not overlap is a 422. Served only with ``serve.damage_model``.
"""

import asyncio
import os
import tempfile
import time
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from resseg_ray.serving.requests import PAIR, ImageRequest, pair_request
from resseg_ray.serving.routes.openapi import PAIR_BODY
from resseg_ray.serving.routes.segment import busy, in_image_slot
from resseg_ray.serving.service import MapService, Overloaded

__all__ = ["damage_router"]

DamageFormat = Literal["damage", "prob", "geojson", "summary"]
MEDIA = {
    "damage": "image/tiff",
    "prob": "image/tiff",
    "geojson": "application/geo+json",
    "summary": "application/json",
}
FILES = {
    "damage": "damage.tif",
    "prob": "damage_prob.tif",
    "geojson": "damage_buildings.geojson",
    "summary": "damage_summary.json",
}


def damage_router(service: MapService) -> APIRouter:
    """``POST /v1/damage``."""
    router = APIRouter()

    @router.post(
        "/v1/damage",
        openapi_extra=PAIR_BODY,
        responses={200: {"content": {m: {} for m in sorted(set(MEDIA.values()))}}},
        response_class=Response,
    )
    async def damage(
        request: Request, fmt: Annotated[DamageFormat, Query(alias="format")] = "damage"
    ) -> Response:
        """Map the damage between two images of one place (before and after the event)."""
        if service.damage_model is None:
            raise HTTPException(
                404,
                "no damage network is served here: start the service with serve.damage_model (a "
                "damage-prop<depth> bundle or models:/ URI)",
            )
        start = time.perf_counter()
        pair = await pair_request(request, service.cfg, service.settings)
        return await in_image_slot(service, lambda: _mapped(service, pair, fmt, start))

    return router


async def _mapped(service: MapService, pair: dict[str, ImageRequest], fmt: str, start: float) -> Response:
    info = await service.damage_info()
    with tempfile.TemporaryDirectory(prefix="resseg-serve-damage-") as tmp:
        uris = {}
        for role in PAIR:
            named, data = pair[role]
            if named is None:
                named = os.path.join(tmp, f"{role}.tif")
                with open(named, "wb") as f:
                    f.write(data)
            uris[role] = named
        try:
            out = await asyncio.to_thread(service.damage, uris["pre"], uris["post"], tmp, fmt, info)
        except Overloaded:
            return busy("the damage network's replicas are overloaded; retry shortly")
    return Response(
        out,
        media_type=MEDIA[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="pair_{FILES[fmt]}"',
            "X-Resseg-Seconds": f"{time.perf_counter() - start:.3f}",
        },
    )
