"""The demo's disasters as files: per event a pre-event and a post-event GeoTIFF of one place
(two sensors, two suns) and the buildings with their damage as GeoJSON (``subtype``, as xBD
names it). Training events are an earthquake, a flood and a fire; the test events are a storm,
a kind absent from training, and an earthquake seen by other sensors."""

from __future__ import annotations

from resseg_ray.demo.disasters import EventEffects, EventSpec
from resseg_ray.demo.landscape import BASE_RES
from resseg_ray.demo.scenes import write_scene
from resseg_ray.demo.specs import SceneSpec
from resseg_ray.geo.storage import StorageSettings, join_uri


def default_events(scale: float = 1.0) -> tuple[tuple[EventSpec, ...], tuple[EventSpec, ...]]:
    """(training events, test events); ``scale`` shrinks every place's sides (tests use small
    places); at scale 1 a place is 600 x 500 m (1200 x 1000 pixels at 0.5 m)."""

    def place(name: str, land: str, sensor: str, epsg: int, origin, seed: int, **kw) -> SceneSpec:
        return SceneSpec(name, land, sensor, 600 * scale, 500 * scale, epsg, origin, seed, **kw)

    quake = place("quake_01", "urban", "alpha", 32633, (460000.0, 5050000.0), 31)
    flood = place("flood_01", "suburban", "bravo", 32634, (386000.0, 5110000.0), 32)
    fire = place("fire_01", "village", "alpha", 32633, (464000.0, 5047000.0), 33, sun_azimuth=150.0)
    storm = place("storm_01", "suburban", "charlie", 32618, (590000.0, 4515000.0), 41)
    quake2 = place("quake_02", "urban", "echo", 32631, (450000.0, 5415000.0), 42)
    train = (
        EventSpec(
            "quake_01", "earthquake", quake, "bravo", 160.0, 50.0, centre=(0.4, 0.55), reach=0.55, seed=131
        ),
        EventSpec("flood_01", "flood", flood, "alpha", 120.0, 40.0, reach=0.35, angle=20.0, seed=132),
        EventSpec("fire_01", "fire", fire, "bravo", 140.0, 55.0, centre=(0.5, 0.45), angle=-35.0, seed=133),
    )
    test = (
        EventSpec("storm_01", "storm", storm, "delta", 110.0, 35.0, seed=141),
        EventSpec(
            "quake_02", "earthquake", quake2, "charlie", 170.0, 42.0, centre=(0.6, 0.4), reach=0.6, seed=142
        ),
    )
    return train, test


def write_event(event: EventSpec, out_dir: str, settings: StorageSettings | None = None) -> dict:
    """Simulate an event; write ``<name>_pre.tif``, ``<name>_post.tif`` (on the post sensor's
    own grid) and ``<name>_damage.geojson`` (each building's ``subtype``) under ``out_dir``.
    Returns a summary with the count of buildings per damage class."""
    pre_uri, post_uri = (
        join_uri(out_dir, f"{event.name}_pre.tif"),
        join_uri(out_dir, f"{event.name}_post.tif"),
    )
    damage_uri = join_uri(out_dir, f"{event.name}_damage.geojson")
    pre = write_scene(
        event.place, pre_uri, join_uri(out_dir, f"{event.name}_pre_buildings.geojson"), settings
    )
    spec = event.place
    shape = (round(spec.height_m / BASE_RES), round(spec.width_m / BASE_RES))
    effects = EventEffects(event, shape)
    post = write_scene(event.post, post_uri, damage_uri, settings, effects)
    counts = {name: 0 for name in ("no-damage", "minor-damage", "major-damage", "destroyed")}
    for g in effects.grades:
        counts[list(counts)[g - 1]] += 1
    return {
        "name": event.name,
        "kind": event.kind,
        "pre": pre_uri,
        "post": post_uri,
        "damage": damage_uri,
        "pre_sensor": pre["sensor"],
        "post_sensor": post["sensor"],
        "buildings": counts,
    }
