"""A finished run's model in MLflow: its bundles and pyfunc model logged, registered now or
once it has earned it (a refinement, after its verdict), and the alias moved to the best."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping

from resseg_ray.config import Config
from resseg_ray.progress import without_lines
from resseg_ray.train import tracking
from resseg_ray.train.state import PROGRESS_FILE, Progress

BUNDLE_NAME = "model.resseg.safetensors"

__all__ = ["MODEL_URI_TAG", "VERSION_TAGS_TAG", "log_model", "register_run_model"]


def log_model(
    cfg: Config,
    tracking_uri: str,
    run_name: str,
    run_id: str,
    ckpt_dir: str,
    bundles: Mapping[str, str],
    chosen: str,
    progress: Progress,
    register: bool = True,
) -> tuple[str | None, bool]:
    """Log the best bundles (``bundles``: file name -> path), ``ckpt_dir``'s progress, the final
    model (pyfunc from code + signature) and, with ``register``, register it."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import resseg_ray.train.mlflow_model as code
    from resseg_ray.models.bundle import read_bundle_info
    from resseg_ray.models.registry import model_task

    info = read_bundle_info(chosen)
    c = tracking.client(tracking_uri)
    for path in bundles.values():
        c.log_artifact(run_id, path, "bundles")
    c.log_artifact(run_id, os.path.join(ckpt_dir, PROGRESS_FILE))
    c.set_tag(run_id, "resseg.stop_reason", progress.stop_reason)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, info.in_bands, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1))]),
    )
    with tempfile.TemporaryDirectory() as d:
        bundle = os.path.join(d, BUNDLE_NAME)
        shutil.copy2(chosen, bundle)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # MLflow's advice to give an input example (declined below, for its cost)
            warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)
            model_info = mlflow.pyfunc.log_model(
                name="model",
                python_model=code.__file__,
                artifacts={"bundle": bundle},
                signature=signature,
                # no input_example: MLflow would load the logged model and run it on the example,
                # which selects, exports and compiles a runtime engine for the new weights
                # (measured: 8 s for prop18, 28 s for unet19 on 2 cores) inside every training
                # and every refinement from the map page; the signature says the input's shape
                pip_requirements=_requirements(info.package_versions),
                metadata={"resseg_bundle": BUNDLE_NAME, "architecture": info.architecture},
            )
    selected = {
        "val_f1": progress.best_val_f1,
        "val_loss": progress.best_val_loss,
        "last": float(progress.epochs_done),
    }[cfg.train.select]
    validated = "val_f1" in info.extra or progress.best_val_f1_epoch > 0  # no validation tiles: none
    figures = {
        "val_f1": f"{info.extra.get('val_f1', progress.best_val_f1):.6f}",
        "val_loss": f"{info.extra.get('val_loss', progress.best_val_loss):.6f}",
    }
    version_tags = {
        "arch": info.architecture,
        "run_name": run_name,
        **(figures if validated else {}),
        "selected_by": cfg.train.select,
        "selected_value": f"{selected:.6f}",
    }
    c.set_tag(run_id, MODEL_URI_TAG, model_info.model_uri)
    c.set_tag(run_id, VERSION_TAGS_TAG, json.dumps(version_tags))
    name = cfg.mlflow.registry_name(model_task(info.architecture))
    if not name or not register:
        c.set_tag(run_id, tracking.VERSION_TAG, "not registered")
        return None, False
    return register_run_model(tracking_uri, run_id, name, cfg.mlflow.alias)


MODEL_URI_TAG = "resseg.model_uri"
"""Run tag: the URI of the MLflow model the run logged (registered now or later)."""
VERSION_TAGS_TAG = "resseg.version_tags"
"""Run tag: the tags (JSON) its registered version gets (architecture, validation figures)."""


def register_run_model(
    tracking_uri: str, run_id: str, name: str, alias: str, extra_tags: dict[str, str] | None = None
) -> tuple[str, bool]:
    """Register the model a finished run logged as a new version of ``name`` and point ``alias``
    at it when it is the best so far (see :func:`_move_alias`); the version and whether the
    alias moved. A refinement registers only once its model has beaten its parent."""
    import mlflow

    c = tracking.client(tracking_uri)
    tags = c.get_run(run_id).data.tags
    if tags.get(tracking.VERSION_TAG, "").isdigit():  # registered by an earlier call (a re-run)
        return tags[tracking.VERSION_TAG], False
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with without_lines("Successfully registered model", "Created version", "Registered model"):
        mv = mlflow.register_model(  # the job says it itself: "registered: <model> version N"
            tags[MODEL_URI_TAG],
            name,
            tags={**json.loads(tags.get(VERSION_TAGS_TAG, "{}")), **(extra_tags or {})},
        )
    moved = _move_alias(c, name, alias, mv.version)
    c.set_tag(run_id, tracking.VERSION_TAG, str(mv.version))
    return str(mv.version), moved


def _move_alias(c, name: str, alias: str, version: str) -> bool:
    """Point ``alias`` at ``version`` when no version holds it yet or when ``version`` has a
    higher validation F1 than the one that does."""
    from mlflow.exceptions import MlflowException

    new = c.get_model_version(name, version)
    try:
        current = c.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if current is not None and float(current.tags.get("val_f1", "-1")) >= float(new.tags.get("val_f1", "-1")):
        return False
    c.set_registered_model_alias(name, alias, version)
    return True


def _requirements(versions: dict[str, str]) -> list[str]:
    return [
        f"torch=={versions.get('torch', '').split('+')[0]}",
        f"numpy=={versions.get('numpy', '')}",
        f"safetensors=={versions.get('safetensors', '')}",
        "resseg-ray",
    ]
