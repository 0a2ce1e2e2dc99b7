"""The HTTP API as routers, one per area, composed by :func:`build_api` (titiler's factories):
segment, damage, scenes and tiles, annotations and export, refinements, and the page with what
describes the service. Each router is made for one :class:`~resseg_ray.serving.service.
MapService`, the replica's state; the write token and the scene of a path are dependencies
(:mod:`resseg_ray.serving.routes.deps`)."""

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from resseg_ray import __version__
from resseg_ray.serving.routes.annotations import annotations_router
from resseg_ray.serving.routes.damage import damage_router
from resseg_ray.serving.routes.meta import STATIC, meta_router
from resseg_ray.serving.routes.refinements import refinements_router
from resseg_ray.serving.routes.scenes import scenes_router
from resseg_ray.serving.routes.segment import segment_router
from resseg_ray.serving.service import MapService
from resseg_ray.serving.uploads import without_paths

__all__ = ["TITLE", "build_api"]

TITLE = "resseg-ray building segmentation"


async def _without_server_paths(request: Request, exc: Exception) -> JSONResponse:
    """Every error answer as FastAPI gives it, its server paths replaced by file names."""
    assert isinstance(exc, HTTPException)
    detail = without_paths(exc.detail) if isinstance(exc.detail, str) else exc.detail
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def build_api(service: MapService) -> FastAPI:
    """The ingress's FastAPI application over ``service``."""
    api = FastAPI(
        docs_url=None,  # served by meta_router with Swagger UI shipped in the package (no CDN)
        redoc_url=None,
        title=TITLE,
        version=__version__,
        description=(
            "Send a post-event GeoTIFF (or an allowed s3:// URI) and get a georeferenced building "
            "mask, probability raster or building polygons back; send a pre/post pair to /v1/damage "
            "(with serve.damage_model) and get each building's damage; browse the scenes the "
            "service knows on the map page at /, their tiles and polygons under /v1/scenes."
        ),
    )
    api.add_exception_handler(HTTPException, _without_server_paths)
    api.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    for router in (
        meta_router(service, TITLE),
        segment_router(service),
        damage_router(service),
        scenes_router(service),
        annotations_router(service),
        refinements_router(service),
    ):
        api.include_router(router)
    return api
