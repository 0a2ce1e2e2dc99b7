"""Refine a trained model on the annotated part of a new scene (the paper's Table III).

The steps reuse the project's parts, no copies: the annotated area's labels become a
one-scene dataset (:func:`~resseg_ray.data.prepare.prepare_dataset`, tiles wholly inside
the area, validation blocks inside it too), the trainer continues from the parent's
weights and normalisation at a small learning rate, choosing its epoch on the validation
blocks. Then the verdict (:mod:`resseg_ray.adapt.gate`): the parent, the parent with its
BatchNorm statistics re-estimated on the scene and the refined model are scored on the
validation blocks, annotated pixels no training tile touched, and the refined model is
registered only when it beats both by ``train.min_gain``; with ``train.folds`` > 1 the held-out
pixels are every annotated block, by cross-validation (:mod:`resseg_ray.adapt.folds`). With
labels outside the area, the evaluator also scores the three on the rest of the scene.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resseg_ray.adapt.area import (
    AnnotatedArea,
    AreaLabels,
    area_from_polygons,
    contiguous_area,
    footprints_in_area,
    random_area,
    read_labels,
    write_area_labels,
)
from resseg_ray.adapt.folds import cross_validate, every_block, held_out_blocks, prepare_folds
from resseg_ray.adapt.gate import CANDIDATES, Verdict, decide, score_held_out
from resseg_ray.config import Config
from resseg_ray.data.prepare import prepare_dataset
from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.evaluation.metrics import Confusion
from resseg_ray.evaluation.scenes import Evaluation, SceneScore, evaluate_scene, markdown_table, scene_name
from resseg_ray.geo.labels import read_footprints, scene_valid_mask
from resseg_ray.geo.scene import SceneInfo, open_scene
from resseg_ray.geo.storage import (
    StorageSettings,
    exists,
    join_uri,
    removed_on_failure,
    write_bytes,
)
from resseg_ray.inference.damage import pair_name
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models.bundle import BundleInfo, ModelBundle, encode_bundle, load_bundle_bytes
from resseg_ray.models.source import fetch_bundle_bytes
from resseg_ray.progress import tenths

if TYPE_CHECKING:
    from resseg_ray.train.fit import TrainResult


@dataclass(frozen=True)
class AreaSpec:
    """Where the scene was annotated: ``polygons`` (a vector file) or a ``fraction`` of the
    scene chosen ``contiguous`` (top-left block) or ``random`` (seeded block)."""

    polygons: str | None = None
    fraction: float | None = None
    placement: str = "contiguous"
    seed: int = 0

    def build(self, scene: SceneInfo, settings: StorageSettings) -> AnnotatedArea:
        """The area on the scene grid."""
        if (self.polygons is None) == (self.fraction is None):
            raise ConfigError("give the annotated area as --area POLYGONS or as --fraction F, not both")
        if self.polygons is not None:
            return area_from_polygons(scene, self.polygons, settings)
        valid = scene_valid_mask(scene, settings)
        assert self.fraction is not None
        if not valid.any():
            raise InputDataError(
                f"{scene.uri} has no valid pixels (no data everywhere): there is nothing to annotate"
            )
        if self.placement == "contiguous":
            return contiguous_area(valid, self.fraction)
        if self.placement == "random":
            return random_area(valid, self.fraction, self.seed)
        raise ConfigError(f"area placement {self.placement!r} is not 'contiguous' or 'random'")


@dataclass
class RefineResult:
    """Scores on the rest of the scene before and after refinement, and what was made."""

    scene: str
    area: AreaLabels
    before: SceneScore | None
    """The parent on the rest of the scene (None when not scored: no labels there)."""
    adapted: SceneScore | None
    after: SceneScore | None
    bundle_uri: str
    mlflow_run_id: str
    registered_version: str | None
    verdict: Verdict | None = None
    """Which model was kept, chosen on the annotated pixels kept out of training."""
    adapted_bundle: bytes | None = None
    """The parent with BatchNorm re-estimated on the scene (what ``verdict.chosen == 'adapted'`` keeps)."""
    post: str | None = None
    """A damage refinement's post-event scene (:attr:`scene` is then the pre-event one)."""

    def table(self) -> str:
        """Table III-style markdown: F1 / accuracy on the rest of the scene, per model (a damage
        network: the xView2 score, localization F1 and damage F1)."""
        named = [
            ("before refinement", self.before),
            ("BatchNorm re-estimated", self.adapted),
            (f"refined on {100 * self.area.fraction:.1f} %", self.after),
        ]
        rows = {name: Evaluation([score]) for name, score in named if score is not None}
        if not rows:
            return "(the rest of the scene was not scored: it has no labels)\n"
        return markdown_table(rows, _columns(next(iter(rows.values())).scenes[0]))


SMALL_JOB_PIXELS = 1_000_000
"""Scenes of at most this many pixels (1000 x 1000) have the refinement's candidates scored by
fp32 PyTorch when ``predict.runtime`` is ``auto`` on a CPU (see :func:`_predictor`)."""


def _predictor(bundle: ModelBundle, cfg: Config, scene: SceneInfo) -> ScenePredictor:
    """The predictor that scores a candidate on ``scene``: the predict options, without
    BatchNorm adaptation (its own step here). With ``runtime: auto`` on a CPU and a scene of at
    most :data:`SMALL_JOB_PIXELS`, fp32 PyTorch (or the precision asked): auto would export,
    compile and check a graph runtime for each candidate (new weights each: measured on a Xeon
    with AMX, 1-3 s for prop18 and unet19, whose fp32 PyTorch windows of 512 px take 0.3 and
    1.5-2 s), which a megapixel does not pay back; and one exact engine then scores all the
    candidates of the verdict alike."""
    options = cfg.predict.replace(adapt_bn=False)
    small = scene.width * scene.height <= SMALL_JOB_PIXELS
    if small and options.runtime == "auto" and DevicePolicy.resolve(options.device).device.type == "cpu":
        precision = "fp32" if options.precision == "auto" else options.precision
        options = options.replace(runtime="torch", precision=precision)
    return ScenePredictor(bundle, options)


def refine_scene(
    cfg: Config,
    parent: str,
    scene_uri: str,
    area_spec: AreaSpec,
    footprints: str | None = None,
    labels: str | None = None,
    adapt_bn: bool = False,
    alias: str | None = None,
    log: Callable[[str], None] = print,
    score_rest: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    post: str | None = None,
    damage_field: str = "subtype",
) -> RefineResult:
    """Refine ``parent`` (bundle or models:/ URI) on the annotated part of ``scene_uri`` and
    score it, before and after, on the rest of the scene. ``cfg.train`` gives the refinement
    schedule, ``cfg.data`` the tiling; the run is ``cfg.run.name`` under ``cfg.run.storage_path``.
    The refined bundle is registered as a new version of ``cfg.mlflow.registered_model`` with
    the alias ``alias`` (default ``refined-<scene>``), never the parent's ``best``.

    ``score_rest=False`` skips the scoring on the rest of the scene, for annotations that
    label the area only (the map page's: outside it nothing is known, so every building
    there would count as a false positive); ``on_epoch`` sees each epoch's losses.

    A damage network refines on a pair: ``scene_uri`` is the pre-event scene and ``post`` the
    post-event one (read on the pre grid, stacked under the run folder); ``footprints`` then
    carry each building's damage in ``damage_field`` (or ``labels`` is a damage raster, 0 to
    4 and 255), and every score is the xView2 score."""
    from resseg_ray.geo.storage import resolve_uri
    from resseg_ray.models.registry import model_task
    from resseg_ray.train.registry import register_run_model
    from resseg_ray.train.trainer import StartFrom, run_training

    settings = StorageSettings.resolve(cfg.storage)
    if (footprints is None) == (labels is None):
        raise ConfigError("give the annotations as --footprints (vector) or --labels (raster), one of them")
    parent_bytes = fetch_bundle_bytes(parent, settings)
    bundle = load_bundle_bytes(parent_bytes, parent)
    info = bundle.info
    damage = model_task(info.architecture) == "damage"
    _check_inputs(cfg, parent, info.architecture, damage, post)
    stem = scene_name(pair_name(scene_uri) if damage else scene_uri)
    name = cfg.run.name or f"refine-{stem}-{info.architecture}"
    run_dir = join_uri(resolve_uri(cfg.run.storage_path), name)
    # what this call creates goes again if a step before training fails (a refused area, no
    # tiles); once training has started the folder is kept: a re-run resumes from it
    fresh = not exists(run_dir, settings)
    given = scene_uri
    with removed_on_failure([run_dir] if fresh else [], settings):
        if post is not None:  # the pair as one scene (pre bands, then post), its damage raster
            scene_uri, labels = _stacked_pair(
                scene_uri, post, footprints, labels, damage_field, join_uri(run_dir, stem), info, settings
            )
            footprints = None
        scene = open_scene(scene_uri, settings, bands=cfg.data.bands, expected_bands=info.in_bands)
        area = area_spec.build(scene, settings)
        if footprints is not None:
            label_array = footprints_in_area(scene, read_footprints(footprints, settings), area)
        else:
            assert labels is not None
            label_array = read_labels(scene, labels, settings)
        normalization = str(info.extra.get("normalization", "pooled"))
        written = write_area_labels(
            scene,
            label_array,
            area,
            join_uri(run_dir, "labels", f"{stem}_refine_labels.tif"),
            join_uri(run_dir, "labels", f"{stem}_evaluate_labels.tif"),
            settings,
            area_uri=join_uri(run_dir, "labels", f"{stem}_area.tif"),
        )
        write_bytes(join_uri(run_dir, "area.geojson"), _json(area.polygons(scene)), settings)
        log(
            f"annotated area: {area.source}, {100 * written.fraction:.1f} % of the scene "
            f"({written.refine_pixels} labelled pixels); evaluating on the other {written.evaluate_pixels}"
        )

        def score_rest_with(model: ModelBundle, what: str, row: str) -> SceneScore:
            """One candidate on the rest of the scene (outside the area), said in one line."""
            score = evaluate_scene(
                _predictor(model, cfg, scene), scene_uri, written.evaluate_uri, settings, cfg.data.bands,
                progress=tenths(f"scoring {what} on {scene_uri}"),
            )  # fmt: skip
            log(f"{row}: " + ", ".join(f"{k} {score.metrics[k]:.4f}" for k in _columns(score)))
            return score

        before = score_rest_with(bundle, "the parent", "before refinement") if score_rest else None
        # the parent with BatchNorm re-estimated on the scene: a candidate of the verdict, scored
        # as its own row, and with --adapt-bn the start of the refinement
        from resseg_ray.inference.batchnorm import adapt_to_scene

        norm = _predictor(bundle, cfg, scene).scene_norm(scene, settings)
        adapted_bundle = ModelBundle(model=adapt_to_scene(bundle.model, scene, settings, norm), info=info)
        adapted = (
            score_rest_with(adapted_bundle, "the re-estimated BatchNorm", "BatchNorm re-estimated")
            if score_rest
            else None
        )
        adapted_bytes, _ = encode_bundle(
            adapted_bundle.model,
            norm_mean=info.norm_mean,
            norm_std=info.norm_std,
            band_names=info.band_names,
            class_names=info.class_names,
            tile_size=info.tile_size,
            extra={**info.extra, "source": "adapt_bn", "adapted_scene": scene_uri},
        )
        from_adapted = adapt_bn or cfg.train.refine_start == "adapted"
        start_bytes = adapted_bytes if from_adapted else parent_bytes
        log(f"refining {CANDIDATES['adapted' if from_adapted else 'parent']} (train.refine_start)")

        data_cfg = cfg.data.replace(normalization=normalization)
        rcfg = cfg.replace(
            data=data_cfg,
            model=cfg.model.replace(
                arch=info.architecture, pretrained=None, class_names=list(info.class_names)
            ),
            train=cfg.train.replace(dataset=join_uri(run_dir, "data")),
            run=cfg.run.replace(name=name),
            mlflow=cfg.mlflow.replace(alias=alias or "refined-" + stem.replace(".", "_")),
        )
        folds = cfg.train.folds
        if folds > 1:  # the k datasets of the cross-validation, then one of every block
            prepare_folds(rcfg, scene.uri, written, area.mask, settings)
        prepare_dataset(  # tiles wholly inside the annotated area (the area raster)
            [scene.uri], rcfg.train.dataset, every_block(rcfg) if folds > 1 else rcfg,
            labels=[written.refine_uri], settings=settings,
            regions=[written.area_uri] if written.area_uri else None,
        )  # fmt: skip
    parent_run = info.extra.get("mlflow_run_id")
    tags = {"resseg.refined_scene": given, "resseg.area": area.source, "resseg.parent_model": parent}
    if post is not None:
        tags["resseg.refined_post"] = post
    if parent_run:
        tags["resseg.parent_run_id"] = str(parent_run)
    start = StartFrom(
        bundle_bytes=start_bytes,
        norm_mean=list(info.norm_mean) if normalization == "pooled" else None,
        norm_std=list(info.norm_std) if normalization == "pooled" else None,
        parent_run_id=str(parent_run) if parent_run else None,
        dataset=str(info.extra["dataset"]) if info.extra.get("dataset") else None,
    )

    def train(c: Config, more_tags: dict[str, str] | None = None) -> TrainResult:
        return run_training(
            c, log, tags={**tags, **(more_tags or {})}, start_from=start, on_epoch=on_epoch, register=False
        )

    def score(candidate: ModelBundle, blocks: list[list[int]]) -> Confusion:
        predictor = _predictor(candidate, cfg, scene)
        return score_held_out(predictor, scene_uri, written.refine_uri, blocks, settings, cfg.data.bands)

    scores: dict[str, Confusion] = {}
    if folds > 1:
        cv = cross_validate(rcfg, scene.uri, settings, train, score, log)
        blocks, scores["refined"] = cv.blocks, cv.confusion
        log(
            f"refining on every annotated block for {cv.final_epochs} epochs (the median of the "
            f"epochs the {folds} folds chose: {', '.join(map(str, cv.epochs))})"
        )
        result = train(every_block(rcfg, cv.final_epochs))
    else:
        result = train(rcfg)
        blocks = held_out_blocks(rcfg.train.dataset, scene.uri, settings)
    refined = load_bundle_bytes(fetch_bundle_bytes(result.bundle_uri, settings), result.bundle_uri)
    candidates = {"parent": bundle, "adapted": adapted_bundle, "refined": refined}
    for key, candidate in candidates.items():
        if key not in scores:
            log(f"scoring {CANDIDATES[key]} on the annotated blocks kept out of training ...")
            scores[key] = score(candidate, blocks)
    verdict = decide(scores, len(blocks), cfg.train.min_gain, folds)
    log(verdict.line())
    version = None
    registry = rcfg.mlflow.registry_name(model_task(info.architecture))
    if verdict.ships and registry:
        version, _ = register_run_model(
            result.tracking_uri,
            result.mlflow_run_id,
            registry,
            rcfg.mlflow.alias,
            # cross-validated, the model shipped had no validation tiles: its figure (which the
            # alias follows) is the folds' pooled one
            {"heldout_f1": f"{verdict.f1['refined']:.6f}"}
            | ({"val_f1": f"{verdict.f1['refined']:.6f}"} if folds > 1 else {}),
        )
    after = score_rest_with(refined, "the refined model", "after refinement") if score_rest else None
    out = RefineResult(
        given,
        written,
        before,
        adapted,
        after,
        result.bundle_uri,
        result.mlflow_run_id,
        version,
        verdict,
        adapted_bytes,
        post,
    )
    _log_scores(result.tracking_uri, result.mlflow_run_id, out)
    return out


def _columns(score: SceneScore) -> tuple[str, ...]:
    """The metrics a refinement reports: a damage network's xView2 figures, else F1 and accuracy."""
    return ("score", "localization_f1", "damage_f1") if score.confusion.damage else ("f1", "accuracy")


def _check_inputs(cfg: Config, parent: str, arch: str, damage: bool, post: str | None) -> None:
    """A damage network refines on a pair, a building network on one scene."""
    if damage and post is None:
        raise ConfigError(
            f"--model {parent} is a damage network ({arch}): it refines on a pair, give --pre and --post "
            "(the scenes before and after the event)"
        )
    if not damage and post is not None:
        raise ConfigError(
            f"--model {parent} is a building network ({arch}): it refines on one scene (--scene); a pair "
            "(--pre/--post) refines a damage network (damage-prop<depth>)"
        )
    if post is not None and cfg.data.bands is not None:
        raise ConfigError(
            f"data.bands={cfg.data.bands} selects bands of one scene; a pair is refined on every band of "
            "both scenes (the damage network's): drop data.bands"
        )


def _stacked_pair(
    pre: str,
    post: str,
    footprints: str | None,
    labels: str | None,
    field: str,
    prefix: str,
    info: BundleInfo,
    settings: StorageSettings,
) -> tuple[str, str]:
    """Stack a pair (the post scene on the pre grid) as ``<prefix>_pair.tif`` and, from damage
    footprints, burn its damage raster as ``<prefix>_damage_labels.tif``: (stacked scene, labels)."""
    from resseg_ray.data.pairs import stack_pair
    from resseg_ray.geo.damage_labels import make_damage_raster
    from resseg_ray.geo.pairs import open_pair

    pair = open_pair(pre, post, settings, expected_bands=info.in_bands // 2)
    stacked = f"{prefix}_pair.tif"
    stack_pair(pair, stacked, settings)
    if footprints is not None:
        labels = f"{prefix}_damage_labels.tif"
        graded = read_footprints(footprints, settings, attribute=field)
        make_damage_raster(pair.pre, graded, field, labels, settings)
    assert labels is not None
    return stacked, labels


def _json(obj: dict) -> bytes:
    import json

    return json.dumps(obj).encode()


def _log_scores(tracking_uri: str, run_id: str, result: RefineResult) -> None:
    """Before/after metrics and the Table III markdown on the refinement's MLflow run."""
    from mlflow.entities import Metric

    from resseg_ray.train import tracking

    metrics = {"area_fraction": result.area.fraction}
    scored = [("before", result.before), ("after", result.after), ("bn_adapted", result.adapted)]
    for prefix, score in scored:
        if score is None:
            continue
        for k, v in score.metrics.items():
            metrics[f"rest_{prefix}_{k}"] = v
    c = tracking.client(tracking_uri)
    verdict = result.verdict
    if verdict is not None:
        for key in verdict.f1:
            metrics[f"heldout_{key}_f1"] = verdict.f1[key]
            metrics[f"heldout_{key}_accuracy"] = verdict.accuracy[key]
        metrics["heldout_pixels"] = verdict.pixels
        c.set_tag(run_id, "resseg.refine_kept", verdict.chosen)
        c.set_tag(run_id, "resseg.refine_verdict", verdict.line())
    c.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    c.log_text(run_id, result.table(), "table3.md")
