"""Demo scenes as files: 4-band (blue, green, red, NIR) uint16 GeoTIFFs in UTM, imaged from a
procedural landscape by a simulated sensor, with their building footprints as GeoJSON in
EPSG:4326."""

from __future__ import annotations

import json

import numpy as np
import rasterio
import rasterio.warp
from rasterio.crs import CRS
from shapely import affinity
from shapely.geometry import mapping

from resseg_ray.demo.landscape import BASE_RES, GroundEffects, render_ground
from resseg_ray.demo.sensor import BAND_NAMES, SENSORS, image_with_sensor
from resseg_ray.demo.specs import DemoSet, SceneSpec, default_demo
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES
from resseg_ray.geo.storage import StorageSettings, atomic_output, join_uri, write_bytes


def write_scene(
    spec: SceneSpec,
    scene_uri: str,
    footprints_uri: str,
    settings: StorageSettings | None = None,
    effects: GroundEffects | None = None,
) -> dict:
    """Simulate one scene (with ``effects``, after an event: its footprints then carry each
    building's damage as ``subtype``); write its GeoTIFF and its footprints GeoJSON. Returns a
    summary."""
    settings = settings or StorageSettings()
    sensor = SENSORS[spec.sensor]
    refl, buildings, _ = render_ground(spec, effects)
    damage = getattr(effects, "grades", None)
    rng = np.random.default_rng(spec.seed + 1000)
    dn = image_with_sensor(refl, spec, sensor, rng)
    _, h, w = dn.shape
    if spec.nodata_corner:
        yy, xx = np.mgrid[0:h, 0:w]
        corner = xx + yy < 0.35 * min(w, h)
        dn[:, corner] = 0
    transform = rasterio.Affine(sensor.resolution, 0, spec.origin[0], 0, -sensor.resolution, spec.origin[1])
    profile = {
        "width": w,
        "height": h,
        "count": 4,
        "dtype": "uint16",
        "crs": CRS.from_epsg(spec.epsg),
        "transform": transform,
        "nodata": 0,
        "driver": "COG",  # as post-event imagery is published: tiled, with overviews
        "blocksize": 256,
        "compress": "zstd",
        "predictor": 2,
        "overview_resampling": "average",
    }
    with atomic_output(scene_uri, settings, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(dn)
        for i, name in enumerate(BAND_NAMES, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(
            sensor=sensor.name, landscape=spec.landscape, bits=str(sensor.bits), synthetic="resseg-ray"
        )

    # Footprints: ground pixels -> UTM metres -> EPSG:4326.
    to_map = [BASE_RES, 0, 0, -BASE_RES, spec.origin[0], spec.origin[1]]
    features = []
    for i, b in enumerate(buildings):
        geom = mapping(affinity.affine_transform(b.polygon, to_map))
        geom = rasterio.warp.transform_geom(CRS.from_epsg(spec.epsg), CRS.from_epsg(4326), geom, precision=8)
        props: dict[str, object] = {"id": i, "roof": b.roof, "height_m": round(b.height_m, 1)}
        if damage:
            props["subtype"] = DAMAGE_CLASSES[damage[i] - 1]
        features.append({"type": "Feature", "properties": props, "geometry": geom})
    fc = {"type": "FeatureCollection", "features": features}
    write_bytes(footprints_uri, json.dumps(fc).encode(), settings)
    return {
        "name": spec.name,
        "scene": scene_uri,
        "footprints": footprints_uri,
        "sensor": sensor.name,
        "landscape": spec.landscape,
        "width": w,
        "height": h,
        "buildings": len(buildings),
    }


def write_demo_scenes(
    out_dir: str, demo: DemoSet | None = None, settings: StorageSettings | None = None
) -> dict:
    """Write every scene of a demo set under ``out_dir/{train,test}/``. Returns a summary."""
    demo = demo or default_demo()
    summary: dict[str, list[dict]] = {"train": [], "test": []}
    for split, specs in (("train", demo.train), ("test", demo.test)):
        for spec in specs:
            summary[split].append(
                write_scene(
                    spec,
                    join_uri(out_dir, split, f"{spec.name}.tif"),
                    join_uri(out_dir, split, f"{spec.name}_buildings.geojson"),
                    settings,
                )
            )
    return summary
