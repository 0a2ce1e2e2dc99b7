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
    registered_model: str | None = "resseg-{task}"
    """Model registry name the final bundle is registered under (null: do not register);
    ``{task}`` becomes the network's task, ``buildings`` or ``damage``, so that a damage network
    never moves the alias of a building model (``models:/resseg-buildings@best``)."""
    alias: str = "best"
    """Registry alias moved to a new version when its validation F1 beats the aliased one."""

    def registry_name(self, task: str) -> str | None:
        """:attr:`registered_model` for a network of ``task`` (``buildings`` or ``damage``)."""
        if not self.registered_model:
            return None
        return self.registered_model.replace("{task}", task)
