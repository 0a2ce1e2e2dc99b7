"""Segment scenes into output rasters: one scene (:func:`predict_scene`) or many, resumably."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from resseg_ray.errors import ResSegError
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.outputs import OutputOptions, SceneWriter, output_uris, outputs_complete
from resseg_ray.inference.predictor import ScenePredictor


@dataclass
class SceneReport:
    """What happened to one scene."""

    uri: str
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    megapixels: float = 0.0
    skipped: bool = False
    error: str | None = None

    @property
    def mpx_per_s(self) -> float:
        """Throughput of this scene (0 when skipped or failed)."""
        return self.megapixels / self.seconds if self.seconds > 0 and not self.skipped else 0.0


def predict_scene(
    predictor: ScenePredictor,
    scene_uri: str,
    out_dir: str,
    settings: StorageSettings,
    options: OutputOptions | None = None,
    overwrite: bool = False,
    progress: Callable[[float], None] | None = None,
    bands: Sequence[int] | None = None,
) -> SceneReport:
    """Segment one scene and publish its outputs under ``out_dir`` (skipped when complete)."""
    options = options or OutputOptions()
    uris = output_uris(out_dir, scene_uri, options)
    if not overwrite and outputs_complete(out_dir, scene_uri, options, settings):
        return SceneReport(scene_uri, uris, skipped=True)
    start = time.perf_counter()
    scene = open_scene(scene_uri, settings, bands=bands, expected_bands=predictor.info.in_bands)
    with SceneWriter(scene, options) as writer:
        for strip in predictor.strips(scene, settings):
            writer.write(strip)
            if progress is not None:
                progress((strip.row + strip.probs.shape[1]) / scene.height)
        writer.publish(uris, settings)
    return SceneReport(
        scene_uri, uris, seconds=time.perf_counter() - start, megapixels=scene.width * scene.height / 1e6
    )


def predict_scenes(
    predictor: ScenePredictor,
    scene_uris: Sequence[str],
    out_dir: str,
    settings: StorageSettings,
    options: OutputOptions | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    bands: Sequence[int] | None = None,
) -> list[SceneReport]:
    """Segment scenes one after another; a scene that fails is reported and the others go on."""
    reports = []
    for i, uri in enumerate(scene_uris, 1):
        prefix = f"[{i}/{len(scene_uris)}] {uri}"

        def progress(fraction: float, prefix: str = prefix) -> None:
            log(f"{prefix}: {100 * fraction:5.1f} %")

        try:
            report = predict_scene(predictor, uri, out_dir, settings, options, overwrite, progress, bands)
        except ResSegError as exc:
            report = SceneReport(uri, error=str(exc))
            log(f"{prefix}: error: {exc}")
        else:
            if report.skipped:
                log(f"{prefix}: outputs complete, skipped (--overwrite redoes it)")
            else:
                log(f"{prefix}: {report.seconds:.1f} s, {report.mpx_per_s:.2f} Mpx/s")
        reports.append(report)
    return reports
