"""The demo's disasters: the same place before and after; damage clustered in space as real
damage is; each grade with its own look in the post image; a test event of a kind training
never saw; the files a damage job reads (pre, post on its own grid, footprints with subtype)."""

from __future__ import annotations

import json

import numpy as np
import rasterio

from resseg_ray.demo.disasters import EventEffects, EventSpec, grades, intensity
from resseg_ray.demo.events import default_events, write_event
from resseg_ray.demo.landscape import BASE_RES, burn_shapes, render_ground
from resseg_ray.demo.specs import SceneSpec
from resseg_ray.geo.damage_labels import make_damage_raster
from resseg_ray.geo.labels import read_footprints
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings

PLACE = SceneSpec("p", "urban", "alpha", 500, 400, 32633, (460000.0, 5050000.0), 31)


def _shape(spec: SceneSpec) -> tuple[int, int]:
    return round(spec.height_m / BASE_RES), round(spec.width_m / BASE_RES)


def test_damage_is_clustered_around_where_the_event_struck() -> None:
    event = EventSpec("q", "earthquake", PLACE, "alpha", 135.0, 45.0, centre=(0.3, 0.3), reach=0.6, seed=5)
    _, buildings, _ = render_ground(PLACE)
    g = np.array(grades(event, buildings, intensity(event, _shape(PLACE))))
    assert len(buildings) > 40 and set(g.tolist()) == {1, 2, 3, 4}
    h, w = _shape(PLACE)
    centres = np.array([(b.polygon.centroid.x, b.polygon.centroid.y) for b in buildings])
    d = np.hypot(centres[:, 0] - 0.3 * w, centres[:, 1] - 0.3 * h)
    near, far = g[d < np.median(d)], g[d >= np.median(d)]
    assert near.mean() > far.mean() + 1.0  # worst near the epicentre
    nearest = np.argsort(np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1)), axis=1)[:, 1]
    assert np.corrcoef(g, g[nearest])[0, 1] > 0.5  # a building's grade is its neighbour's


def test_each_grade_has_its_own_look_and_the_place_is_the_same() -> None:
    """Same sun before and after, so that what changes on a roof is the damage alone."""
    event = EventSpec(
        "q", "earthquake", PLACE, "alpha", PLACE.sun_azimuth, PLACE.sun_elevation, reach=0.6, seed=5
    )
    pre, buildings, _ = render_ground(PLACE)
    again, _, _ = render_ground(PLACE)
    assert np.array_equal(pre, again)  # deterministic
    effects = EventEffects(event, _shape(PLACE))
    post, after, _ = render_ground(event.post, effects)
    assert [b.polygon.wkt for b in after] == [b.polygon.wkt for b in buildings]  # the same place
    ids = burn_shapes([(b.polygon, i + 1) for i, b in enumerate(buildings)], _shape(PLACE), dtype="int32")
    changed = np.abs(post - pre).max(axis=0) > 0.03
    share = {grade: [] for grade in (1, 2, 3, 4)}
    tarps = 0
    for i, grade in enumerate(effects.grades):
        roof = ids == i + 1
        if roof.sum() < 50:
            continue
        share[grade].append(changed[roof].mean())
        tarps += int(((post[0] > 0.25) & (post[2] < 0.12) & roof).sum())  # blue above red
    mean = {k: float(np.mean(v)) for k, v in share.items()}
    assert mean[1] < 0.02 < mean[2] < 0.3 < mean[3] < 0.85 < mean[4], mean
    assert tarps > 0


def test_a_test_event_is_of_a_kind_training_never_saw() -> None:
    train, test = default_events()
    assert {e.kind for e in test} - {e.kind for e in train} == {"storm"}
    assert {e.place.sensor for e in test}.isdisjoint({e.place.sensor for e in train})


def test_an_event_as_files_and_its_damage_raster(tmp_path) -> None:
    _, test = default_events(scale=0.25)
    summary = write_event(test[0], str(tmp_path))
    settings = StorageSettings()
    pre, post = open_scene(summary["pre"], settings), open_scene(summary["post"], settings)
    assert not pre.same_grid(post)  # another sensor: another grid, as a real pair comes
    doc = json.loads((tmp_path / "storm_01_damage.geojson").read_text())
    subtypes = [f["properties"]["subtype"] for f in doc["features"]]
    assert sum(summary["buildings"].values()) == len(subtypes) > 5
    out = str(tmp_path / "damage.tif")
    make_damage_raster(
        pre, read_footprints(summary["damage"], settings, attribute="subtype"), "subtype", out, settings
    )
    with rasterio.open(out) as ds:
        values = set(np.unique(ds.read(1)).tolist())
    assert values <= {0, 1, 2, 3, 4, 255} and len(values & {1, 2, 3, 4}) >= 2
