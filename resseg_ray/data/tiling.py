"""Training tiles: a regular grid of windows per scene, a spatially disjoint split, a manifest.

Tiles of ``tile_size`` px start every ``stride`` px (paper: 364 and 120) and may hang over
the scene's right/bottom edge (those pixels read as no data); a scene smaller than a tile
gives one tile centred on it and padded with no data, judged by the no data inside the
scene. The validation area is made of whole square blocks of ``split_block`` px, drawn at
random (seeded) until they hold ``val_fraction`` of the scene's valid pixels; a training
tile lies entirely outside the validation blocks and a validation tile entirely inside
them, so no training tile overlaps a validation tile. Tiles that straddle the border, or
have more no data than allowed, are dropped; with a ``region`` (a refinement's annotated
area) only tiles and validation blocks wholly inside it are kept. Valid and building
fractions come from an integral image of per-cell counts.

Datasets of many small scenes (chips: SpaceNet's 650 or 900 px, xBD's 1024 px) hold out whole
scenes instead (:func:`choose_validation_scenes`), as ``data.split: scenes`` or ``auto`` chooses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from resseg_ray.config import DataSection
from resseg_ray.errors import InputDataError
from resseg_ray.geo.labels import BUILDING
from resseg_ray.geo.scene import SceneInfo, read_window
from resseg_ray.geo.storage import StorageSettings, scene_stem

MANIFEST_SCHEMA = pa.schema(
    [
        ("tile_id", pa.string()),
        ("scene_id", pa.int32()),
        ("scene_uri", pa.string()),
        ("label_uri", pa.string()),
        ("col_off", pa.int32()),
        ("row_off", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("split", pa.string()),
        ("valid_fraction", pa.float32()),
        ("building_fraction", pa.float32()),
    ]
)


@dataclass(frozen=True)
class SceneTiles:
    """The tiles of one scene and what was dropped."""

    rows: list[dict]
    dropped_nodata: int
    straddling: list[dict]
    """Tiles across a validation block's edge: dropped by the block split, kept by
    :meth:`unsplit` (so a split by scenes needs no second pass over the rasters)."""
    val_blocks: list[tuple[int, int]]
    dropped_outside: int = 0
    valid_pixels: int = 0
    """Labelled valid pixels of the scene (what a split by scenes weighs it by)."""

    @property
    def dropped_border(self) -> int:
        """How many tiles the block split dropped for straddling a block's edge."""
        return len(self.straddling)

    @property
    def train_tiles(self) -> int:
        """How many tiles are for training."""
        return sum(r["split"] == "train" for r in self.rows)

    def unsplit(self, split: str = "train") -> SceneTiles:
        """Every tile of the scene, in grid order, for ``split`` (``val``: the scene held out
        whole), without validation blocks."""
        rows = sorted(self.rows + self.straddling, key=lambda r: r["tile_id"])
        return dataclasses.replace(
            self, rows=[{**r, "split": split} for r in rows], straddling=[], val_blocks=[]
        )


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Tile start offsets along one axis: every ``stride`` px until the axis is covered."""
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / stride) + 1
    return [i * stride for i in range(n)]


def _cell_counts(
    scene: SceneInfo,
    labels: SceneInfo,
    settings: StorageSettings,
    cell: int,
    strip_cells: int = 64,
    region: SceneInfo | None = None,
    num_classes: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-cell counts of valid pixels, of building pixels (any class above 0 of
    ``num_classes``, over valid pixels) and, with a ``region`` raster, of pixels inside the
    region (non-zero)."""
    ch, cw = math.ceil(scene.height / cell), math.ceil(scene.width / cell)
    valid_n = np.zeros((ch, cw), np.int32)
    build_n = np.zeros((ch, cw), np.int32)
    inside_n = None if region is None else np.zeros((ch, cw), np.int32)
    strip = cell * strip_cells
    for r in range(0, ch * cell, strip):
        h = min(strip, ch * cell - r)
        _, valid = read_window(scene, settings, 0, r, cw * cell, h)
        lab, lvalid = read_window(labels, settings, 0, r, cw * cell, h)
        bad = np.setdiff1d(np.unique(lab[0][lvalid]), (*range(num_classes), 255))
        if bad.size:
            what = "0 ground, 1 building" if num_classes == 2 else f"a class 0..{num_classes - 1}"
            raise InputDataError(
                f"label raster {labels.uri} holds values {bad[:5].tolist()}; labels must be {what} "
                "or 255 ignore"
            )
        ok = valid & lvalid & (lab[0] != 255)
        b = ok & (lab[0] >= BUILDING)
        rows = slice(r // cell, (r + h) // cell)
        valid_n[rows] = ok.reshape(h // cell, cell, cw, cell).sum(axis=(1, 3))
        build_n[rows] = b.reshape(h // cell, cell, cw, cell).sum(axis=(1, 3))
        if region is not None and inside_n is not None:
            reg, rvalid = read_window(region, settings, 0, r, cw * cell, h)
            inside = rvalid & (reg[0] != 0)
            inside_n[rows] = inside.reshape(h // cell, cell, cw, cell).sum(axis=(1, 3))
    return valid_n, build_n, inside_n


def _integral(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + 1, a.shape[1] + 1), np.int64)
    out[1:, 1:] = a.cumsum(0).cumsum(1)
    return out


def _box_sum(ii: np.ndarray, r0: int, c0: int, r1: int, c1: int) -> int:
    r1, c1 = min(r1, ii.shape[0] - 1), min(c1, ii.shape[1] - 1)
    return int(ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0])


def _block_sums(ii: np.ndarray, bc: int, nby: int, nbx: int) -> np.ndarray:
    """Per-block totals (blocks of ``bc`` x ``bc`` cells) from a cell integral image."""
    return np.array(
        [[_box_sum(ii, i * bc, j * bc, (i + 1) * bc, (j + 1) * bc) for j in range(nbx)] for i in range(nby)]
    )


def choose_validation_blocks(
    valid_per_block: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    eligible: np.ndarray | None = None,
    max_blocks: int | None = None,
) -> np.ndarray:
    """Boolean map of the blocks held out for validation.

    A contiguous region grown from a random block through random 4-neighbours (few borders,
    so few tiles are lost to the split) until it holds ``fraction`` of the valid pixels; a
    last block that would overshoot the target by more than it undershoots is not taken.
    Only ``eligible`` blocks (default: all) with valid pixels are chosen, at most
    ``max_blocks``, and at least one block with valid pixels is left to train on.
    """
    chosen = np.zeros(valid_per_block.shape, bool)
    total = int(valid_per_block.sum())
    usable = valid_per_block > 0
    n_with_data = int(usable.sum())
    if eligible is not None:
        usable &= eligible
    candidates = np.flatnonzero(usable.ravel())
    if fraction <= 0 or total == 0 or len(candidates) == 0 or n_with_data < 2:
        return chosen
    target = fraction * total
    nby, nbx = valid_per_block.shape
    start = int(rng.choice(candidates))
    chosen.flat[start] = True
    acc = int(valid_per_block.flat[start])
    most = min(len(candidates), n_with_data - 1, max_blocks if max_blocks is not None else len(candidates))
    while acc < target and chosen.sum() < most:
        frontier = set()
        for i, j in zip(*np.nonzero(chosen), strict=True):
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                a, b = i + di, j + dj
                if 0 <= a < nby and 0 <= b < nbx and not chosen[a, b] and usable[a, b]:
                    frontier.add((int(a), int(b)))
        if not frontier:
            frontier = {divmod(int(k), nbx) for k in candidates if not chosen.flat[k]}
        a, b = sorted(frontier)[int(rng.integers(len(frontier)))]
        gain = int(valid_per_block[a, b])
        if acc + gain - target > target - acc:
            break
        chosen[a, b] = True
        acc += gain
    return chosen


def fold_blocks(
    eligible: np.ndarray, buildings: np.ndarray, folds: int, fold: int, rng: np.random.Generator
) -> np.ndarray:
    """Boolean map of the blocks of fold ``fold`` (0-based) of ``folds``: the ``eligible``
    blocks dealt out in turn, those with most building pixels (``buildings``, per block) first,
    equal ones in a seeded order, so every fold holds its share of the blocks with buildings and
    each block is in exactly one fold. The same ``rng`` state gives the same folds."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} of {folds}")
    idx = rng.permutation(np.flatnonzero(eligible.ravel()))
    idx = idx[np.argsort(-buildings.ravel()[idx], kind="stable")]
    chosen = np.zeros(eligible.shape, bool)
    chosen.flat[idx[fold::folds]] = True
    return chosen


def name_seed(seed: int, names: list[str]) -> int:
    """A split's random seed from ``run.seed`` and file names (never paths: the same files split
    alike in any folder or clone)."""
    key = f"{seed}:" + "\n".join(names)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def tile_scene(
    scene_id: int,
    scene: SceneInfo,
    labels: SceneInfo,
    cfg: DataSection,
    settings: StorageSettings,
    region: SceneInfo | None = None,
    seed: int = 0,
    num_classes: int = 2,
    fold: tuple[int, int] | None = None,
) -> SceneTiles:
    """Cut one scene into tiles, split them spatially and measure their content; with a
    ``region`` raster on the scene grid, keep only tiles wholly inside its non-zero pixels.
    ``fold`` ``(k, i)``: the validation blocks are fold ``i`` of ``k`` of the blocks that can
    be held out whole (:func:`fold_blocks`; a refinement's cross-validation), not
    ``data.val_fraction`` of them.
    The validation blocks are drawn from ``seed`` (``run.seed``) and the scene's file name, not
    its path: a dataset prepared in another folder or clone splits alike. Labels are classes
    ``0..num_classes - 1`` (0 ground, any other a building) or 255."""
    cell = math.gcd(math.gcd(cfg.tile_size, cfg.stride), cfg.split_block)
    valid_n, build_n, inside_n = _cell_counts(
        scene, labels, settings, cell, region=region, num_classes=num_classes
    )
    xs = tile_origins(scene.width, cfg.tile_size, cfg.stride)
    ys = tile_origins(scene.height, cfg.tile_size, cfg.stride)
    # Pad the cell grid so tiles hanging over the edge are covered (as no data).
    span_h = (ys[-1] + cfg.tile_size) // cell + 1
    span_w = (xs[-1] + cfg.tile_size) // cell + 1
    pad = lambda a: np.pad(a, ((0, max(0, span_h - a.shape[0])), (0, max(0, span_w - a.shape[1]))))  # noqa: E731
    valid_n, build_n = pad(valid_n), pad(build_n)
    ii_valid, ii_build = _integral(valid_n), _integral(build_n)
    ii_inside = None if inside_n is None else _integral(pad(inside_n))

    bc = cfg.split_block // cell  # cells per block side
    nby, nbx = math.ceil(valid_n.shape[0] / bc), math.ceil(valid_n.shape[1] / bc)
    per_block = _block_sums(ii_valid, bc, nby, nbx)
    seed = name_seed(seed, [scene_stem(scene.uri)])
    # Only blocks wholly inside the scene can hold whole validation tiles.
    bi, bj = np.meshgrid(np.arange(nby), np.arange(nbx), indexing="ij")
    complete = ((bi + 1) * cfg.split_block <= scene.height) & ((bj + 1) * cfg.split_block <= scene.width)
    # ... and only blocks valid enough to hold a tile that passes max_nodata_fraction, and
    # (with a region) wholly inside the region
    dense = per_block >= (1.0 - cfg.max_nodata_fraction) * cfg.split_block**2
    if ii_inside is not None:
        dense &= _block_sums(ii_inside, bc, nby, nbx) == cfg.split_block**2
    eligible, most = complete & dense, None
    rng = np.random.default_rng(seed)
    building_blocks = _block_sums(ii_build, bc, nby, nbx)
    if fold is not None:
        val_blocks = fold_blocks(eligible, building_blocks, *fold, rng)
    else:
        if ii_inside is not None:
            # a refinement's area: its held-out blocks are where its verdict compares the models,
            # so they hold buildings (a block of ground alone scores every model alike), and at
            # least one block with buildings is left to train on
            with_buildings = eligible & (building_blocks > 0)
            if int(with_buildings.sum()) >= 2:
                eligible, most = with_buildings, int(with_buildings.sum()) - 1
        val_blocks = choose_validation_blocks(per_block, cfg.val_fraction, rng, eligible, most)
    # Validation membership per cell, and its integral image, to test whole tiles at once.
    val_cells = np.kron(val_blocks, np.ones((bc, bc), np.int32))[: valid_n.shape[0], : valid_n.shape[1]]
    ii_val = _integral(val_cells.astype(np.int32))

    tc = cfg.tile_size // cell
    area_cells = tc * tc
    area_px = cfg.tile_size * cfg.tile_size
    # a scene narrower (or lower) than a tile gives one tile across, padded as no data: that
    # padding is not the scene's no data, so the no-data test counts only the scene's extent
    extent_px = min(cfg.tile_size, scene.width) * min(cfg.tile_size, scene.height)
    # ... and such a tile is centred on the scene, so its centre crop (validation) and the
    # crops the augmentation draws around the centre hold the scene, not the padding
    ox = -((cfg.tile_size - scene.width) // 2) if scene.width < cfg.tile_size else 0
    oy = -((cfg.tile_size - scene.height) // 2) if scene.height < cfg.tile_size else 0
    rows: list[dict] = []
    straddling: list[dict] = []
    dropped_nodata = dropped_outside = 0
    for y in ys:
        for x in xs:
            r0, c0 = y // cell, x // cell
            if ii_inside is not None and _box_sum(ii_inside, r0, c0, r0 + tc, c0 + tc) < area_px:
                dropped_outside += 1
                continue
            n_valid = _box_sum(ii_valid, r0, c0, r0 + tc, c0 + tc)
            valid_fraction = n_valid / area_px
            if 1.0 - n_valid / extent_px > cfg.max_nodata_fraction or n_valid == 0:
                dropped_nodata += 1
                continue
            n_val = _box_sum(ii_val, r0, c0, r0 + tc, c0 + tc)
            split = "train" if n_val == 0 else "val" if n_val == area_cells else "straddling"
            n_build = _box_sum(ii_build, r0, c0, r0 + tc, c0 + tc)
            (straddling if split == "straddling" else rows).append(
                {
                    "tile_id": f"{scene_id:04d}_{y:06d}_{x:06d}",
                    "scene_id": scene_id,
                    "scene_uri": scene.uri,
                    "label_uri": labels.uri,
                    "col_off": x + ox,
                    "row_off": y + oy,
                    "width": cfg.tile_size,
                    "height": cfg.tile_size,
                    "split": split,
                    "valid_fraction": valid_fraction,
                    "building_fraction": n_build / n_valid,
                }
            )
    blocks = [(int(i), int(j)) for i, j in zip(*np.nonzero(val_blocks), strict=True)]
    return SceneTiles(rows, dropped_nodata, straddling, blocks, dropped_outside, int(valid_n.sum()))


def choose_validation_scenes(valid_pixels: list[int], fraction: float, seed: int) -> set[int]:
    """Indexes of the scenes held out whole for validation (``data.split: scenes``): scenes
    drawn in a seeded random order until they hold ``fraction`` of the valid pixels, a last
    scene that would overshoot the target by more than it undershoots is not taken, at
    least one scene with pixels is held out and at least one is left to train on."""
    candidates = [i for i, n in enumerate(valid_pixels) if n > 0]
    if fraction <= 0 or len(candidates) < 2:
        return set()
    target = fraction * sum(valid_pixels)
    chosen: set[int] = set()
    acc = 0
    for i in np.random.default_rng(seed).permutation(candidates):
        i = int(i)
        if len(chosen) == len(candidates) - 1:
            break
        gain = valid_pixels[i]
        if chosen and acc + gain - target > target - acc:
            continue  # a smaller scene later in the order may fit better
        chosen.add(i)
        acc += gain
        if acc >= target:
            break
    return chosen


def manifest_table(rows: list[dict]) -> pa.Table:
    """The manifest as an Arrow table with the fixed schema."""
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
