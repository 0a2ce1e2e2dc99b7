"""Refinements started from the map page, as records: their store, the request, finding a
running one's actor, cancelling it (the run itself: :mod:`resseg_ray.serving.refine_runner`).
A refinement is the project's refinement
(:func:`~resseg_ray.adapt.refine.refine_scene`, the code of ``jobs/finetune.py``) on a scene's
saved annotations, run by a Ray actor off the HTTP path, then the refined model's map of the
whole scene, shown on the page beside the served model's.

Each refinement lives in ``<refine_dir>/<scene id>/r<N>/``:

- ``job.json``: its state, progress (epochs and losses), figures and error, rewritten
  atomically at each step, so any ingress replica (and a restarted service) reads it;
- ``inputs/``: the annotated areas and the buildings (drawn and accepted) of the annotation
  version it started from, as GeoJSON (EPSG:4326);
- ``map-<scene>-r<N>/``: the refinement's run folder (labels, tiles, checkpoints, bundle);
- ``map/``: mask, probability and building polygons of the refined model.

The job number is claimed with an exclusive ``mkdir``, so two requests never share one. The
refined model is registered in MLflow as ``jobs/finetune.py`` registers it (alias
``refined-<scene>``); the served model and its map are never touched, so a refinement that
fails or is cancelled leaves them as they were.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from resseg_ray.errors import InputDataError
from resseg_ray.geo.storage import StorageSettings, write_bytes
from resseg_ray.serving.records import ACTIVE, RefinementState

__all__ = [
    "ACTIVE",
    "JOB_ID",
    "RefineRequest",
    "RefinementStore",
    "actor_name",
    "cancel_refinement",
    "current_record",
    "new_record",
    "now",
    "parse_refine_request",
    "running_refinements",
]

JOB_ID = re.compile(r"r[1-9][0-9]{0,5}")
"""What a refinement id may be (``r1``, ``r2``, ... per scene; checked on every request path)."""
ACTOR_PREFIX = "resseg-refine-"


def actor_name(scene_id: str, job: str) -> str:
    """The Ray actor name of a running refinement (found by any ingress replica to cancel it)."""
    return f"{ACTOR_PREFIX}{scene_id}-{job}"


def now() -> str:
    """The time now, UTC, ISO 8601 to the second (the records' times)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RefineRequest:
    """What ``POST /v1/scenes/{id}/refinements`` may ask, checked."""

    epochs: int | None = None
    """Refinement epochs; default the refinement configuration's ``train.epochs``."""
    adapt_bn: bool = False
    """Re-estimate the BatchNorm statistics on the scene first, then refine."""
    start: str | None = None
    """A succeeded refinement of the same scene whose model is refined further (default the
    served model)."""


def parse_refine_request(doc: object, max_epochs: int) -> RefineRequest:
    """The request body (``{}`` or ``{"epochs": 20, "adapt_bn": false, "from": "r1"}``), checked;
    an InputDataError names the field and what it may be."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InputDataError('the body must be a JSON object such as {"epochs": 20}')
    unknown = sorted(set(doc) - {"epochs", "adapt_bn", "from"})
    if unknown:
        raise InputDataError(f"unknown field {unknown[0]!r}: give epochs, adapt_bn or from")
    epochs = doc.get("epochs")
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= max_epochs
    ):
        raise InputDataError(
            f'"epochs" must be a whole number from 1 to {max_epochs} (serve.max_refine_epochs)'
        )
    adapt_bn = doc.get("adapt_bn", False)
    if not isinstance(adapt_bn, bool):
        raise InputDataError('"adapt_bn" must be true or false')
    start = doc.get("from")
    if start is not None and (not isinstance(start, str) or not JOB_ID.fullmatch(start)):
        raise InputDataError('"from" must be the id of a refinement of this scene, such as "r1"')
    return RefineRequest(epochs, adapt_bn, start)


class RefinementStore:
    """The refinements of every scene, one folder each under ``folder`` (a local folder)."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)

    def job_dir(self, scene_id: str, job: str) -> str:
        """The folder of one refinement."""
        return os.path.join(self.folder, scene_id, job)

    def jobs(self, scene_id: str) -> list[str]:
        """The ids of a scene's refinements that have a record, oldest first."""
        try:
            names = os.listdir(os.path.join(self.folder, scene_id))
        except FileNotFoundError:
            return []
        found = [
            n
            for n in names
            if JOB_ID.fullmatch(n) and os.path.exists(os.path.join(self.folder, scene_id, n, "job.json"))
        ]
        return sorted(found, key=lambda n: int(n[1:]))

    def create(self, scene_id: str, record: dict[str, Any]) -> str:
        """Claim the next id of ``scene_id`` (exclusive mkdir), write its first record, return it."""
        base = os.path.join(self.folder, scene_id)
        os.makedirs(base, exist_ok=True)
        taken = [int(n[1:]) for n in os.listdir(base) if JOB_ID.fullmatch(n)]
        number = max(taken, default=0) + 1
        while True:
            job = f"r{number}"
            try:
                os.mkdir(os.path.join(base, job))
                break
            except FileExistsError:
                number += 1
        self.write(scene_id, job, {**record, "id": job, "scene": scene_id})
        return job

    def load(self, scene_id: str, job: str) -> dict[str, Any]:
        """A refinement's record; KeyError when there is none."""
        try:
            with open(os.path.join(self.job_dir(scene_id, job), "job.json"), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise KeyError(job) from None

    def write(self, scene_id: str, job: str, record: dict[str, Any]) -> None:
        """Replace a refinement's record in one step (a reader never sees half of one)."""
        path = os.path.join(self.job_dir(scene_id, job), "job.json")
        write_bytes(path, json.dumps(record, allow_nan=False).encode(), StorageSettings())


def running_refinements() -> int:
    """How many refinements run now, in this Ray namespace (all ingress replicas)."""
    import ray.util

    return sum(1 for n in ray.util.list_named_actors() if n.startswith(ACTOR_PREFIX))


def _actor_alive(scene_id: str, job: str) -> bool:
    import ray

    try:
        ray.get_actor(actor_name(scene_id, job))
    except ValueError:
        return False
    return True


LOST_AFTER_S = 60.0
"""A record still queued or running this long after it was created, with no actor: lost."""


def current_record(store: RefinementStore, scene_id: str, job: str) -> dict[str, Any]:
    """A refinement's record, marked failed when it claims to run but its actor is gone (the
    service restarted, or the actor's node died); KeyError when there is none."""
    record = store.load(scene_id, job)
    if record.get("state") not in ACTIVE or _actor_alive(scene_id, job):
        return record
    created = _dt.datetime.fromisoformat(record["created"])
    if (_dt.datetime.now(_dt.UTC) - created).total_seconds() < LOST_AFTER_S:
        return record  # its actor may be starting
    record = store.load(scene_id, job)  # it may have ended between the two reads
    if record.get("state") in ACTIVE:
        record.update(
            state=RefinementState.FAILED,
            finished=now(),
            error="the refinement stopped before it ended (the service restarted or its worker "
            "died); start it again",
        )
        store.write(scene_id, job, record)
    return record


def cancel_refinement(
    store: RefinementStore, scene_id: str, job: str, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Stop a running refinement (its actor, and with it the training it started) and record it
    as cancelled; the record as it is when the refinement had already ended."""
    import ray

    try:
        actor = ray.get_actor(actor_name(scene_id, job))
    except ValueError:
        return current_record(store, scene_id, job)
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + timeout_s
    while _actor_alive(scene_id, job) and time.monotonic() < deadline:
        time.sleep(0.1)
    record = store.load(scene_id, job)
    if record.get("state") in ACTIVE:
        record.update(state=RefinementState.CANCELLED, stage="done", finished=now(), error=None)
        store.write(scene_id, job, record)
    return record


def new_record(
    annotation_version: int, epochs: int, parent: str, adapt_bn: bool, start: str | None
) -> dict[str, Any]:
    """The first record of a refinement (queued)."""
    return {
        "state": RefinementState.QUEUED,
        "stage": "queued",
        "created": now(),
        "annotation_version": annotation_version,
        "epochs": epochs,
        "epoch": 0,
        "history": [],
        "parent": parent,
        "from": start,
        "adapt_bn": adapt_bn,
        "error": None,
    }
