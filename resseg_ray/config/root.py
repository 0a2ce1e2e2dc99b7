"""The whole configuration of a run: one field per section."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from resseg_ray.config.base import Section
from resseg_ray.config.data import DataSection
from resseg_ray.config.mlflow import MlflowSection
from resseg_ray.config.model import ModelSection
from resseg_ray.config.predict import PredictSection
from resseg_ray.config.run import RunSection
from resseg_ray.config.scaling import ScalingSection
from resseg_ray.config.serve import ServeSection
from resseg_ray.config.storage import StacSection, StorageSection
from resseg_ray.config.train import TrainSection
from resseg_ray.errors import ConfigError


class Config(Section):
    """The whole configuration of a run."""

    storage: StorageSection = Field(default_factory=StorageSection)
    """Where S3 URIs are served from."""
    stac: StacSection = Field(default_factory=StacSection)
    """Scenes from STAC catalogs and searches."""
    data: DataSection = Field(default_factory=DataSection)
    """How scenes become training samples."""
    model: ModelSection = Field(default_factory=ModelSection)
    """Which network is trained."""
    train: TrainSection = Field(default_factory=TrainSection)
    """Optimisation and what is trained on."""
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    """Ray Train workers and their resources."""
    run: RunSection = Field(default_factory=RunSection)
    """Where a run lives, its failures and its seed."""
    mlflow: MlflowSection = Field(default_factory=MlflowSection)
    """Experiment tracking."""
    predict: PredictSection = Field(default_factory=PredictSection)
    """How scenes are segmented."""
    serve: ServeSection = Field(default_factory=ServeSection)
    """The segmentation service and the map page."""

    @model_validator(mode="after")
    def _check_across_sections(self) -> Self:
        weights, classes = self.train.class_weights, self.model.class_names
        if weights is not None and len(weights) != len(classes):
            raise ConfigError(
                f"train.class_weights has {len(weights)} weights for {len(classes)} classes "
                f"(model.class_names: {', '.join(classes)}); give one per class"
            )
        return self
