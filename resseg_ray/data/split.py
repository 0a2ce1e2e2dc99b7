"""How ``prepare`` holds out validation: blocks of each scene, whole scenes, or ``auto``.

:func:`tile_and_split` tiles every training scene (:func:`~resseg_ray.data.tiling.tile_scene`,
as Ray tasks when Ray is up) and holds out validation as ``data.split`` says; ``auto`` picks
blocks, whole scenes for chip datasets, or smaller blocks for a single small scene.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from resseg_ray.config import DataSection
from resseg_ray.data.tiling import SceneTiles, choose_validation_scenes, name_seed, tile_scene
from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import SceneInfo
from resseg_ray.geo.storage import StorageSettings, scene_stem

__all__ = ["SceneGivesNoTiles", "Split", "run_all", "smaller_blocks", "tile_and_split"]


def run_all(fn, items: list[tuple], num_cpus: float = 1.0) -> list:
    """Apply ``fn(*item)`` to every item: as Ray tasks reserving ``num_cpus`` each when Ray is
    up, else in order."""
    import ray

    if not ray.is_initialized() or len(items) < 2:
        return [fn(*item) for item in items]
    remote = ray.remote(num_cpus=num_cpus, max_retries=1)(fn)
    return ray.get([remote.remote(*item) for item in items])


def _tile_task(
    i: int,
    scene: SceneInfo,
    labels: SceneInfo,
    cfg,
    settings: StorageSettings,
    region: SceneInfo | None,
    seed: int,
    num_classes: int,
    fold: tuple[int, int] | None = None,
):
    return tile_scene(i, scene, labels, cfg, settings, region, seed, num_classes, fold)


class SceneGivesNoTiles(UserWarning):
    """A training scene from which no tile could be cut (too small, or mostly no data)."""


@dataclass(frozen=True)
class Split:
    """How validation was held out: ``mode`` (``blocks`` or ``scenes``) and why."""

    mode: str
    reason: str
    held_out: tuple[str, ...] = ()
    """With ``scenes``: the scenes held out whole."""
    block: int | None = None
    """With ``blocks``: the side of the validation blocks (``data.split_block``, or smaller
    when ``auto`` shrank them to fit a single scene)."""

    def describe(self) -> str:
        """A few words for the progress line."""
        if self.mode == "scenes":
            return f"{len(self.held_out)} scene(s) held out whole, {self.reason}"
        return f"validation blocks, {self.reason}"


def smaller_blocks(dc: DataSection) -> list[int]:
    """Validation block sides ``auto`` tries on a single scene too small for ``split_block``:
    ``tile_size + k * stride`` below ``split_block``, largest first, down to ``tile_size``
    (such a block always holds a whole validation tile on the tile grid)."""
    k = (dc.split_block - dc.tile_size) // dc.stride
    sizes = [dc.tile_size + i * dc.stride for i in range(k, -1, -1)]
    return [b for b in sizes if b < dc.split_block]


def _split_problem(
    infos: list[SceneInfo], tiled: list[SceneTiles], dc: DataSection, block: int
) -> str | None:
    """Why the block split does not work for these scenes, or None when it does: a scene left
    without a training tile, or (with validation asked for) no validation tile at all."""
    starved = [info for info, t in zip(infos, tiled, strict=True) if t.val_blocks and not t.train_tiles]
    if starved:
        smallest = min(starved, key=lambda s: s.width * s.height)
        return (
            f"{block} px validation blocks left {len(starved)} of "
            f"{len(infos)} scenes (e.g. {smallest.width}x{smallest.height} px) without a training tile"
        )
    n_val = sum(len(t.rows) - t.train_tiles for t in tiled)
    if dc.val_fraction > 0 and n_val == 0 and any(t.train_tiles for t in tiled):
        largest = max(infos, key=lambda s: s.width * s.height)
        return (
            f"no scene holds a whole {block} px validation block with data "
            f"(the largest is {largest.width}x{largest.height} px)"
        )
    return None


def tile_and_split(
    infos: list[SceneInfo],
    labels: list[SceneInfo],
    regions: list[SceneInfo | None],
    dc: DataSection,
    settings: StorageSettings,
    seed: int,
    num_classes: int = 2,
    fold: tuple[int, int] | None = None,
) -> tuple[list[SceneTiles], Split]:
    """Tile every training scene and hold out validation as ``dc.split`` says.

    ``auto`` tries blocks; when they leave a scene without a training tile or the dataset
    without a validation tile (chips smaller than about two blocks), it holds out whole
    scenes, or, with a single scene, tries smaller blocks (down to ``tile_size``) and says
    exactly why when even those do not fit."""

    def tile(cfg: DataSection) -> list[SceneTiles]:
        items = [
            (i, s, lab, cfg, settings, reg, seed, num_classes, fold)
            for i, (s, lab, reg) in enumerate(zip(infos, labels, regions, strict=True))
        ]
        return run_all(_tile_task, items, dc.loader_num_cpus)

    tiled = tile(dc)  # one pass; the scene split reuses it
    if any(r is not None for r in regions):  # a refinement's one annotated area
        where = "inside the annotated area" + (f", fold {fold[1] + 1} of {fold[0]}" if fold else "")
        return tiled, Split("blocks", where, block=dc.split_block)
    reason = f"data.split={dc.split}"
    if dc.split in ("auto", "blocks"):
        problem = _split_problem(infos, tiled, dc, dc.split_block)
        with_data = sum(t.valid_pixels > 0 for t in tiled)
        if dc.split == "blocks" or problem is None:
            if problem and with_data >= 2:
                warnings.warn(
                    f"{reason}: {problem}; data.split=scenes (or auto) holds out whole scenes instead",
                    SceneGivesNoTiles,
                    stacklevel=3,
                )
            return tiled, Split("blocks", reason + (f": {problem}" if problem else ""), block=dc.split_block)
        reason += f": {problem}"
        if with_data < 2:
            return _shrink_blocks(infos, tiled, dc, tile, reason)
    # seeded by the file names, not the paths: the same chips split alike wherever they lie
    seed = name_seed(seed, sorted(scene_stem(i.uri) for i in infos))
    held = choose_validation_scenes([t.valid_pixels for t in tiled], dc.val_fraction, seed)
    tiled = [t.unsplit("val" if i in held else "train") for i, t in enumerate(tiled)]
    return tiled, Split("scenes", reason, tuple(infos[i].uri for i in sorted(held)))


def _shrink_blocks(
    infos: list[SceneInfo],
    tiled: list[SceneTiles],
    dc: DataSection,
    tile: Callable[[DataSection], list[SceneTiles]],
    reason: str,
) -> tuple[list[SceneTiles], Split]:
    """``auto`` on a single scene the configured blocks do not fit: the largest smaller block
    that leaves it training and validation tiles, else an error that says why."""
    tried = smaller_blocks(dc)
    for block in tried:
        retiled = tile(dc.replace(split_block=block))
        if _split_problem(infos, retiled, dc, block) is None and any(t.train_tiles for t in retiled):
            return retiled, Split("blocks", f"{reason}; {block} px blocks instead", block=block)
    scene = next((i for i, t in zip(infos, tiled, strict=True) if t.valid_pixels), infos[0])
    sizes = ", ".join(str(b) for b in [dc.split_block, *tried])
    raise InputDataError(
        f"no validation tiles: {scene.uri} ({scene.width}x{scene.height} px) is the only training "
        f"scene with data, and validation blocks of {sizes} px (data.split_block down to "
        f"data.tile_size) each leave it no {dc.tile_size} px training tile beside a whole validation "
        "tile; add scenes, lower data.tile_size, or train without validation (data.val_fraction=0)"
    )
