"""Segment whole scenes by overlapping windows, strip by strip, in bounded memory.

The one windowing/stitching path of the project: training-time evaluation of test scenes
uses it now; the predict job, the evaluator and the Serve app build on it. Windows are
processed one window row at a time: the scene strip under that row is read once, its
windows go through the network in batches, and their blended class probabilities are
accumulated in a buffer one window high. Rows no later window touches are final and
yielded, so memory depends on the window size and scene width, never on scene height.

A huge scene can be split into parts, each a contiguous range of window rows
(:meth:`ScenePredictor.row_parts`), segmented independently (e.g. by different Ray
actors): a part also runs the window rows above it that reach into its first rows, so
its rows come out exactly as in one pass over the whole scene.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from resseg_ray.config import PredictSection
from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.scene import SceneInfo, read_window
from resseg_ray.geo.stats import Norm, compute_statistics, norm_arrays, normalize
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.windows import blend_weights, window_starts
from resseg_ray.models.bundle import BundleInfo, ModelBundle
from resseg_ray.runtime import Engine, candidates, select_engine
from resseg_ray.runtime.select import engine_like

_DEFAULT_BAND = re.compile(r"band\s*\d+")


def _sample_pixels(scene: SceneInfo, settings: StorageSettings, grid: int = 4, size: int = 128) -> np.ndarray:
    """Valid pixels ``(D, N)`` of a grid x grid sample of windows spread over the scene."""
    parts = []
    for gy in range(grid):
        for gx in range(grid):
            r = int((scene.height - size) * gy / max(grid - 1, 1)) if scene.height > size else 0
            c = int((scene.width - size) * gx / max(grid - 1, 1)) if scene.width > size else 0
            pix, valid = read_window(scene, settings, c, r, min(size, scene.width), min(size, scene.height))
            parts.append(pix[:, valid].astype(np.float64))
    return np.concatenate(parts, axis=1)


@dataclass
class Strip:
    """Final rows ``[row, row + probs.shape[1])`` of a scene: class probabilities ``(C, h, W)``
    float32 and the input's validity ``(h, W)``."""

    row: int
    probs: np.ndarray
    valid: np.ndarray

    def done(self, scene: SceneInfo) -> float:
        """The share of ``scene``'s rows segmented once this strip is (for progress)."""
        return (self.row + self.probs.shape[1]) / scene.height


@dataclass(frozen=True)
class RowPart:
    """Part ``index`` of ``count`` of a scene: window rows ``[first, stop)``, whose final
    output rows are ``[row0, row1)``."""

    index: int
    count: int
    first: int
    stop: int
    row0: int
    row1: int


def _window_rows(height: int, window: int, overlap: int) -> tuple[int, list[int]]:
    wh = min(window, height)
    return wh, window_starts(height, wh, min(overlap, wh - 1))


def _first_contributing(rows: list[int], wh: int, first: int) -> int:
    """The first window row whose windows reach into window row ``first``'s first pixel row."""
    return next(j for j in range(first + 1) if rows[j] + wh > rows[first])


def row_parts(height: int, window: int, overlap: int, count: int) -> list[RowPart]:
    """Split a scene of ``height`` rows into at most ``count`` parts of equal work.

    A part after the first also runs the ``e`` window rows above it that overlap its first
    rows (usually 1), so the first part gets ``e`` more window rows of its own than the
    others: each part then runs about ``(N + (count - 1) * e) / count`` of the scene's
    ``N`` window rows. Fewer parts when each would not have a window row of its own.
    """
    wh, rows = _window_rows(height, window, overlap)
    n = len(rows)
    mid = n // 2
    e = mid - _first_contributing(rows, wh, mid)
    count = max(1, min(count, n - e))
    work = (n + (count - 1) * e) / count
    bounds = [0] + [round(k * work - (k - 1) * e) for k in range(1, count)] + [n]
    return [
        RowPart(k, count, a, b, rows[a], rows[b] if b < n else height)
        for k, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


def window_row_count(height: int, window: int, overlap: int) -> int:
    """How many window rows cover a scene ``height`` rows high."""
    return len(_window_rows(height, window, overlap)[1])


def warn_if_far(info: BundleInfo, scene: SceneInfo, settings: StorageSettings) -> None:
    """Warn, naming the bands, when a sample of the scene is far from the training
    normalisation (a mean more than 3 training std away, or a std off by 3x)."""
    sample = _sample_pixels(scene, settings)
    if sample.shape[1] < 100:
        return
    mean, std = sample.mean(1), sample.std(1)
    ref_m, ref_s = np.asarray(info.norm_mean), np.asarray(info.norm_std)
    far = (np.abs(mean - ref_m) > 3 * ref_s) | (std > 3 * ref_s) | (std < ref_s / 3)
    if far.any():
        bands = [info.band_names[i] for i in np.flatnonzero(far)]
        warnings.warn(
            f"{scene.uri}: band(s) {bands} are far from the model's training statistics "
            f"(scene mean {np.round(mean[far]).tolist()} vs {np.round(ref_m[far]).tolist()}, std "
            f"{np.round(std[far]).tolist()} vs {np.round(ref_s[far]).tolist()}); another sensor? "
            "Predictions may be poor: try --normalization per_scene",
            stacklevel=3,
        )


def scene_norm(info: BundleInfo, normalization: str, scene: SceneInfo, settings: StorageSettings) -> Norm:
    """The normalisation applied to a scene: the bundle's (training) statistics, or with
    ``per_scene`` normalisation the scene's own, computed over its valid pixels exactly as
    training computed them for each training scene."""
    if normalization == "per_scene":
        stats = compute_statistics([scene], settings, scheduler="threads").pooled
        mean, std = stats.mean, stats.std
    else:
        warn_if_far(info, scene, settings)
        mean, std = info.norm_mean, info.norm_std
    return norm_arrays(mean, std)


Forward = Callable[[np.ndarray], np.ndarray]
"""Normalised windows ``(N, D, H, W)`` float32 -> class probabilities ``(N, C, H, W)``."""


class ScenePredictor:
    """A model bundle ready to segment scenes of any size on one device: the one object that
    :class:`~resseg_ray.config.PredictSection` options (validated when they were made) and a
    bundle build, used by every stage that segments scenes.

    Given a :class:`BundleInfo` and a ``forward`` instead of a bundle, the network runs
    elsewhere (the Serve ingress sends the windows to its model replicas) while windowing,
    normalisation and blending stay this class's. ``policy`` defaults to the options' device."""

    def __init__(
        self,
        bundle: ModelBundle | BundleInfo,
        options: PredictSection | None = None,
        policy: DevicePolicy | None = None,
        forward: Forward | None = None,
    ) -> None:
        o = self.options = options or PredictSection()
        self.info = bundle if isinstance(bundle, BundleInfo) else bundle.info
        self.normalization = o.normalization or str(self.info.extra.get("normalization", "pooled"))
        self.policy = policy or DevicePolicy.resolve(o.device)
        self.window, self.overlap, self.batch_size, self.blend = o.window, o.overlap, o.batch_size, o.blend
        self._remote = forward
        self._engine: Engine | None = None
        if isinstance(bundle, BundleInfo):
            if forward is None or o.adapt_bn:
                raise ConfigError(
                    "predict.adapt_bn needs the model's weights where the scene is read; "
                    "it is not available here (Serve): turn it off"
                )
            self._net, self.adapt_bn = None, False
            return
        candidates(o.runtime, o.precision, self.policy.device)  # refuse what this machine cannot run now
        self._net = bundle.model  # BatchNorms unfolded (adapt_bn re-estimates them)
        self.adapt_bn = o.adapt_bn

    @property
    def engine(self) -> Engine:
        """The engine that runs the network here (:func:`~resseg_ray.runtime.select_engine` of the
        options' ``runtime`` and ``precision``; chosen, and with ``auto`` measured, on first use)."""
        if self._engine is None:
            if self._net is None:
                raise ConfigError("this predictor's network runs elsewhere (Serve's model replicas)")
            o = self.options
            shape = (1, self.info.in_bands, o.window, o.window)  # auto measures on one window
            self._engine = select_engine(self._net, self.policy, o.runtime, o.precision, shape)
        return self._engine

    def describe_engine(self) -> dict[str, str]:
        """Which runtime and precision segment scenes here (``{"runtime": "serve"}`` when the
        network runs in Serve's model replicas)."""
        return {"runtime": "serve"} if self._remote is not None else self.engine.describe()

    def check_bands(self, scene: SceneInfo) -> None:
        """When the scene names its bands and they are the model's bands in another order, say
        how to map them (``--bands``) instead of silently feeding red as blue."""
        names = [n.lower() for n in scene.band_names]
        model = [n.lower() for n in self.info.band_names]
        if any(_DEFAULT_BAND.fullmatch(n) for n in names) or names == model or sorted(names) != sorted(model):
            return
        mapping = " ".join(str(scene.bands[names.index(b)]) for b in model)
        raise InputDataError(
            f"{scene.uri} has bands {list(scene.band_names)} in this order but the model expects "
            f"{self.info.band_names}; map them with --bands {mapping}"
        )

    def row_parts(self, height: int, count: int) -> list[RowPart]:
        """This predictor's :func:`row_parts` of a scene ``height`` rows high."""
        return row_parts(height, self.window, self.overlap, count)

    def rows_part(self, height: int, row0: int, row1: int) -> RowPart:
        """The part of a scene ``height`` rows high whose output rows cover ``[row0, row1)``:
        what :meth:`strips` must run to segment only those rows (as a whole-scene run would)."""
        _, rows = _window_rows(height, self.window, self.overlap)
        first = max(i for i, r in enumerate(rows) if r <= max(row0, 0))
        stop = next((j for j, r in enumerate(rows) if r >= row1), len(rows))
        stop = max(stop, first + 1)
        return RowPart(0, 1, first, stop, rows[first], rows[stop] if stop < len(rows) else height)

    def warn_if_far(self, scene: SceneInfo, settings: StorageSettings) -> None:
        """See :func:`warn_if_far`."""
        warn_if_far(self.info, scene, settings)

    def scene_norm(self, scene: SceneInfo, settings: StorageSettings) -> Norm:
        """See :func:`scene_norm`."""
        return scene_norm(self.info, self.normalization, scene, settings)

    def model_for(self, scene: SceneInfo, settings: StorageSettings, norm: Norm) -> Engine | None:
        """The engine for a scene: with ``adapt_bn``, the network's BatchNorm statistics
        re-estimated on the scene's own windows (:func:`~resseg_ray.inference.batchnorm.adapt_to_scene`,
        deterministic) in an engine of the same runtime and precision; otherwise :attr:`engine`
        (None when the network runs elsewhere)."""
        if self._remote is not None:
            return None
        if not self.adapt_bn:
            return self.engine
        from resseg_ray.inference.batchnorm import adapt_to_scene

        assert self._net is not None
        adapted = adapt_to_scene(self._net, scene, settings, norm, self.policy)
        return engine_like(self.engine, adapted, self.policy)

    def forward(self, tiles: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C, H, W)`` of normalised windows ``(N, D, H, W)`` (float32)
        through this predictor's network."""
        return self._forward(None if self._remote is not None else self.engine, tiles)

    def _forward(self, engine: Engine | None, tiles: np.ndarray) -> np.ndarray:
        if self._remote is not None:
            return self._remote(tiles)
        assert engine is not None
        return engine.forward(tiles)

    def _checked_forward(self, engine: Engine | None, tiles: np.ndarray, where: str) -> np.ndarray:
        """:meth:`_forward`, refusing output that is not finite: a NaN probability would be
        published as a confident "ground" (no building) everywhere it occurs."""
        probs = self._forward(engine, tiles)
        if not np.isfinite(probs).all():
            raise InputDataError(
                f"{where}: the network's output is not finite (NaN or infinite); no map is written. "
                "The model's weights or normalisation are broken (e.g. a diverged training run): "
                "use another model"
            )
        return probs

    def strips(
        self,
        scene: SceneInfo,
        settings: StorageSettings,
        part: RowPart | None = None,
        norm: Norm | None = None,
    ) -> Iterator[Strip]:
        """Yield the scene's blended class probabilities, top to bottom, in final strips.

        ``part``: only that part's rows (see :meth:`row_parts`). ``norm``: the scene's
        normalisation when already computed (:meth:`scene_norm`), e.g. once for all parts.
        """
        self.check_bands(scene)
        h, w = scene.height, scene.width
        wh, rows = _window_rows(h, self.window, self.overlap)
        ww = min(self.window, w)
        first, stop = (part.first, part.stop) if part is not None else (0, len(rows))
        # window rows above the part whose windows reach into its first row contribute to it
        start = _first_contributing(rows, wh, first)
        cols = window_starts(w, ww, min(self.overlap, ww - 1))
        weights = blend_weights(wh, ww, self.overlap, self.blend)
        c = self.info.num_classes
        acc = np.zeros((c, wh, w), np.float32)  # rows [top, top + wh) of the scene
        wsum = np.zeros((wh, w), np.float32)
        top = rows[start]
        norm = norm if norm is not None else self.scene_norm(scene, settings)
        engine = self.model_for(scene, settings, norm)
        for i in range(start, stop):
            r = rows[i]
            if r > top:  # shift the buffer down to start at r
                shift = r - top
                acc[:, :-shift] = acc[:, shift:]
                acc[:, -shift:] = 0
                wsum[:-shift] = wsum[shift:]
                wsum[-shift:] = 0
                top = r
            pixels, valid = read_window(scene, settings, 0, r, w, wh)
            x = normalize(pixels, valid, norm)
            where = f"{scene.uri} (rows {r}-{r + wh})"
            if not np.isfinite(x).all():
                raise InputDataError(
                    f"{where}: pixel values are NaN, infinite or beyond float32's range (±3.4e38) "
                    "after normalisation; no map is written. Mark such pixels as no data (a nodata "
                    "value or mask) or rescale the scene"
                )
            for b in range(0, len(cols), self.batch_size):
                chunk = cols[b : b + self.batch_size]
                tiles = np.stack([x[:, :, c0 : c0 + ww] for c0 in chunk])
                probs = self._checked_forward(engine, tiles, where)
                for p, c0 in zip(probs, chunk, strict=True):
                    acc[:, :, c0 : c0 + ww] += p * weights
                    wsum[:, c0 : c0 + ww] += weights
            if i < first:
                continue  # only contributes to the part's first rows
            end = rows[i + 1] if i + 1 < len(rows) else r + wh
            n = end - r
            yield Strip(row=r, probs=acc[:, :n] / wsum[:n], valid=valid[:n].copy())
