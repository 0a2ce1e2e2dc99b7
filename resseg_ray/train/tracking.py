"""MLflow tracking of training runs: one MLflow run per training run, also across restarts.

The driver (``jobs/train.py``) opens the run before Ray Train starts (or finds the run of
the same name when resuming), logs parameters and input artifacts, and at the end logs
the final model bundle as an MLflow model and registers it. Rank 0 of the workers logs
per-epoch metrics into the same run through :class:`EpochLogger`.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resseg_ray import jobstate
from resseg_ray.config import MlflowSection
from resseg_ray.errors import ConfigError

KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""The experiment kind MLflow 3's UI shows as model training (runs, metrics, models)."""
NOTE_TAG = "mlflow.note.content"
"""An experiment's or run's description (markdown), shown at the top of its page."""
COMPARISON_MARK = "<!-- resseg-ray depth comparison -->"
RUN_NAME_TAG = "resseg.run_name"
STORAGE_TAG = "resseg.storage"
VERSION_TAG = "resseg.registered_version"
#: Parameters a resumed run may change (more epochs, other resources); recorded as
#: ``resumed_with.<name>`` tags. Any other change needs a new run name.
MUTABLE_PARAMS = frozenset(
    {
        "epochs",
        "patience",
        "time_budget_minutes",
        "workers",
        "cpus_per_worker",
        "batch_size_global",
        "use_gpu",
        "precision",
    }
)


class TrackingError(ConfigError):
    """The MLflow tracking store cannot be used (unreachable server, unwritable file)."""


def resolve_tracking_uri(cfg: MlflowSection, workdir: str) -> str:
    """The tracking URI: the configuration's, else ``MLFLOW_TRACKING_URI``, else a SQLite file
    ``mlflow.db`` in ``workdir``."""
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{os.path.abspath(os.path.join(workdir, 'mlflow.db'))}"
    return uri


def _sqlite_file(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` tracking URI (None for other stores)."""
    return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: ``mlruns/<experiment>``
    beside the database file. MLflow's own default is ``./mlruns`` in whatever folder the job
    runs from, so the models of a store kept elsewhere piled up, orphaned, in the current
    folder (170 MB per run). None (the store's default) for servers and other stores."""
    path = _sqlite_file(uri)
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return Path(folder, "mlruns", safe).as_uri()


def check_tracking(uri: str, timeout: float = 10.0) -> None:
    """Fail fast with a clear message when the tracking store cannot be reached or written."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow tracking server {uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                "(mlflow server --host 127.0.0.1 --port 5000 ...) or set mlflow.tracking_uri / "
                "MLFLOW_TRACKING_URI to a reachable server or a sqlite:/// file"
            ) from None
        return
    path = _sqlite_file(uri)
    if path is not None:
        parent = os.path.dirname(os.path.abspath(path)) or "."
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise TrackingError(
                f"MLflow tracking store {uri}: folder {parent} does not exist or is not writable; "
                "create it or set mlflow.tracking_uri / MLFLOW_TRACKING_URI"
            )
        return
    if uri.startswith(("databricks", "file:", "/")) or "://" not in uri:
        return
    raise TrackingError(
        f"MLflow tracking URI {uri!r} has an unsupported scheme; use http(s)://, sqlite:/// or a path"
    )


def experiment_url(uri: str, experiment_id: str) -> str | None:
    """The MLflow UI page of an experiment's runs in its model-training view, best test mean
    F1 first (None when ``uri`` is not a server: open ``mlflow ui`` on the store then)."""
    if not uri.startswith(("http://", "https://")):
        return None
    query = "workflowType=machine_learning&orderByKey=metrics.%60test_mean_f1%60&orderByAsc=false"
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def show_comparison(uri: str, experiment_id: str, run_id: str, markdown: str) -> None:
    """Show a comparison's table as the description of its run and of the experiment (what the
    experiment page shows first), unless the experiment has a description someone else wrote."""
    c = client(uri)
    text = f"{COMPARISON_MARK}\n{markdown}"
    c.set_tag(run_id, NOTE_TAG, text)
    current = c.get_experiment(experiment_id).tags.get(NOTE_TAG)
    if current is None or current.startswith(COMPARISON_MARK):
        c.set_experiment_tag(experiment_id, NOTE_TAG, text)


def client(uri: str):  # -> mlflow.tracking.MlflowClient
    """An MlflowClient bound to ``uri`` (no global state touched)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass(frozen=True)
class TrackedRun:
    """The MLflow run a training run logs into."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    resumed: bool


def open_run(
    uri: str, experiment: str, run_name: str, storage: str, tags: Mapping[str, str], resume: bool = True
) -> TrackedRun:
    """The MLflow run of training run ``run_name`` stored at ``storage``: found when it exists
    (a resumed run; with ``resume=False`` a :class:`ConfigError` instead), else created."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp is not None
        else c.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
    )
    if exp is None or KIND_TAG not in exp.tags:
        # MLflow 3's UI opens an experiment without a kind in its GenAI (traces) view
        c.set_experiment_tag(exp_id, KIND_TAG, MODEL_TRAINING)
    found = c.search_runs(
        [exp_id],
        filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}' and tags.`{STORAGE_TAG}` = '{storage}'",
        max_results=1,
    )
    if found and not resume:
        raise ConfigError(
            f"run {run_name} exists under {storage} (MLflow run {found[0].info.run_id}) and a run trained "
            "in process (scaling.in_process) keeps no checkpoint to resume from: choose a new run.name, "
            "or set scaling.in_process=false"
        )
    if found:
        run_id = found[0].info.run_id
        c.update_run(run_id, status="RUNNING")
        jobstate.run_opened(uri, run_id)
        return TrackedRun(uri, exp_id, run_id, resumed=True)
    run = c.create_run(exp_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, STORAGE_TAG: storage, **tags})
    jobstate.run_opened(uri, run.info.run_id)
    return TrackedRun(uri, exp_id, run.info.run_id, resumed=False)


def log_params(run: TrackedRun, params: Mapping[str, Any]) -> None:
    """Log parameters; on a resumed run, a changed value is a clear error instead of MLflow's."""
    from mlflow.entities import Param, RunTag

    c = client(run.tracking_uri)
    have = c.get_run(run.run_id).data.params
    values = {k: str(v)[:6000] for k, v in params.items()}
    changed = {k: (have[k], v) for k, v in values.items() if k in have and have[k] != v}
    resumed_with = [RunTag(f"resumed_with.{k}", v) for k, (_, v) in changed.items() if k in MUTABLE_PARAMS]
    if resumed_with:
        c.log_batch(run.run_id, tags=resumed_with)
    changed = {k: v for k, v in changed.items() if k not in MUTABLE_PARAMS}
    if changed:
        k, (old, new) = next(iter(changed.items()))
        raise ConfigError(
            f"run {run.run_id} was started with {k}={old}, this configuration has {k}={new} "
            f"({len(changed)} difference(s)); resume with the same configuration or choose a new run.name"
        )
    todo = [Param(k, v) for k, v in values.items() if k not in have]
    for i in range(0, len(todo), 100):
        c.log_batch(run.run_id, params=todo[i : i + 100])


class EpochLogger:
    """Logs per-epoch metrics from rank 0; a tracking hiccup warns instead of killing training."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.uri = tracking_uri
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log every metric at ``step`` (the epoch number)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._try(lambda: client(self.uri).log_batch(self.run_id, metrics=batch), "metrics")

    def log_bytes(self, data: bytes, artifact_path: str) -> None:
        """Log a small file (e.g. a PNG) as an artifact at ``artifact_path``."""
        import tempfile

        def upload() -> None:
            with tempfile.TemporaryDirectory() as d:
                local = os.path.join(d, os.path.basename(artifact_path))
                with open(local, "wb") as f:
                    f.write(data)
                client(self.uri).log_artifact(self.run_id, local, os.path.dirname(artifact_path) or None)

        self._try(upload, artifact_path)

    def _try(self, fn, what: str) -> None:
        try:
            fn()
        except Exception as exc:  # tracking must not end a long training run
            warnings.warn(
                f"could not log {what} to MLflow run {self.run_id} at {self.uri}: {exc}", stacklevel=2
            )
