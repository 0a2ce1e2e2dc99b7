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
    report_errors: bool = False,
) -> SceneReport:
    """Segment one scene and publish its outputs under ``out_dir`` (skipped when complete).

    With ``report_errors`` a user error (unreadable scene, wrong bands) is returned as the
    report's ``error`` instead of raised, so a batch of scenes goes on."""
    if report_errors:
        try:
            return predict_scene(predictor, scene_uri, out_dir, settings, options, overwrite, progress, bands)
        except ResSegError as exc:
            return SceneReport(scene_uri, error=str(exc))
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

        report = predict_scene(predictor, uri, out_dir, settings, options, overwrite, progress, bands, True)
        if report.error is not None:
            log(f"{prefix}: error: {report.error}")
        elif report.skipped:
            log(f"{prefix}: outputs complete, skipped (--overwrite redoes it)")
        else:
            log(f"{prefix}: {report.seconds:.1f} s, {report.mpx_per_s:.2f} Mpx/s")
        reports.append(report)
    return reports


class _SceneActor:
    """Ray Data actor: loads the bundle once, then segments the scenes it is handed."""

    def __init__(
        self,
        bundle_ref,
        predictor_kwargs: dict,
        out_dir: str,
        settings: StorageSettings,
        options: OutputOptions,
        overwrite: bool,
        bands: Sequence[int] | None,
        threads: int | None,
    ) -> None:
        import os
        import tempfile

        import ray
        import torch

        from resseg_ray.device import DevicePolicy
        from resseg_ray.models.bundle import load_bundle

        if threads:
            torch.set_num_threads(threads)
        data = ray.get(bundle_ref) if isinstance(bundle_ref, ray.ObjectRef) else bundle_ref
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.resseg.safetensors")
            with open(path, "wb") as f:
                f.write(data)
            bundle = load_bundle(path)
        self.predictor = ScenePredictor(bundle, DevicePolicy.resolve(), **predictor_kwargs)
        self.args = (out_dir, settings, options, overwrite)
        self.bands = bands

    def __call__(self, batch: dict) -> dict:
        out_dir, settings, options, overwrite = self.args
        rows: dict[str, list] = {k: [] for k in ("uri", "seconds", "megapixels", "skipped", "error")}
        for uri in batch["uri"]:
            r = predict_scene(
                self.predictor,
                str(uri),
                out_dir,
                settings,
                options,
                overwrite,
                bands=self.bands,
                report_errors=True,
            )
            rows["uri"].append(r.uri)
            rows["seconds"].append(r.seconds)
            rows["megapixels"].append(r.megapixels)
            rows["skipped"].append(r.skipped)
            rows["error"].append(r.error or "")
        return rows


def predict_scenes_on_ray(
    bundle_bytes: bytes,
    predictor_kwargs: dict,
    scene_uris: Sequence[str],
    out_dir: str,
    settings: StorageSettings,
    options: OutputOptions | None = None,
    overwrite: bool = False,
    bands: Sequence[int] | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0,
    cpus_per_actor: float = 1,
) -> list[SceneReport]:
    """Segment scenes on a Ray cluster: a Ray Data actor pool (``actors`` actors, each with
    ``gpus_per_actor`` GPUs) loads the model once per actor and takes one scene at a time."""
    import ray

    options = options or OutputOptions()
    ds = ray.data.from_items([{"uri": u} for u in scene_uris], override_num_blocks=len(scene_uris))
    results = ds.map_batches(
        _SceneActor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus_per_actor,
        num_cpus=cpus_per_actor,
        fn_constructor_kwargs={
            "bundle_ref": ray.put(bundle_bytes),
            "predictor_kwargs": predictor_kwargs,
            "out_dir": out_dir,
            "settings": settings,
            "options": options,
            "overwrite": overwrite,
            "bands": list(bands) if bands else None,
            "threads": max(1, int(cpus_per_actor)),
        },
    ).take_all()
    by_uri = {
        r["uri"]: SceneReport(
            r["uri"],
            output_uris(out_dir, r["uri"], options) if not r["error"] else {},
            float(r["seconds"]),
            float(r["megapixels"]),
            bool(r["skipped"]),
            r["error"] or None,
        )
        for r in results
    }
    return [by_uri[u] for u in scene_uris]
