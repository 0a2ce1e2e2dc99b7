"""Tiles, the spatial split and the manifest fractions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resseg_ray.config import DataSection
from resseg_ray.data.tiling import (
    choose_validation_blocks,
    choose_validation_scenes,
    fold_blocks,
    manifest_table,
    tile_origins,
    tile_scene,
)
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from tests.rasters import write_tif

LOCAL = StorageSettings()
CFG = DataSection(
    tile_size=40, stride=12, crop_size=32, split_block=80, val_fraction=0.2, max_nodata_fraction=0.5
)


def _scene(tmp_path, h=300, w=420, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 1000, (2, h, w)).astype(np.uint16)
    data[:, : h // 3, : w // 4] = 0  # a no-data corner
    labels = (rng.random((1, h, w)) < 0.3).astype(np.uint8)
    labels[:, data[0] == 0] = 255
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = open_scene(write_tif(tmp_path / "s.tif", data, nodata=0), LOCAL)
    lab = open_scene(write_tif(tmp_path / "l.tif", labels, nodata=255), LOCAL, bands=[1])
    return s, lab, data, labels[0]


def test_tile_origins_cover_the_axis() -> None:
    assert tile_origins(364, 364, 120) == [0]
    assert tile_origins(100, 364, 120) == [0]
    assert tile_origins(1000, 364, 120) == [0, 120, 240, 360, 480, 600, 720]  # 720 + 364 >= 1000
    for n in (365, 485, 999, 1234):
        o = tile_origins(n, 364, 120)
        assert o[-1] + 364 >= n and o[-2] + 364 < n


def test_split_is_spatially_disjoint_and_fractions_are_exact(tmp_path) -> None:
    scene, labels, data, lab = _scene(tmp_path)
    tiles = tile_scene(0, scene, labels, CFG, LOCAL)
    rows = tiles.rows
    train = np.zeros(lab.shape, bool)
    val = np.zeros(lab.shape, bool)
    for r in rows:
        target = train if r["split"] == "train" else val
        target[r["row_off"] : r["row_off"] + 40, r["col_off"] : r["col_off"] + 40] = True
    assert train.any() and val.any()
    assert not (train & val).any(), "a pixel lies in both a training and a validation tile"
    valid = data[0] != 0
    # Validation holds about val_fraction of the covered valid area (whole blocks; coarse).
    share = (val & valid).sum() / ((train | val) & valid).sum()
    assert 0.05 < share < 0.4
    for r in rows[:: max(1, len(rows) // 25)]:
        win = (slice(r["row_off"], r["row_off"] + 40), slice(r["col_off"], r["col_off"] + 40))
        v = np.zeros((40, 40), bool)
        part = valid[win]
        v[: part.shape[0], : part.shape[1]] = part
        assert r["valid_fraction"] == pytest.approx(v.sum() / 1600)
        assert r["building_fraction"] == pytest.approx((lab[win] == 1).sum() / part.sum())
        assert r["valid_fraction"] >= 0.5
    assert tiles.dropped_nodata > 0
    assert manifest_table(rows).num_rows == len(rows)


def test_split_is_seeded(tmp_path) -> None:
    scene, labels, *_ = _scene(tmp_path)
    a = tile_scene(0, scene, labels, CFG, LOCAL)
    b = tile_scene(0, scene, labels, CFG, LOCAL)
    assert a.val_blocks == b.val_blocks and a.rows == b.rows
    # the seed matters (the scene's grid has few candidate regions, so one other seed can
    # coincide)
    others = [tile_scene(0, scene, labels, CFG, LOCAL, seed=s) for s in range(1, 6)]
    assert any(o.val_blocks != a.val_blocks for o in others)
    # the same file in another folder (another clone, another user) splits alike: the draw
    # mixes in the file name, not the path
    elsewhere, *_ = _scene(tmp_path / "elsewhere" / "deeper")
    for s in range(6):
        here = tile_scene(0, scene, labels, CFG, LOCAL, seed=s)
        there = tile_scene(0, elsewhere, labels, CFG, LOCAL, seed=s)
        assert here.val_blocks == there.val_blocks
        strip = lambda rows: [{k: v for k, v in r.items() if k != "scene_uri"} for r in rows]  # noqa: E731
        assert strip(here.rows) == strip(there.rows)


def test_validation_blocks_are_contiguous_and_leave_training_area() -> None:
    rng = np.random.default_rng(0)
    per_block = np.full((6, 6), 100)
    chosen = choose_validation_blocks(per_block, 0.2, rng)
    assert chosen.sum() == 7  # 7/36 = 19.4 % is closer to 20 % than 8/36
    assert not choose_validation_blocks(np.array([[5, 0]]), 0.5, rng).any()  # one usable block: all train
    assert not choose_validation_blocks(per_block, 0.0, rng).any()
    # contiguity: every chosen block has a chosen 4-neighbour
    ys, xs = np.nonzero(chosen)
    for y, x in zip(ys, xs, strict=True):
        assert any(
            0 <= y + dy < 6 and 0 <= x + dx < 6 and chosen[y + dy, x + dx]
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))
        )


def test_a_refinements_held_out_blocks_hold_buildings(tmp_path) -> None:
    """With a region (a refinement's annotated area), the validation blocks are drawn among the
    blocks with building pixels, and one such block is left to train on; with fewer than two
    such blocks, among all blocks as before. Each seed of a ground-mostly area: never a
    held-out block of ground alone."""
    h, w = 240, 400  # 3 x 5 blocks of 80 px, all inside the region
    data = np.full((2, h, w), 500, np.uint16)
    region_arr = np.ones((1, h, w), np.uint8)
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = open_scene(write_tif(tmp_path / "s.tif", data, nodata=0), LOCAL)
    region = open_scene(write_tif(tmp_path / "r.tif", region_arr), LOCAL, bands=[1])

    def blocks_with(buildings: list[tuple[int, int]], seed: int) -> tuple[set, set]:
        lab = np.zeros((1, h, w), np.uint8)
        for i, j in buildings:  # a small roof in the middle of block (i, j)
            lab[0, i * 80 + 30 : i * 80 + 50, j * 80 + 30 : j * 80 + 50] = 1
        labels = open_scene(write_tif(tmp_path / f"l{seed}.tif", lab, nodata=255), LOCAL, bands=[1])
        tiles = tile_scene(0, s, labels, CFG, LOCAL, region=region, seed=seed)
        return set(tiles.val_blocks), {(r["row_off"] // 80, r["col_off"] // 80) for r in tiles.rows
                                       if r["split"] == "train" and r["building_fraction"] > 0}  # fmt: skip

    roofs = [(0, 4), (2, 0)]  # two blocks of 15 with buildings
    for seed in range(8):
        held, _ = blocks_with(roofs, seed)
        assert len(held) == 1 and held <= set(roofs), (seed, held)
    # the other block with buildings trains
    held, trained = blocks_with(roofs, 0)
    assert trained and not trained & held
    # one block with buildings: the blocks are drawn among all as before (the verdict then says
    # that its held-out blocks hold no building, or the training has none)
    held, _ = blocks_with([(1, 2)], 0)
    assert len(held) == 3  # 20 % of the 15 blocks


def test_folds_deal_every_block_once_and_share_the_blocks_with_buildings() -> None:
    eligible = np.ones((4, 5), bool)
    eligible[0, 0] = eligible[3, 4] = False  # e.g. outside the annotated area
    buildings = np.zeros((4, 5), int)
    buildings[1, 1], buildings[1, 3], buildings[2, 2], buildings[3, 0] = 900, 400, 400, 50
    for k in (2, 3, 5):
        folds = [fold_blocks(eligible, buildings, k, i, np.random.default_rng(7)) for i in range(k)]
        assert (sum(f.astype(int) for f in folds) == eligible).all()  # a partition of the eligible
        assert max(f.sum() for f in folds) - min(f.sum() for f in folds) <= 1
        with_buildings = [int((f & (buildings > 0)).sum()) for f in folds]
        assert max(with_buildings) - min(with_buildings) <= 1, with_buildings  # 4 roofs dealt out
    again = fold_blocks(eligible, buildings, 3, 1, np.random.default_rng(7))
    assert (again == fold_blocks(eligible, buildings, 3, 1, np.random.default_rng(7))).all()
    others = [fold_blocks(eligible, buildings, 3, 1, np.random.default_rng(s)) for s in range(8)]
    assert any((o != again).any() for o in others)  # the seed places the equal blocks
    with pytest.raises(ValueError):
        fold_blocks(eligible, buildings, 3, 3, np.random.default_rng(0))


def test_a_refinements_folds_hold_out_each_block_once_and_train_around_it(tmp_path) -> None:
    """tile_scene with fold (k, i): fold i's blocks are its validation blocks; over the k folds
    every block of the region is held out once, and no training tile touches its fold."""
    h, w = 240, 400
    data = np.full((2, h, w), 500, np.uint16)
    lab = np.zeros((1, h, w), np.uint8)
    lab[0, 30:50, 30:50] = lab[0, 110:130, 190:210] = lab[0, 190:210, 350:370] = 1
    region_arr = np.zeros((1, h, w), np.uint8)
    region_arr[0, :, 80:] = 1  # 3 x 4 blocks of 80 px inside; the roof at (0, 0) is outside
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = open_scene(write_tif(tmp_path / "s.tif", data, nodata=0), LOCAL)
    labels = open_scene(write_tif(tmp_path / "l.tif", lab, nodata=255), LOCAL, bands=[1])
    region = open_scene(write_tif(tmp_path / "r.tif", region_arr), LOCAL, bands=[1])
    held: list[set] = []
    for i in range(3):
        tiles = tile_scene(0, s, labels, CFG, LOCAL, region=region, seed=4, fold=(3, i))
        blocks = set(tiles.val_blocks)
        assert len(blocks) == 4 and all(j >= 1 for _, j in blocks)
        for r in tiles.rows:
            rows = range(r["row_off"] // 80, (r["row_off"] + 39) // 80 + 1)
            cols = range(r["col_off"] // 80, (r["col_off"] + 39) // 80 + 1)
            touched = {(a, b) for a in rows for b in cols}
            assert (touched <= blocks) if r["split"] == "val" else not (touched & blocks), r
        held.append(blocks)
    assert set.union(*held) == {(a, b) for a in range(3) for b in range(1, 5)}
    assert sum(map(len, held)) == 12  # each block in one fold
    roofs = {(1, 2), (2, 4)}  # the two roofs inside the region lie in different folds
    assert sorted(len(f & roofs) for f in held) == [0, 1, 1]


def test_label_values_other_than_0_1_255_are_rejected(tmp_path) -> None:
    from resseg_ray.errors import InputDataError

    scene, _, _, lab = _scene(tmp_path)
    bad = lab.copy()
    bad[100, 200] = 2
    labels = open_scene(write_tif(tmp_path / "bad.tif", bad[None], nodata=255), LOCAL, bands=[1])
    with pytest.raises(InputDataError, match=r"bad\.tif holds values \[2\]"):
        tile_scene(0, scene, labels, CFG, LOCAL)


def test_damage_labels_tile_as_buildings_of_every_class(tmp_path) -> None:
    """A damage raster (0 background, 1..4 the damage classes, 255): its building fraction
    counts every class, and a value past the classes is refused."""
    from resseg_ray.errors import InputDataError

    scene, _, _, lab = _scene(tmp_path)
    damage = np.where(lab == 1, (np.arange(lab.size).reshape(lab.shape) % 4 + 1), lab).astype(np.uint8)
    buildings = open_scene(write_tif(tmp_path / "b.tif", lab[None], nodata=255), LOCAL, bands=[1])
    graded = open_scene(write_tif(tmp_path / "d.tif", damage[None], nodata=255), LOCAL, bands=[1])
    a, b = (
        tile_scene(0, scene, buildings, CFG, LOCAL),
        tile_scene(0, scene, graded, CFG, LOCAL, num_classes=5),
    )
    assert a.rows == [
        {**r, "label_uri": a.rows[0]["label_uri"]} for r in b.rows
    ]  # same tiles, same fractions
    with pytest.raises(
        InputDataError, match=r"d\.tif holds values \[2, 3, 4\]; labels must be 0 ground, 1 building"
    ):
        tile_scene(0, scene, graded, CFG, LOCAL)  # two classes: damage values are refused
    damage[5, 5] = 5
    odd = open_scene(write_tif(tmp_path / "o.tif", damage[None], nodata=255), LOCAL, bands=[1])
    with pytest.raises(InputDataError, match=r"holds values \[5\]; labels must be a class 0..4 or 255"):
        tile_scene(0, scene, odd, CFG, LOCAL, num_classes=5)


@given(
    pixels=st.lists(st.integers(0, 10**6), min_size=2, max_size=40),
    fraction=st.floats(0.05, 0.6),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=200, deadline=None)
def test_whole_scenes_held_out_leave_one_to_train_on_and_approach_the_fraction(
    pixels: list[int], fraction: float, seed: int
) -> None:
    held = choose_validation_scenes(pixels, fraction, seed)
    assert held == choose_validation_scenes(pixels, fraction, seed)  # seeded
    with_data = {i for i, n in enumerate(pixels) if n > 0}
    if len(with_data) < 2:
        assert held == set()
        return
    assert held and held <= with_data and with_data - held  # one held out, one left to train
    share = sum(pixels[i] for i in held) / sum(pixels)
    largest = max(pixels) / sum(pixels)
    # never more than one scene's worth beyond the target (the one that crossed it)
    assert share <= fraction + largest + 1e-9


def test_equal_chips_hold_out_the_nearest_whole_number_of_scenes() -> None:
    # 10 chips of equal size: 20 % is 2 chips whatever the seed
    for seed in range(20):
        assert len(choose_validation_scenes([810_000] * 10, 0.2, seed)) == 2
    assert choose_validation_scenes([810_000] * 10, 0.0, 0) == set()


def test_a_scene_smaller_than_a_tile_gives_one_padded_tile(tmp_path) -> None:
    """A 30x26 px chip with 40 px tiles: one tile centred on it (so the centre crop holds the
    chip), mostly padding, judged by the chip's own no data (none) rather than dropped as
    mostly empty."""
    data = np.random.default_rng(0).integers(1, 1000, (2, 26, 30)).astype(np.uint16)
    scene = open_scene(write_tif(tmp_path / "chip.tif", data, nodata=0), LOCAL)
    labels = open_scene(
        write_tif(tmp_path / "l.tif", np.zeros((1, 26, 30), np.uint8), nodata=255), LOCAL, bands=[1]
    )
    tiles = tile_scene(0, scene, labels, DataSection(**{**CFG.__dict__, "val_fraction": 0.0}), LOCAL)
    (row,) = tiles.rows
    assert (row["col_off"], row["row_off"], row["width"]) == (-5, -7, 40)
    assert row["valid_fraction"] == pytest.approx(26 * 30 / 1600) and tiles.valid_pixels == 26 * 30
    data[:, :, :20] = 0  # two thirds of the chip itself no data: that is dropped, as anywhere
    scene = open_scene(write_tif(tmp_path / "chip2.tif", data, nodata=0), LOCAL)
    assert not tile_scene(0, scene, labels, DataSection(**{**CFG.__dict__, "val_fraction": 0.0}), LOCAL).rows
