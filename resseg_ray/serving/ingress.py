"""The Serve ingress deployment: one :class:`~resseg_ray.serving.service.MapService` per
replica, and the FastAPI application of its routers (:func:`~resseg_ray.serving.routes.
build_api`), built in the replica once the service exists (``__serve_build_asgi_app__``)."""

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from resseg_ray.serving.routes import build_api
from resseg_ray.serving.service import MapService

__all__ = ["SegmentAPI"]


@serve.deployment(name="SegmentAPI")
@serve.ingress()
class SegmentAPI:
    """Cuts images into windows, sends them to the model deployment, stitches the results; the
    map page's scenes, annotations and refinements."""

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
        self.service = MapService(model, serve_cfg, predict_cfg, storage, refine, damage_model, damage_refine)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The application of this replica's service (called by Serve after ``__init__``)."""
        return build_api(self.service)
