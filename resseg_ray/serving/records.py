"""The service's records as types: an added scene's and a refinement's (the JSON files their
stores keep, read by every ingress replica), their states as enums, and the answers of the
HTTP API as models that appear on the OpenAPI page.

A record on disk may carry more than the fields named here (a later version's, or the
refinement's log); they are kept (``extra="allow"``) and answered as they are.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ACTIVE",
    "AnnotationsDocument",
    "AnnotationsSaved",
    "EpochFigures",
    "Health",
    "ModelInfo",
    "RefinementList",
    "RefinementRecord",
    "RefinementState",
    "Removed",
    "SceneList",
    "SceneRecord",
    "SceneState",
    "SceneSummary",
]


class SceneState(StrEnum):
    """Where a scene added at run time stands."""

    SEGMENTING = "segmenting"
    READY = "ready"
    FAILED = "failed"


class RefinementState(StrEnum):
    """Where a refinement stands; ``queued`` and ``running`` have not ended."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Whether it has not ended."""
        return self in ACTIVE


ACTIVE = frozenset({RefinementState.QUEUED, RefinementState.RUNNING})
"""States of a refinement that has not ended (a plain string compares as its member)."""


class _Model(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # the field docs on the OpenAPI page


class _Record(_Model):
    model_config = ConfigDict(use_attribute_docstrings=True, extra="allow", populate_by_name=True)


class SceneRecord(_Record):
    """An added scene (``<scenes_dir>/<id>/scene.json``)."""

    id: str
    state: SceneState
    created: str
    """When it was added (UTC, ISO 8601)."""
    source: str | None = None
    """``upload``, or the s3:// image it was read from."""
    finished: str | None = None
    error: str | None = None
    """Why it failed (file names only, never server paths)."""
    stage_seconds: dict[str, float] | None = None
    """Seconds of each stage: ``store`` (the COG copy), ``segment``, ``total``."""
    megapixels: float | None = None


class EpochFigures(_Record):
    """One refinement epoch's losses and validation F1, as MLflow has them."""

    epoch: int
    train_loss: float | None = None
    val_loss: float | None = None
    val_f1: float | None = None


class RefinementRecord(_Record):
    """A refinement (``<refine_dir>/<scene>/r<N>/job.json``), rewritten at each step."""

    id: str
    scene: str
    state: RefinementState
    stage: str
    """``queued``, ``training``, ``mapping`` or ``done``."""
    created: str
    annotation_version: int
    epochs: int
    epoch: int = 0
    """The last epoch trained."""
    history: list[EpochFigures] = Field(default_factory=list)
    parent: str
    """The model refined (a bundle, s3:// bundle or models:/ URI)."""
    start: str | None = Field(default=None, alias="from")
    """The refinement of this scene whose model was refined further, if any."""
    adapt_bn: bool = False
    error: str | None = None
    started: str | None = None
    finished: str | None = None
    waiting: str | None = None
    """Why training has not started yet (the CPUs it reserves are held)."""
    model: str | None = None
    """The refined model's bundle."""
    mlflow_run_id: str | None = None
    registered_version: str | None = None
    alias: str | None = None
    decision: dict[str, Any] | None = None
    """The verdict on the held-out annotated pixels: ``chosen``, ``f1`` of each, ``line``."""
    figures: dict[str, Any] | None = None
    outputs: dict[str, str | None] | None = None
    """The kept model's mask, probability and polygons of the scene (``map=r<N>`` shows them)."""
    stage_seconds: dict[str, float] | None = None
    log: list[str] | None = None


class RefinementList(_Model):
    """A scene's refinements, oldest first."""

    refinements: list[RefinementRecord]


class SceneSummary(_Model):
    """What the map page needs of a scene."""

    id: str
    kind: Literal["buildings", "damage"] = "buildings"
    """``damage``: a pre/post pair mapped by a damage network (``jobs/damage.py``)."""
    bounds: list[float]
    """West, south, east, north (EPSG:4326)."""
    bands: list[str]
    """The (pre-event) imagery's band names."""
    rgb: list[int]
    """Default true-colour band indexes (1-based)."""
    layers: list[str]
    buildings: bool
    building_count: int | None = None
    model: str | None = None
    architecture: str | None = None
    state: SceneState = SceneState.READY
    post_bands: list[str] | None = None
    """A damage scene's post-event band names."""
    post_rgb: list[int] | None = None
    """A damage scene's post-event true-colour band indexes (1-based)."""
    damage_counts: dict[str, int] | None = None
    """A damage scene's buildings per damage class."""
    damage_colours: dict[str, str] | None = None
    """A damage scene's classes, in order, with their colours on the map."""


class SceneList(_Model):
    """The scenes the service knows."""

    scenes: list[SceneSummary]


class Removed(_Model):
    """A removed scene."""

    removed: str


class AnnotationsSaved(_Model):
    """A saved annotation version and what it holds."""

    version: int
    areas: int
    buildings: int


class AnnotationsDocument(_Model):
    """A scene's saved annotations (a GeoJSON FeatureCollection in EPSG:4326)."""

    version: int
    versions: list[int]
    annotations: dict[str, Any]


class Health(_Model):
    """Liveness."""

    status: str


class ModelInfo(_Model):
    """The served model and how the service windows images for it."""

    architecture: str
    bands: list[str]
    in_bands: int
    classes: list[str]
    normalization: dict[str, Any]
    """``mode``, ``mean`` and ``std`` per band."""
    tile_size: int
    model_uri: str
    engine: dict[str, str]
    """The replicas' ``device``, ``runtime`` and ``precision``."""
    version: dict[str, Any]
    """The MLflow run, run name, epoch and creation time of the bundle, and resseg_ray's version."""
    windowing: dict[str, Any]
