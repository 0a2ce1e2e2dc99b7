"""Per-band normalisation statistics over valid pixels: windowed reads reduced by dask, run on Ray.

Every statistic of the project is a :class:`Moments` (per band: valid-pixel count, mean and
sum of squared deviations, float64) of some pixels, merged in a fixed order (Chan et al.'s
pairwise update), so the same pixels give the same figures however they were read. For
:func:`compute_statistics` each scene's blocks are dask tasks (a windowed read and its
moments), executed by Ray's dask scheduler (``ray.util.dask.ray_dask_get``) when Ray is
running, so blocks are read in parallel across the cluster; a pair being stacked gets its
moments from the strips it writes (:func:`resseg_ray.data.pairs.stack_pair`).
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
    from dask.delayed import Delayed


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


@dataclass(frozen=True)
class Moments:
    """Per-band count of valid (and finite) pixels, their mean, and the sum of their squared
    deviations from it, float64: what a mean and a population std are made of, and what two
    sets of pixels merge into exactly (``a + b``)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def none(cls, bands: int) -> Moments:
        """The moments of no pixels."""
        return cls(np.zeros(bands, np.int64), np.zeros(bands), np.zeros(bands))

    @classmethod
    def of(cls, pixels: np.ndarray, valid: np.ndarray) -> Moments:
        """The moments of ``pixels`` ``(D, H, W)`` over ``valid`` ``(H, W)``; a float band's
        NaN and infinite values are left out of that band (an integer band has none)."""
        x = pixels.reshape(len(pixels), -1) if valid.all() else pixels[:, valid]
        if x.dtype.kind in "iub" and x.dtype.itemsize <= 2:
            # exact integer sums (a square of 16 bits fits 32, 2**31 of them 63), one pass each
            n, total = x.shape[1], x.sum(axis=1, dtype=np.int64)
            squares = np.einsum("ij,ij->i", x, x, dtype=np.int64, casting="safe")
            m2 = [(n * int(q) - int(t) ** 2) / n if n else 0.0 for t, q in zip(total, squares, strict=True)]
            mean = total / n if n else np.zeros(len(x))
            return cls(np.full(len(x), n, np.int64), np.asarray(mean, np.float64), np.asarray(m2, np.float64))
        out = cls.none(len(x))  # wider integers and floats: per band, in float64
        for b, band in enumerate(x):
            v = band.astype(np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                out.count[b], out.mean[b] = v.size, v.mean()
                out.m2[b] = ((v - out.mean[b]) ** 2).sum()
        return out

    def __add__(self, other: Moments) -> Moments:
        n = self.count + other.count
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(n > 0, other.count / np.maximum(n, 1), 0.0)
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * share, self.m2 + other.m2 + delta**2 * self.count * share)

    def band_stats(self) -> BandStats:
        """Mean, population std and count per band (NaN for a band without pixels)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.count > 0, self.mean, np.nan)
            std = np.sqrt(self.m2 / self.count)
        return BandStats(mean=mean.tolist(), std=std.tolist(), count=self.count.astype(int).tolist())


def valid_stats(pixels: np.ndarray, valid: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-band mean and population std of ``pixels`` ``(D, H, W)`` over the ``valid`` pixels,
    computed as :func:`compute_statistics` computes them for a scene."""
    stats = Moments.of(pixels, valid).band_stats()
    if min(stats.count) == 0:
        raise InputDataError("no valid pixels to compute statistics over")
    return stats.mean, stats.std


def _block_moments(info: SceneInfo, settings: StorageSettings, c: int, r: int, w: int, h: int) -> Moments:
    data, valid = read_window(info, settings, c, r, w, h)
    return Moments.of(data, valid)


def _merged(parts: Sequence[Moments]) -> Moments:
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def scene_moments(info: SceneInfo, settings: StorageSettings, block: int = 1024) -> Delayed:
    """The scene's :class:`Moments` as a lazy dask value: a task per ``block`` x ``block``
    windowed read, merged in reading order."""
    import dask

    parts = [
        dask.delayed(_block_moments, pure=True)(
            info, settings, c, r, min(block, info.width - c), min(block, info.height - r)
        )
        for r in range(0, info.height, block)
        for c in range(0, info.width, block)
    ]
    return dask.delayed(_merged, pure=True)(parts)


def pooled_statistics(moments: Sequence[tuple[str, Moments]], band_names: Sequence[str]) -> Statistics:
    """Each scene's statistics and the pooled ones (the scenes' moments merged in order);
    a scene without valid pixels or a band constant over all of them is an error."""
    per_scene: dict[str, BandStats] = {}
    for uri, m in moments:
        if int(m.count.min()) == 0:
            raise InputDataError(f"scene {uri} has no valid pixels (all no-data); remove it from the list")
        per_scene[uri] = m.band_stats()
    pooled = _merged([m for _, m in moments]).band_stats()
    if any(s == 0 for s in pooled.std):
        raise InputDataError(
            "a band is constant over all valid pixels of "
            + ", ".join(uri for uri, _ in moments)
            + f" (std {pooled.std}); it cannot be normalised"
        )
    return Statistics(band_names=list(band_names), pooled=pooled, scenes=per_scene)


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

    lazy = [scene_moments(s, settings, block) for s in scenes]
    chosen = scheduler or _scheduler(scenes)
    extra = {"ray_remote_args": {"num_cpus": num_cpus}} if chosen is not _THREADS else {}
    results = dask.compute(*lazy, scheduler=chosen, **extra)
    return pooled_statistics([(s.uri, m) for s, m in zip(scenes, results, strict=True)], scenes[0].band_names)
