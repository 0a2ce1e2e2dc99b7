"""Per-band normalisation statistics over valid pixels: dask arrays of windowed reads, run on Ray.

Each scene becomes a lazy ``(bands, height, width)`` float64 dask array whose chunks are
windowed reads (no data as NaN); ``nanmean``/``nanstd`` reduce it chunk by chunk, and the
graph is executed by Ray's dask scheduler (``ray.util.dask.ray_dask_get``) when Ray is
running, so chunks are read in parallel across the cluster. Per-scene results are pooled
exactly (counts, means and variances combined).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import SceneInfo, read_window
from resseg_ray.geo.storage import StorageSettings

if TYPE_CHECKING:  # dask is imported where statistics are computed: loader tasks need none of it
    import dask.array as da


@dataclass(frozen=True)
class BandStats:
    """Per-band mean, standard deviation (population) and valid-pixel count."""

    mean: list[float]
    std: list[float]
    count: list[int]


@dataclass(frozen=True)
class Statistics:
    """Statistics of every scene and pooled over all of them."""

    band_names: list[str]
    pooled: BandStats
    scenes: dict[str, BandStats]

    def to_json(self) -> str:
        """JSON text (stored next to the manifest and later in the model bundle)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Statistics:
        """Parse :meth:`to_json` output."""
        d = json.loads(text)
        return cls(
            band_names=list(d["band_names"]),
            pooled=BandStats(**d["pooled"]),
            scenes={k: BandStats(**v) for k, v in d["scenes"].items()},
        )


Norm = tuple[np.ndarray, np.ndarray]
"""Mean and 1/std ``(D, 1, 1)`` float32 applied to a scene's pixels (see :func:`normalize`)."""


def norm_arrays(mean: Sequence[float], std: Sequence[float]) -> Norm:
    """The :data:`Norm` of per-band means and standard deviations."""
    return (
        np.asarray(mean, np.float32)[:, None, None],
        1.0 / np.asarray(std, np.float32)[:, None, None],
    )


def normalize(pixels: np.ndarray, valid: np.ndarray, norm: Norm) -> np.ndarray:
    """The network input of raw pixels ``(..., D, H, W)``: ``(x - mean) / std`` in float32 with
    the pixels that are not ``valid`` (``(..., H, W)``) set to 0, i.e. to the mean.

    The one normalisation of the project: training samples, scene windows, BatchNorm
    re-estimation and the MLflow model all go through it. Values beyond float32's range become
    infinite here; callers check the result (:class:`~resseg_ray.inference.predictor.ScenePredictor`
    refuses non-finite input)."""
    mean, inv_std = norm
    with np.errstate(over="ignore", invalid="ignore"):
        x = pixels.astype(np.float32)
        x -= mean
        x *= inv_std
    np.copyto(x, np.float32(0.0), where=~np.expand_dims(valid, -3))
    return x


def valid_stats(pixels: np.ndarray, valid: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-band mean and population std of ``pixels`` ``(D, H, W)`` over the ``valid`` pixels,
    computed as :func:`compute_statistics` computes them for a scene."""
    x = pixels.astype(np.float64)[:, valid]
    if x.shape[1] == 0:
        raise InputDataError("no valid pixels to compute statistics over")
    return x.mean(1).tolist(), x.std(1).tolist()


def _read_float(info: SceneInfo, settings: StorageSettings, c: int, r: int, w: int, h: int) -> np.ndarray:
    data, valid = read_window(info, settings, c, r, w, h)
    out = data.astype(np.float64)
    out[:, ~valid] = np.nan
    return out


def scene_array(info: SceneInfo, settings: StorageSettings, block: int = 1024) -> da.Array:
    """The scene as a lazy dask array of windowed reads, NaN where there is no data."""
    import dask
    import dask.array as da

    nb = len(info.bands)
    rows = []
    for r in range(0, info.height, block):
        h = min(block, info.height - r)
        row = []
        for c in range(0, info.width, block):
            w = min(block, info.width - c)
            part = dask.delayed(_read_float, pure=True)(info, settings, c, r, w, h)
            row.append(da.from_delayed(part, shape=(nb, h, w), dtype=np.float64))
        rows.append(row)
    return da.block([[chunk for chunk in row] for row in rows])


LOCAL_PIXELS = 1 << 22
"""Scenes of at most this many pixels in all (2048 x 2048) are summed by threads of this
process: Ray tasks would spend seconds starting worker processes on what reads in a tenth
of a second (a refinement's one scene, a few chips)."""


def _scheduler(scenes: list[SceneInfo]):
    import ray

    if ray.is_initialized() and sum(s.width * s.height for s in scenes) > LOCAL_PIXELS:
        from ray.util.dask import ray_dask_get

        return ray_dask_get
    return _THREADS


_THREADS = "threads"


def compute_statistics(
    scenes: list[SceneInfo],
    settings: StorageSettings,
    block: int = 1024,
    scheduler=None,
    num_cpus: float = 1.0,
) -> Statistics:
    """Per-scene and pooled per-band mean/std over valid pixels.

    ``scheduler`` defaults to Ray's dask scheduler when Ray is initialised and the scenes
    hold more than :data:`LOCAL_PIXELS` pixels, else threads;
    on Ray each block's task reserves ``num_cpus`` (fractions let it run beside services
    that hold most of a machine's CPUs).
    """
    if not scenes:
        raise InputDataError("no scenes to compute statistics over")
    nb = {len(s.bands) for s in scenes}
    if len(nb) != 1:
        raise InputDataError(
            "scenes provide different band counts: "
            + ", ".join(f"{s.uri}: {len(s.bands)}" for s in scenes)
            + "; select the same bands for all with data.bands"
        )
    import dask
    import dask.array as da

    lazy = []
    for s in scenes:
        x = scene_array(s, settings, block)
        finite = ~da.isnan(x)
        lazy.append((finite.sum(axis=(1, 2)), da.nanmean(x, axis=(1, 2)), da.nanvar(x, axis=(1, 2))))
    with np.errstate(invalid="ignore", divide="ignore"):
        chosen = scheduler or _scheduler(scenes)
        extra = {"ray_remote_args": {"num_cpus": num_cpus}} if chosen is not _THREADS else {}
        results = dask.compute(*lazy, scheduler=chosen, **extra)
    per_scene: dict[str, BandStats] = {}
    counts, means, variances = [], [], []
    for s, (n, m, v) in zip(scenes, results, strict=True):
        if int(n.min()) == 0:
            raise InputDataError(f"scene {s.uri} has no valid pixels (all no-data); remove it from the list")
        per_scene[s.uri] = BandStats(mean=m.tolist(), std=np.sqrt(v).tolist(), count=n.astype(int).tolist())
        counts.append(n)
        means.append(m)
        variances.append(v)
    n_all = np.sum(counts, axis=0)
    mean_all = np.sum([n * m for n, m in zip(counts, means, strict=True)], axis=0) / n_all
    var_all = (
        np.sum(
            [n * (v + (m - mean_all) ** 2) for n, m, v in zip(counts, means, variances, strict=True)], axis=0
        )
        / n_all
    )
    std_all = np.sqrt(var_all)
    if np.any(std_all == 0):
        raise InputDataError(
            "a band is constant over all valid pixels of "
            + ", ".join(s.uri for s in scenes)
            + f" (std {std_all.tolist()}); it cannot be normalised"
        )
    return Statistics(
        band_names=list(scenes[0].band_names),
        pooled=BandStats(mean=mean_all.tolist(), std=std_all.tolist(), count=n_all.astype(int).tolist()),
        scenes=per_scene,
    )
