"""What a running job records about itself, for the launcher that watches it from outside.

A job attached to a Ray cluster can be ended by Ray, without its ``except``/``finally``
blocks, when the cluster goes away. So the job does not try to handle that itself: it records,
as it goes, what a stop would have to say and undo (:class:`JobState`: the MLflow runs it has
open, what it is doing, the cluster it is attached to, whether its ``main`` returned), and the
launcher (:mod:`resseg_ray.launcher`), its parent process, watches the cluster and the job and
says the loss. A job the launcher started finds the state file's path in ``RESSEG_JOB_STATE``;
any other process keeps its state in memory only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

STATE_ENV = "RESSEG_JOB_STATE"
"""The environment variable by which the launcher tells its job where to keep its state."""


@dataclass
class JobState:
    """One job's state as the launcher reads it."""

    open_runs: dict[str, str] = field(default_factory=dict)
    """MLflow runs the job set RUNNING: run id -> tracking URI (marked FAILED on a loss)."""
    doing: str = ""
    """What the job does now, e.g. ``training run demo-prop18 (checkpoints under ...)``."""
    gcs: str | None = None
    """``host:port`` of the GCS of the Ray cluster the job is attached to."""
    raylet: str | None = None
    """``host:port`` of the raylet the job's driver is attached to."""
    returned: bool = False
    """The job's ``main`` returned or raised: the status that follows is the job's own."""
    error: str | None = None
    """What the job would have printed as it ended with an error: its ``error:`` line (exit
    status 2) or the traceback of an error it did not expect (1). The launcher prints it, unless
    the cluster's loss was the cause."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> JobState:
        """The state in ``text``; an empty state for anything that is not one."""
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:
            return cls()


_lock = threading.RLock()
_state = JobState()
_path: str | None = os.environ.pop(STATE_ENV, None) or None  # not passed on to the job's own children


def launched() -> bool:
    """Whether this process is a job the launcher started (and watches)."""
    return _path is not None


def _update(**changes: Any) -> None:
    global _state
    with _lock:
        _state = dataclasses.replace(_state, **changes)
        if _path is None:
            return
        tmp = _path + ".tmp"
        with open(tmp, "w") as f:
            f.write(_state.to_json())
        os.replace(tmp, _path)


def run_opened(tracking_uri: str, run_id: str) -> None:
    """An MLflow run the job has set RUNNING (marked FAILED on a loss unless it ended)."""
    with _lock:
        _update(open_runs={**_state.open_runs, run_id: tracking_uri})


def doing(what: str) -> None:
    """What the job does now, e.g. ``training run demo-prop18``, for the loss's error line."""
    _update(doing=what)


def attached(gcs_address: str, raylet_address: str | None) -> None:
    """The Ray cluster (its GCS) and node (the driver's raylet) the job now depends on."""
    _update(gcs=gcs_address, raylet=raylet_address)


def returned(error: str | None = None) -> None:
    """The job's ``main`` has returned or raised (``error``: its error line, or the traceback of
    an error it did not expect, for the launcher to print): the status that follows is the
    job's own, unless the cluster is gone."""
    _update(returned=True, error=error)


def read(path: str) -> JobState:
    """The state a job keeps at ``path`` (empty when it wrote none yet)."""
    try:
        with open(path) as f:
            return JobState.from_json(f.read())
    except OSError:
        return JobState()
