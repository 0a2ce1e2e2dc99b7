"""The page and what describes the service: the map page, the API docs page, liveness and
the served model."""

import os

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from resseg_ray import __version__
from resseg_ray.serving.records import Health, ModelInfo
from resseg_ray.serving.service import MapService

__all__ = ["STATIC", "meta_router"]

STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")
"""The map page and its JavaScript (``vendor/``: Leaflet from the npm registry, built by make)."""


def meta_router(service: MapService, title: str) -> APIRouter:
    """``/``, ``/docs``, ``/healthz`` and ``/v1/model``."""
    router = APIRouter()

    @router.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        """The OpenAPI page (Swagger UI from ``static/vendor``, built by make)."""
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title=f"{title}: API",
            swagger_js_url="static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    @router.get("/", include_in_schema=False)
    async def map_page() -> FileResponse:
        """The map page (Leaflet, shipped in the package)."""
        return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

    @router.get("/healthz")
    async def healthz() -> Health:
        """Liveness: the ingress answers (model replicas are checked by Serve itself)."""
        return Health(status="ok")

    @router.get("/v1/model")
    async def model_info() -> ModelInfo:
        """The served model: architecture, bands, classes, normalisation, version."""
        info = await service.bundle_info()
        source = await service.model.source.remote()
        extra = info.extra
        predict = service.predict
        return ModelInfo(
            architecture=info.architecture,
            bands=list(info.band_names),
            in_bands=info.in_bands,
            classes=list(info.class_names),
            normalization={
                "mode": extra.get("normalization", "pooled"),
                "mean": info.norm_mean,
                "std": info.norm_std,
            },
            tile_size=info.tile_size,
            model_uri=source["uri"],
            engine={k: source[k] for k in ("device", "runtime", "precision") if k in source},
            version={
                "mlflow_run_id": extra.get("mlflow_run_id"),
                "run_name": extra.get("run_name"),
                "epoch": extra.get("epoch"),
                "created": info.created,
                "resseg_ray": __version__,
            },
            windowing={"window": predict.window, "overlap": predict.overlap, "blend": predict.blend},
        )

    return router
