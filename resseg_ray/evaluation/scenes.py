"""Evaluate a model on whole labelled scenes (the paper's Table II protocol).

The scene is segmented by :class:`~resseg_ray.inference.predictor.ScenePredictor` (the
project's one windowing path) and compared strip by strip with its label raster; pixels
labelled 255 or without input data count for nothing.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from resseg_ray.errors import InputDataError
from resseg_ray.evaluation.metrics import IGNORE, Confusion
from resseg_ray.geo.scene import PREDICT_BANDS, open_scene, read_window
from resseg_ray.geo.storage import StorageSettings, scene_stem
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.progress import Progress, tenths


@dataclass
class SceneScore:
    """One scene's confusion and how long segmenting it took."""

    name: str
    uri: str
    confusion: Confusion
    seconds: float
    megapixels: float
    objects: dict[str, float] | None = None
    """Object-level scores (:func:`~resseg_ray.evaluation.objects.object_scores`), when computed."""

    @property
    def metrics(self) -> dict[str, float]:
        """Metrics of the building class (see :meth:`Confusion.metrics`), plus object scores."""
        return {**self.confusion.metrics(), **(self.objects or {})}


@dataclass
class Evaluation:
    """Scores of several scenes: per scene, their mean (the paper's) and pooled over all pixels."""

    scenes: list[SceneScore] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        """Mean over scenes of each metric (the paper's "mean" column)."""
        keys = self.scenes[0].metrics.keys()
        return {k: float(np.mean([s.metrics[k] for s in self.scenes])) for k in keys}

    def pooled(self) -> dict[str, float]:
        """Metrics of all scenes' pixels together."""
        first = self.scenes[0].confusion
        total = Confusion.empty(first.counts.shape[0], damage=first.damage)
        for s in self.scenes:
            total = total + s.confusion
        return total.metrics()

    def mlflow_metrics(self, prefix: str = "test") -> dict[str, float]:
        """``test_<scene>_<metric>`` for every scene and ``test_mean_<metric>``."""
        out = {}
        for s in self.scenes:
            for k, v in s.metrics.items():
                out[f"{prefix}_{s.name}_{k}"] = v
        for k, v in self.mean().items():
            out[f"{prefix}_mean_{k}"] = v
        return out


def scene_name(uri: str) -> str:
    """Short metric-safe name of a scene: its stem (:func:`~resseg_ray.geo.storage.scene_stem`)
    with other characters than letters, digits, ``_-.`` replaced by ``_``."""
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in scene_stem(uri))


def _checked_labels(labels: np.ndarray, valid: np.ndarray, label_uri: str, classes: int = 2) -> np.ndarray:
    """A copy of a block of label values, refused unless each is a class value (0 ground, 1
    building; a damage network's 0 to 4) or 255 (ignored)."""
    odd = np.setdiff1d(np.unique(labels[valid]), [*range(classes), IGNORE])
    if odd.size:
        if classes > 2:
            raise InputDataError(
                f"label raster {label_uri} holds values {odd[:5].tolist()}; damage labels must be 0 "
                f"(background) to {classes - 1} or {IGNORE} (ignored): burn them from footprints with "
                "resseg prepare --post"
            )
        raise InputDataError(
            f"label raster {label_uri} holds values {odd[:5].tolist()}; labels must be 0 (ground), "
            f"1 (building) or {IGNORE} (ignored): reclassify it, or rasterize footprints with jobs/prepare.py"
        )
    return labels.copy()


def evaluate_scene(
    predictor: ScenePredictor,
    scene_uri: str,
    label_uri: str,
    settings: StorageSettings,
    bands: Sequence[int] | None = None,
    objects: bool = False,
    progress: Callable[[float], None] | None = None,
    rows: tuple[int, int] | None = None,
) -> SceneScore:
    """Segment a scene and score it against its label raster (same grid, 0/1/255); with
    ``objects``, object-level F1 too (the mask is kept in a temporary GeoTIFF for that).
    ``progress`` is told the share of the scene's rows done (:func:`~resseg_ray.progress.tenths`).
    ``rows=(r0, r1)`` segments only the windows those rows need and scores the labels there
    (labels elsewhere must be 255: a held-out area)."""
    from resseg_ray.inference.outputs import OutputOptions, SceneWriter

    scene = open_scene(
        scene_uri, settings, bands=bands, expected_bands=predictor.info.in_bands, bands_option=PREDICT_BANDS
    )
    labels = open_scene(label_uri, settings, bands=[1])
    if not scene.same_grid(labels):
        raise InputDataError(f"labels {label_uri} are not on the grid of {scene_uri}; re-run jobs/prepare.py")
    info = predictor.info
    confusion = Confusion.for_model(info.architecture, info.num_classes)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(SceneWriter(scene, OutputOptions(prob=False))) if objects else None
        part = predictor.rows_part(scene.height, *rows) if rows is not None and not objects else None
        for strip in predictor.strips(scene, settings, part):
            h = strip.probs.shape[1]
            lab, lvalid = read_window(labels, settings, 0, strip.row, scene.width, h)
            target = _checked_labels(lab[0], lvalid, label_uri, info.num_classes)
            target[~(strip.valid & lvalid)] = IGNORE
            confusion.add(strip.probs.argmax(0), target)
            if writer is not None:
                writer.write(strip)
            if progress is not None:
                progress(strip.done(scene))
        seconds = time.perf_counter() - start
        if confusion.pixels == 0:
            _nothing_to_score(scene_uri, label_uri, "the scene")
        object_metrics = _object_scores(writer.finish()["mask"], label_uri, settings) if writer else None
    return SceneScore(
        name=scene_name(scene_uri),
        uri=scene_uri,
        confusion=confusion,
        seconds=seconds,
        megapixels=scene.width * scene.height / 1e6,
        objects=object_metrics,
    )


def _nothing_to_score(uri: str, label_uri: str, what: str) -> None:
    raise InputDataError(
        f"{uri}: no pixel to score: {what} and the labels {label_uri} share no valid, labelled pixel "
        "(one of them is no data, or 255, everywhere); an F1 of nothing would mean nothing: check the pair"
    )


def _object_scores(mask_uri: str, label_uri: str, settings: StorageSettings) -> dict[str, float]:
    from resseg_ray.evaluation.objects import object_scores
    from resseg_ray.geo.storage import download

    with tempfile.TemporaryDirectory() as d:
        return object_scores(download(mask_uri, d, settings), download(label_uri, d, settings))


def evaluate_mask(
    mask_uri: str, label_uri: str, settings: StorageSettings, rows: int = 512, objects: bool = False
) -> SceneScore:
    """Score an existing class mask (e.g. ``<stem>_mask.tif``; 255 = no data) against labels
    on the same grid, ``rows`` rows at a time; with ``objects``, object-level F1 too."""
    mask = open_scene(mask_uri, settings, bands=[1])
    labels = open_scene(label_uri, settings, bands=[1])
    if not mask.same_grid(labels):
        raise InputDataError(
            f"mask {mask_uri} ({mask.width}x{mask.height}) is not on the grid of labels {label_uri} "
            f"({labels.width}x{labels.height}); pair each mask with the labels of its scene"
        )
    confusion = Confusion.empty(2)
    start = time.perf_counter()
    for r in range(0, mask.height, rows):
        h = min(rows, mask.height - r)
        pred, pvalid = read_window(mask, settings, 0, r, mask.width, h)
        lab, lvalid = read_window(labels, settings, 0, r, mask.width, h)
        target = _checked_labels(lab[0], lvalid, label_uri)
        target[~(pvalid & lvalid) | (pred[0] == IGNORE)] = IGNORE
        values = pred[0][target != IGNORE]
        if values.size and values.max() > 1:
            raise InputDataError(
                f"mask {mask_uri} holds class {int(values.max())}; expected 0/1 (255 no data)"
            )
        confusion.add(pred[0], target)
    if confusion.pixels == 0:
        _nothing_to_score(mask_uri, label_uri, "the mask")
    name = scene_name(mask_uri)
    if name.endswith("_mask"):
        name = name[: -len("_mask")]
    object_metrics = _object_scores(mask_uri, label_uri, settings) if objects else None
    return SceneScore(
        name, mask_uri, confusion, time.perf_counter() - start, mask.width * mask.height / 1e6, object_metrics
    )


def evaluate_scenes(
    predictor: ScenePredictor,
    scenes: Sequence[tuple[str, str]],
    settings: StorageSettings,
    bands: Sequence[int] | None = None,
    objects: bool = False,
) -> Evaluation:
    """Evaluate ``(scene URI, label URI)`` pairs (``objects``: object-level F1 too), a progress
    line (or bar) per scene."""
    scores = []
    with Progress("scene", len(scenes)) as bar:
        for s, lab in scenes:
            score = evaluate_scene(predictor, s, lab, settings, bands, objects, tenths(s))
            m = score.metrics
            bar.step(f"{score.name}: F1 {100 * m['f1']:.2f}, accuracy {100 * m['accuracy']:.2f}")
            scores.append(score)
    return Evaluation(scores)


def markdown_table(rows: dict[str, Evaluation], metrics: Sequence[str] = ("f1", "accuracy")) -> str:
    """A Table II-style markdown table: one row per model, ``F1 / accuracy`` (in %) per scene and the mean."""
    first = next(iter(rows.values()))
    names = [s.name for s in first.scenes]
    head = "| model | " + " | ".join([*names, "mean"]) + " |"
    sep = "|---|" + "---|" * (len(names) + 1)
    lines = [f"{' / '.join(m.upper() if m == 'f1' else m for m in metrics)} in %", "", head, sep]
    for model, ev in rows.items():
        cells = [" / ".join(f"{100 * s.metrics[m]:.2f}" for m in metrics) for s in ev.scenes]
        mean = ev.mean()
        cells.append(" / ".join(f"{100 * mean[m]:.2f}" for m in metrics))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
