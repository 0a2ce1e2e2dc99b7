"""Scenes added to the map at run time: uploaded GeoTIFFs, or images named by an allowed
``s3://`` URI or STAC item, segmented by the service's model and kept for the map page.

Each lives in ``<scenes_dir>/<scene id>/``: ``scene.json`` (its state: ``segmenting``,
``ready`` or ``failed`` with the reason, and the time of each stage), the image as a COG
(``<id>.tif``, copied once, so tiles read overviews and the scene no longer depends on the
client or the bucket) and ``out/``, the outputs of :func:`~resseg_ray.inference.batch.
predict_scene` with their STAC catalog, exactly what a ``jobs/predict.py`` output folder
holds, so the map reads them as it reads any configured catalog. A restart of the service
finds the ready scenes again. The id is claimed with an exclusive ``mkdir``; a failure removes
what was made but the record that says why.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from resseg_ray.geo.storage import StorageSettings, write_bytes
from resseg_ray.serving.records import SceneState

__all__ = ["PRIVATE_ROOTS", "SlotsFull", "UploadStore", "scene_id_for", "to_cog", "without_paths"]

STALE_AFTER_S = 3600.0
"""A scene still segmenting this long after it was added, with no worker on it: failed."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def scene_id_for(name: str | None, source: str | None) -> str:
    """A scene id from a requested ``name``, else from the source file's stem (letters, digits,
    ``_.-``; at most 64), else ``upload-<UTC time>``."""
    if name:
        return name
    stem = os.path.splitext(os.path.basename(source or ""))[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._")[:64]
    return stem or "upload-" + _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")


PRIVATE_ROOTS: set[str] = {tempfile.gettempdir()}
"""Server folders whose paths never reach a client (the service adds its working, scenes,
annotations and refinement folders when it starts)."""


def without_paths(text: str) -> str:
    """``text`` with every path under :data:`PRIVATE_ROOTS` replaced by its file name: what a
    client is told names its scene and files, never where the server keeps them."""
    for root in sorted(PRIVATE_ROOTS, key=len, reverse=True):
        text = re.sub(re.escape(root.rstrip("/")) + r"/[^\s'\"]*?([^/\s'\"]+)(?=$|[\s'\",;:)])", r"\1", text)
    return text


class SlotsFull(Exception):
    """Every place for an added scene is taken (scenes kept, and scenes being added)."""

    def __init__(self, kept: int, adding: int) -> None:
        super().__init__(f"{kept} scenes kept and {adding} being added")
        self.kept, self.adding = kept, adding


class UploadStore:
    """The scenes added at run time, one folder each under ``folder`` (a local folder)."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)

    def scene_dir(self, scene_id: str) -> str:
        """The folder of one added scene."""
        return os.path.join(self.folder, scene_id)

    def image(self, scene_id: str) -> str:
        """Where the scene's image (a COG) is kept."""
        return os.path.join(self.scene_dir(scene_id), f"{scene_id}.tif")

    def outputs(self, scene_id: str) -> str:
        """The scene's ``jobs/predict.py``-like output folder."""
        return os.path.join(self.scene_dir(scene_id), "out")

    def catalog(self, scene_id: str) -> str:
        """The STAC catalog of the scene's outputs."""
        return os.path.join(self.outputs(scene_id), "catalog.json")

    def ids(self) -> list[str]:
        """The ids of every added scene with a record."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        return [n for n in names if os.path.isfile(os.path.join(self.folder, n, "scene.json"))]

    @contextlib.contextmanager
    def slot(self, limit: int, stale_s: float) -> Iterator[None]:
        """Hold one of ``limit`` places for a scene being added, from before its body is read
        until it is claimed or refused: scenes plus places held never exceed ``limit``, however
        many requests arrive at once (on every ingress replica: a file lock and one reservation
        file each; one left by a crash counts for ``stale_s`` seconds). SlotsFull when none is free."""
        os.makedirs(self.folder, exist_ok=True)
        with open(os.path.join(self.folder, ".slots.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                now = time.time()
                held = [
                    e.path
                    for e in os.scandir(self.folder)
                    if e.name.startswith(".slot-") and now - e.stat().st_mtime < stale_s
                ]
                if len(self.ids()) + len(held) >= limit:
                    raise SlotsFull(len(self.ids()), len(held))
                fd, mine = tempfile.mkstemp(dir=self.folder, prefix=".slot-")
                os.close(fd)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(mine)

    def claim(self, scene_id: str, record: dict[str, Any]) -> None:
        """Claim ``scene_id`` (FileExistsError when it is taken) and write its first record."""
        os.makedirs(self.folder, exist_ok=True)
        os.mkdir(self.scene_dir(scene_id))
        self.write(scene_id, {"id": scene_id, "state": SceneState.SEGMENTING, "created": _now(), **record})

    def load(self, scene_id: str) -> dict[str, Any]:
        """An added scene's record; KeyError when there is none. A record left segmenting
        long after it was made (the service stopped meanwhile) reads as failed."""
        try:
            with open(os.path.join(self.scene_dir(scene_id), "scene.json"), encoding="utf-8") as f:
                record: dict[str, Any] = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(scene_id) from None
        if record.get("state") == SceneState.SEGMENTING:
            age = _dt.datetime.now(_dt.UTC) - _dt.datetime.fromisoformat(record["created"])
            if age.total_seconds() > STALE_AFTER_S:
                record.update(
                    state=SceneState.FAILED, error="the service stopped while it segmented; add it again"
                )
        return record

    def write(self, scene_id: str, record: dict[str, Any]) -> None:
        """Replace an added scene's record in one step."""
        path = os.path.join(self.scene_dir(scene_id), "scene.json")
        write_bytes(path, json.dumps(record, allow_nan=False).encode(), StorageSettings())

    def fail(self, scene_id: str, record: dict[str, Any], error: str) -> None:
        """Record why the scene failed and remove everything else it made."""
        folder = self.scene_dir(scene_id)
        for name in os.listdir(folder):
            if name != "scene.json":
                path = os.path.join(folder, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        self.write(
            scene_id,
            {**record, "state": SceneState.FAILED, "finished": _now(), "error": without_paths(error)},
        )

    def remove(self, scene_id: str) -> None:
        """Remove an added scene and everything it made."""
        shutil.rmtree(self.scene_dir(scene_id), ignore_errors=True)

    def finish(self, scene_id: str, record: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """Record the scene as ready."""
        record = {**record, **changes, "state": SceneState.READY, "finished": _now()}
        self.write(scene_id, record)
        return record


def to_cog(src: str, dest: str, settings: StorageSettings) -> None:
    """Copy the image ``src`` (local or s3://, a GeoTIFF) to a COG at ``dest`` (tiled, with
    overviews; written under a temporary name, then renamed)."""
    import rasterio

    from resseg_ray.geo.cog import write_cog
    from resseg_ray.geo.storage import atomic_output, gdal_env, gdal_path

    with (
        gdal_env(settings),
        rasterio.open(gdal_path(src), driver=settings.driver) as ds,  # GeoTIFF only when untrusted
        atomic_output(dest, settings, suffix=".tif") as tmp,
    ):
        write_cog(ds, tmp, predictor="YES", resampling="average")
