"""Geo I/O: storage URIs (local, s3://), scenes and their windows, label rasters, statistics,
building polygon files (GeoJSON, GeoParquet, FlatGeobuf, OSM XML) and conflation with
buildings already mapped.

Its names are imported on first use (:mod:`resseg_ray.exports`).
"""

from resseg_ray.exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "resseg_ray.geo.labels": [
            "BUILDING",
            "GROUND",
            "IGNORE",
            "read_footprints",
            "rasterize_footprints",
            "write_label_raster",
        ],
        "resseg_ray.geo.conflation": ["already_mapped", "existing_buildings"],
        "resseg_ray.geo.osm": ["osm_xml"],
        "resseg_ray.geo.scene": ["SceneInfo", "open_scene", "read_window"],
        "resseg_ray.geo.stats": ["Norm", "Statistics", "compute_statistics", "norm_arrays", "normalize"],
        "resseg_ray.geo.storage": [
            "StorageSettings",
            "atomic_output",
            "check_output_file",
            "check_writable",
            "expand_uris",
            "join_uri",
            "normalize_uri",
            "read_bytes",
            "resolve_uri",
            "scene_stem",
            "write_bytes",
        ],
        "resseg_ray.geo.vectors": ["read_provenance", "write_vector"],
    },
)
