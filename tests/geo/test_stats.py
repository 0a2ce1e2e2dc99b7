"""Normalisation statistics (dask on Ray) equal numpy's over the valid pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from resseg_ray.errors import InputDataError
from resseg_ray.geo import stats as stats_module
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stats import Statistics, compute_statistics
from resseg_ray.geo.storage import StorageSettings
from tests.rasters import write_tif

LOCAL = StorageSettings()


def _scene(tmp_path, name: str, seed: int, shape=(3, 150, 170)) -> tuple[str, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 4000, shape).astype(np.uint16)
    data[:, :20, :30] = 0  # a no-data corner
    valid = np.all(data != 0, axis=0)
    return write_tif(tmp_path / name, data, nodata=0), data, valid


@pytest.mark.parametrize("use_ray", [True, False])
def test_statistics_equal_numpy_per_scene_and_pooled(tmp_path, request, monkeypatch, use_ray) -> None:
    if use_ray:
        request.getfixturevalue("ray_session")
        monkeypatch.setattr(stats_module, "LOCAL_PIXELS", 0)  # these small scenes on Ray tasks too
    a_uri, a, av = _scene(tmp_path, "a.tif", 1)
    b_uri, b, bv = _scene(tmp_path, "b.tif", 2, shape=(3, 90, 260))
    infos = [open_scene(a_uri, LOCAL), open_scene(b_uri, LOCAL)]
    stats = compute_statistics(infos, LOCAL, block=64, scheduler=None if use_ray else "sync")
    for info, data, valid in ((infos[0], a, av), (infos[1], b, bv)):
        s = stats.scenes[info.uri]
        vals = data[:, valid].astype(np.float64)
        np.testing.assert_allclose(s.mean, vals.mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(s.std, vals.std(axis=1), rtol=1e-10)
        assert s.count == [int(valid.sum())] * 3
    pooled = np.concatenate([a[:, av], b[:, bv]], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.pooled.mean, pooled.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.pooled.std, pooled.std(axis=1), rtol=1e-10)
    assert Statistics.from_json(stats.to_json()) == stats


def test_scene_without_valid_pixels_is_an_error(tmp_path) -> None:
    uri = write_tif(tmp_path / "z.tif", np.zeros((2, 30, 30), np.uint16), nodata=0)
    with pytest.raises(InputDataError, match=r"z\.tif has no valid pixels"):
        compute_statistics([open_scene(uri, LOCAL)], LOCAL, block=64, scheduler="sync")


def test_small_scenes_are_summed_in_this_process_large_ones_on_ray(tmp_path, ray_session) -> None:
    """With Ray up, scenes of more than LOCAL_PIXELS pixels in all go to Ray tasks; fewer are
    summed by threads here (starting Ray workers would take longer than reading them)."""
    from ray.util.dask import ray_dask_get

    small = open_scene(_scene(tmp_path, "a.tif", 1)[0], LOCAL)
    assert stats_module._scheduler([small]) == "threads"
    big = dataclasses.replace(small, width=2049, height=2048)
    assert stats_module._scheduler([big]) is ray_dask_get


def test_moments_of_parts_merge_into_the_wholes_and_a_staged_pairs_are_its_files(tmp_path) -> None:
    """Moments of any split of the pixels merge into those of all of them (integer bands
    exactly summed, float bands without their NaN); a pair's staging returns the moments of
    the raster it wrote, as compute_statistics reads them from that raster."""
    from resseg_ray.data.pairs import stack_pair
    from resseg_ray.geo.pairs import open_pair
    from resseg_ray.geo.stats import Moments

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 65535, (3, 64, 80)).astype(np.uint16)
    valid = rng.random((64, 80)) > 0.2
    whole = Moments.of(pixels, valid)
    parts = Moments.none(3)
    for r in range(0, 64, 7):
        parts = parts + Moments.of(pixels[:, r : r + 7], valid[r : r + 7])
    x = pixels[:, valid].astype(np.float64)
    for m in (whole, parts):
        assert m.count.tolist() == [int(valid.sum())] * 3
        np.testing.assert_allclose(m.mean, x.mean(1), rtol=1e-15)
        np.testing.assert_allclose(np.sqrt(m.m2 / m.count), x.std(1), rtol=1e-12)
    floats = pixels.astype(np.float32)
    floats[1, 0, :10] = np.nan  # a band's own NaN leaves that band only
    f = Moments.of(floats, np.ones((64, 80), bool)).band_stats()
    assert f.count == [64 * 80, 64 * 80 - 10, 64 * 80]
    assert f.mean[1] == pytest.approx(np.nanmean(floats[1].astype(np.float64)), rel=1e-12)

    pre, _, _ = _scene(tmp_path, "pre.tif", 0)
    post, _, _ = _scene(tmp_path, "post.tif", 1)
    staged = str(tmp_path / "pair.tif")
    moments = stack_pair(open_pair(pre, post, LOCAL), staged, LOCAL, rows=40).band_stats()
    read = compute_statistics([open_scene(staged, LOCAL)], LOCAL, scheduler="synchronous").pooled
    assert moments.count == read.count
    np.testing.assert_allclose(moments.mean, read.mean, rtol=1e-12)
    np.testing.assert_allclose(moments.std, read.std, rtol=1e-12)
