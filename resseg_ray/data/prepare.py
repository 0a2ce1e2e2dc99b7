"""Prepare scenes for training: labels, statistics, tiles, split and manifest, in one call.

Output layout under ``out`` (local directory or s3:// prefix)::

    labels/<scene stem>_labels.tif   uint8 0 ground / 1 building / 255 ignore, scene grid
    stats.json                       per-band mean/std per scene and pooled (training scenes)
    manifest.parquet                 one row per tile: scene, window, split, fractions
    dataset.json                     what was prepared (written last: the completion marker)

Per-scene work (label rasters, tiling) runs as Ray tasks when Ray is initialised, and the
statistics as a dask graph on Ray; without Ray everything runs in-process.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from resseg_ray.config import Config, DataSection, to_dict
from resseg_ray.data.split import SceneGivesNoTiles, Split, run_all, tile_and_split
from resseg_ray.data.tiling import SceneTiles, manifest_table
from resseg_ray.errors import InputDataError
from resseg_ray.geo.labels import (
    FootprintsMissScene,
    check_label_raster,
    make_label_raster,
    read_footprints,
)
from resseg_ray.geo.scene import SceneInfo, forget, open_scene
from resseg_ray.geo.stats import Statistics, compute_statistics
from resseg_ray.geo.storage import (
    StorageSettings,
    exists,
    join_uri,
    normalize_uri,
    read_bytes,
    remove_file,
    removed_on_failure,
    scene_stem,
    write_bytes,
)
from resseg_ray.progress import Progress

DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.parquet"
STATS_FILE = "stats.json"


@dataclass(frozen=True)
class PreparedScene:
    """One prepared scene: its raster, its label raster and how many tiles it gave."""

    uri: str
    label_uri: str
    role: str  # "train" (tiled) or "test" (labels only)
    width: int
    height: int
    crs: str
    tiles_train: int = 0
    tiles_val: int = 0
    dropped_nodata: int = 0
    dropped_border: int = 0
    dropped_outside: int = 0
    footprints: int | None = None
    val_blocks: list[list[int]] = field(default_factory=list)
    """The scene's validation blocks as ``[col, row, width, height]`` pixel windows (a split by
    blocks): every validation tile lies inside one, no training tile touches one."""


@dataclass(frozen=True)
class PreparedDataset:
    """What :func:`prepare_dataset` wrote."""

    root: str
    manifest_uri: str
    stats_uri: str
    dataset_uri: str
    scenes: list[PreparedScene]
    statistics: Statistics


def _label_task(
    scene: SceneInfo, footprints_uri: str | None, label_uri: str, settings: StorageSettings, num_classes: int
) -> tuple[SceneInfo, int | None, list[str]]:
    """Rasterize (or check) one scene's labels; returns warnings instead of emitting them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FootprintsMissScene)
        if footprints_uri is not None:
            fp = read_footprints(footprints_uri, settings)
            report = make_label_raster(scene, fp, label_uri, settings)
            forget(label_uri)
            hits: int | None = report.footprints
        else:
            hits = None
        labels = check_label_raster(scene, label_uri, settings, num_classes)
    return labels, hits, [str(w.message) for w in caught if issubclass(w.category, FootprintsMissScene)]


def _no_tiles_warning(info: SceneInfo, t: SceneTiles, dc: DataSection) -> str:
    if info.width < dc.tile_size or info.height < dc.tile_size:
        return (
            f"training scene {info.uri} ({info.width}x{info.height} px) gives no tile: it is smaller than "
            f"data.tile_size ({dc.tile_size}) and more than data.max_nodata_fraction "
            f"({dc.max_nodata_fraction}) of it is no data; lower data.tile_size or check its no-data mask"
        )
    return (
        f"training scene {info.uri} gives no tile: each of its {t.dropped_nodata} tiles has more no data "
        f"than data.max_nodata_fraction ({dc.max_nodata_fraction}); check its no-data value or mask"
    )


def _no_training_tiles(
    infos: list[SceneInfo], tiled: list[SceneTiles], dc: DataSection, split: Split, area: bool
) -> str:
    """What became of every tile when none is left to train on, and which option to change."""
    val = sum(len(t.rows) for t in tiled)
    border = sum(t.dropped_border for t in tiled)
    nodata = sum(t.dropped_nodata for t in tiled)
    outside = sum(t.dropped_outside for t in tiled)
    total = val + border + nodata + outside
    fates = []
    if val:
        fates.append(f"{val} lie in the validation {'blocks' if split.mode == 'blocks' else 'scenes'}")
    if border:
        fates.append(f"{border} straddle a validation block's edge")
    if nodata:
        fates.append(f"{nodata} have more no data than data.max_nodata_fraction ({dc.max_nodata_fraction})")
    if outside:
        fates.append(f"{outside} reach outside the annotated area")
    sizes = sorted({(i.width, i.height) for i in infos})
    size = f"{sizes[0][0]}x{sizes[0][1]} px" + (
        f" to {sizes[-1][0]}x{sizes[-1][1]} px" if len(sizes) > 1 else ""
    )
    if area:
        advice = f"annotate a larger area: a training tile is data.tile_size ({dc.tile_size} px) square"
    elif val + border > nodata:
        advice = f"lower data.split_block ({dc.split_block} px, >= data.tile_size {dc.tile_size})"
        advice += " or add scenes" if len(infos) < 2 else " or hold out whole scenes with data.split=scenes"
    else:
        advice = (
            f"lower data.tile_size ({dc.tile_size}) or raise data.max_nodata_fraction, "
            "or check the no-data mask"
        )
    where = "the annotated area" if area else f"{len(infos)} training scene(s) ({size})"
    return (
        f"no training tiles: of the {total} tiles of {where}, "
        + ", ".join(fates or ["none fit"])
        + f"; {advice}"
    )


def _no_validation_tiles(infos: list[SceneInfo], dc: DataSection, split: Split) -> str:
    if split.mode == "scenes":
        return (
            f"no validation tiles: holding out whole scenes needs at least two training scenes with tiles "
            f"({len(infos)} given); add scenes, use data.split=blocks, or data.val_fraction=0"
        )
    small = min(infos, key=lambda i: i.width * i.height)
    other = (
        "hold out whole scenes with data.split=scenes"
        if len(infos) >= 2
        else "add scenes, or train without validation (data.val_fraction=0)"
    )
    return (
        f"no validation tiles: no scene has two data.split_block ({dc.split_block} px) blocks with data "
        f"(the smallest is {small.width}x{small.height} px); lower data.split_block (>= data.tile_size "
        f"{dc.tile_size}), or {other}"
    )


def prepare_dataset(
    scenes: list[str],
    out: str,
    cfg: Config,
    footprints: list[str] | None = None,
    labels: list[str] | None = None,
    test_scenes: list[str] | None = None,
    test_footprints: list[str] | None = None,
    test_labels: list[str] | None = None,
    settings: StorageSettings | None = None,
    regions: list[str] | None = None,
    georeferenced: bool = True,
    fold: tuple[int, int] | None = None,
) -> PreparedDataset:
    """Prepare training ``scenes`` (tiled and split) and optional ``test_scenes`` (labels only).

    Labels come from ``footprints`` (one URI shared by all scenes, or one per scene) or
    from ready-made ``labels`` rasters (one per scene, on each scene's grid). ``regions``
    (one uint8 raster per training scene, on its grid) confine the tiles of each scene to
    its non-zero pixels: a refinement's annotated area; ``fold`` ``(k, i)`` then holds out fold
    ``i`` of ``k`` of the area's blocks (a refinement's cross-validation). Not
    ``georeferenced``: the scenes may be plain pixel grids without a CRS (xBD's PNG pairs), with
    ``labels`` on the same grids.
    """
    settings = settings or StorageSettings.resolve(cfg.storage)
    if not scenes:
        raise InputDataError("no training scenes given (--scenes)")
    out = normalize_uri(out)
    dc = cfg.data
    num_classes = len(cfg.model.class_names)  # labels 0..num_classes - 1 (2: ground, building)

    def resolve(uris: list[str], fps: list[str] | None, lbls: list[str] | None, what: str):
        infos = [
            open_scene(normalize_uri(u), settings, bands=dc.bands, band_names=dc.band_names,
                       georeferenced=georeferenced)
            for u in uris
        ]  # fmt: skip
        n_bands = {len(i.bands) for i in infos}
        if len(n_bands) > 1:
            raise InputDataError(
                f"{what} scenes have different band counts: "
                + ", ".join(f"{i.uri}: {len(i.bands)}" for i in infos)
                + "; choose the same bands for all with data.bands"
            )
        if fps and lbls:
            raise InputDataError(f"give {what} footprints or label rasters, not both")
        if not fps and not lbls:
            raise InputDataError(f"{what} scenes need --footprints (vector) or --labels (rasters)")
        jobs: list[tuple[SceneInfo, str | None, str, StorageSettings, int]] = []
        for k, info in enumerate(infos):
            if fps:
                if len(fps) not in (1, len(infos)):
                    raise InputDataError(
                        f"{len(fps)} footprint files for {len(infos)} {what} scenes: give one shared file "
                        "or one per scene"
                    )
                fp = normalize_uri(fps[0] if len(fps) == 1 else fps[k])
                label_uri = join_uri(out, "labels", f"{scene_stem(info.uri)}_labels.tif")
                jobs.append((info, fp, label_uri, settings, num_classes))
            else:
                assert lbls is not None
                if len(lbls) != len(infos):
                    raise InputDataError(f"{len(lbls)} label rasters for {len(infos)} {what} scenes")
                jobs.append((info, None, normalize_uri(lbls[k]), settings, num_classes))
        return infos, jobs

    train_infos, train_jobs = resolve(scenes, footprints, labels, "training")
    stems = [scene_stem(i.uri) for i in train_infos]
    test_infos, test_jobs = ([], [])
    if test_scenes:
        test_infos, test_jobs = resolve(test_scenes, test_footprints, test_labels, "test")
        stems += [scene_stem(i.uri) for i in test_infos]
    if len(set(stems)) != len(stems):
        raise InputDataError(f"scene file names must be unique (their label rasters share a folder): {stems}")
    expected = len(train_infos[0].bands)
    for info in test_infos:
        if len(info.bands) != expected:
            raise InputDataError(
                f"test scene {info.uri} has {len(info.bands)} bands, training scenes {expected}"
            )

    # label rasters this run writes go again if it fails: no half-prepared dataset is left
    # (unless one was complete here before: re-preparing replaces it file by file)
    written = [job[2] for job in train_jobs + test_jobs if job[1] is not None]
    keep = exists(join_uri(out, DATASET_FILE), settings)
    if keep:  # re-preparing: once a label raster is replaced the old description no longer holds;
        # without it a half-rebuilt dataset is refused (re-run prepare), never trained on
        remove_file(join_uri(out, DATASET_FILE), settings)
    with removed_on_failure([] if keep else written, settings), Progress("step", 3) as bar:
        label_results = run_all(_label_task, train_jobs + test_jobs, dc.loader_num_cpus)
        bar.step(f"label rasters of {len(label_results)} scenes")
        for _, _, msgs in label_results:
            for m in msgs:
                warnings.warn(m, FootprintsMissScene, stacklevel=2)
        train_labels = [r[0] for r in label_results[: len(train_jobs)]]
        test_label_infos = [r[0] for r in label_results[len(train_jobs) :]]

        stats = compute_statistics(train_infos, settings, block=dc.stats_block, num_cpus=dc.loader_num_cpus)
        bar.step(f"band statistics of {len(train_infos)} training scenes")

        region_infos: list[SceneInfo | None] = [None] * len(train_infos)
        if regions is not None:
            if len(regions) != len(train_infos):
                raise InputDataError(f"{len(regions)} region rasters for {len(train_infos)} training scenes")
            region_infos = [
                check_label_raster(s, normalize_uri(r), settings)
                for s, r in zip(train_infos, regions, strict=True)
            ]
        tiled, split = tile_and_split(
            train_infos, train_labels, region_infos, dc, settings, cfg.run.seed, num_classes, fold
        )
        rows = [r for t in tiled for r in t.rows]
        n_train = sum(r["split"] == "train" for r in rows)
        bar.step(f"{n_train} training and {len(rows) - n_train} validation tiles ({split.describe()})")
        for info, t in zip(train_infos, tiled, strict=True):
            if not t.rows and regions is None:
                warnings.warn(_no_tiles_warning(info, t, dc), SceneGivesNoTiles, stacklevel=2)
        if not n_train:
            raise InputDataError(_no_training_tiles(train_infos, tiled, dc, split, regions is not None))
        if dc.val_fraction > 0 and n_train == len(rows):
            raise InputDataError(_no_validation_tiles(train_infos, dc, split))
        buf = io.BytesIO()
        pq.write_table(manifest_table(rows), buf)
        manifest_bytes = buf.getvalue()

        prepared = []
        for (info, lab, res), t in zip(
            zip(train_infos, train_labels, label_results[: len(train_jobs)], strict=True), tiled, strict=True
        ):
            prepared.append(
                PreparedScene(
                    uri=info.uri,
                    label_uri=lab.uri,
                    role="train",
                    width=info.width,
                    height=info.height,
                    crs=info.crs,
                    tiles_train=sum(r["split"] == "train" for r in t.rows),
                    tiles_val=sum(r["split"] == "val" for r in t.rows),
                    dropped_nodata=t.dropped_nodata,
                    dropped_border=t.dropped_border,
                    dropped_outside=t.dropped_outside,
                    footprints=res[1],
                    val_blocks=[[j * b, i * b, b, b] for i, j in t.val_blocks for b in [split.block or 0]],
                )
            )
        for info, lab, res in zip(
            test_infos, test_label_infos, label_results[len(train_jobs) :], strict=True
        ):
            prepared.append(
                PreparedScene(info.uri, lab.uri, "test", info.width, info.height, info.crs, footprints=res[1])
            )

        manifest_uri = join_uri(out, MANIFEST_FILE)
        stats_uri = join_uri(out, STATS_FILE)
        dataset_uri = join_uri(out, DATASET_FILE)
        write_bytes(manifest_uri, manifest_bytes, settings)
        write_bytes(stats_uri, stats.to_json().encode(), settings)
        description = {
            "format": "resseg-dataset/1",
            "bands": list(train_infos[0].bands),
            "band_names": list(train_infos[0].band_names),
            "dtype": train_infos[0].dtype,
            "data": to_dict(dc),
            "split": {"mode": split.mode, "reason": split.reason, "block": split.block, "seed": cfg.run.seed},
            "manifest": MANIFEST_FILE,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "stats": STATS_FILE,
            "tiles": {
                "train": sum(p.tiles_train for p in prepared),
                "val": sum(p.tiles_val for p in prepared),
            },
            "scenes": [p.__dict__ for p in prepared],
        }
        write_bytes(dataset_uri, json.dumps(description, indent=2).encode(), settings)
        return PreparedDataset(out, manifest_uri, stats_uri, dataset_uri, prepared, stats)


@dataclass(frozen=True)
class DatasetDescription:
    """A prepared dataset as read back from its ``dataset.json``."""

    root: str
    raw: dict
    statistics: Statistics

    @property
    def manifest_uri(self) -> str:
        """URI of the tile manifest."""
        return join_uri(self.root, self.raw["manifest"])

    @property
    def band_names(self) -> list[str]:
        """Names of the model input bands."""
        return list(self.raw["band_names"])

    @property
    def bands(self) -> list[int]:
        """1-based band indexes read from every scene."""
        return list(self.raw["bands"])

    def scenes(self, role: str) -> list[dict]:
        """Scene records of one role ("train" or "test")."""
        return [s for s in self.raw["scenes"] if s["role"] == role]


def load_dataset(root: str, settings: StorageSettings) -> DatasetDescription:
    """Read a prepared dataset's description and statistics; a clear error when incomplete."""
    root = normalize_uri(root)
    try:
        raw = json.loads(read_bytes(join_uri(root, DATASET_FILE), settings))
    except InputDataError as exc:
        raise InputDataError(
            f"{root} is not a prepared dataset ({exc}); run jobs/prepare.py --out {root} first"
        ) from None
    if raw.get("format") != "resseg-dataset/1":
        raise InputDataError(f"{join_uri(root, DATASET_FILE)} is not a resseg dataset description")
    stats = Statistics.from_json(read_bytes(join_uri(root, raw["stats"]), settings).decode())
    return DatasetDescription(root=root, raw=raw, statistics=stats)
