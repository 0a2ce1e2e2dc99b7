"""Experiment tracking (``mlflow``)."""

from __future__ import annotations

from resseg_ray.config.base import Section


class MlflowSection(Section):
    """Experiment tracking."""

    section = "mlflow"

    tracking_uri: str | None = None
    """MLflow tracking URI; default ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
    working directory. A new experiment of a SQLite store keeps its artifacts (bundles, logged
    models) in ``mlruns/<experiment>`` beside the database file."""
    experiment: str = "resseg-ray"
    """Experiment the runs are grouped in."""
    registered_model: str | None = "resseg-buildings"
    """Model registry name the final bundle is registered under (null: do not register)."""
    alias: str = "best"
    """Registry alias moved to a new version when its validation F1 beats the aliased one."""
