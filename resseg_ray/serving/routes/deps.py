"""Checks shared by the routes, as FastAPI dependencies (titiler's ``path_dependency`` and
``route_dependencies``): the write token, and a scene (or a refinement's map of it) by id."""

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Query, Request
from fastapi.exceptions import HTTPException

from resseg_ray.serving.scenes import MapScene
from resseg_ray.serving.service import MapService

__all__ = ["RefinedMap", "scene_lookup", "write_access"]

RefinedMap = Annotated[
    str | None,
    Query(
        alias="map",
        description="a succeeded refinement of the scene (r1, r2, ...): its refined model's map",
    ),
]
"""The ``map=r<N>`` query parameter (the served model's map when absent)."""


def write_access(service: MapService) -> Callable[[Request], None]:
    """With ``serve.api_token``, writes need ``Authorization: Bearer <token>`` (401)."""

    def check(request: Request) -> None:
        token = service.cfg.api_token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(
                401,
                "this service needs a token for writes: send Authorization: Bearer <serve.api_token>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def scene_lookup(service: MapService, with_map: bool = False) -> Callable[..., MapScene]:
    """The scene of the ``{scene_id}`` path parameter (404 when unknown); ``with_map`` adds the
    ``map=r<N>`` query parameter, which gives the refinement's map of it instead."""
    if with_map:

        def scene_or_map(scene_id: str, refined: RefinedMap = None) -> MapScene:
            return service.scene(scene_id, refined)

        return scene_or_map

    def scene(scene_id: str) -> MapScene:
        return service.scene(scene_id)

    return scene
