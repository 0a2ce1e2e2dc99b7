"""Building polygons written as GeoJSON, GeoParquet or FlatGeobuf, with a provenance record
that can be read back (what wrote the file, for which scene).

The provenance travels where each format keeps file metadata: a GeoJSON foreign member
(RFC 7946, 6.1), the Parquet schema's key-value metadata (beside GeoParquet's ``geo``), the
FlatGeobuf layer metadata. GeoParquet is written by geopandas (pyarrow), FlatGeobuf by
pyogrio (GDAL); the GDAL in pyogrio's wheels has no Parquet driver.
"""

from __future__ import annotations

import io
import json
import os
import tempfile

from resseg_ray.config import VECTOR_FORMATS

__all__ = ["VECTOR_FORMATS", "read_provenance", "vector_suffix", "write_vector"]

_SUFFIXES = {"geojson": ".geojson", "parquet": ".parquet", "fgb": ".fgb"}


def vector_suffix(fmt: str) -> str:
    """File name ending of a vector format (``.geojson``, ``.parquet``, ``.fgb``)."""
    return _SUFFIXES[fmt]


def _format_of(path: str) -> str | None:
    for fmt, suffix in _SUFFIXES.items():
        if path.lower().endswith(suffix):
            return fmt
    return None


def write_vector(collection: dict, crs: str | None, path: str, provenance: dict[str, str]) -> None:
    """Write a GeoJSON-like FeatureCollection (coordinates in ``crs``) to the local ``path`` in
    the format its suffix names, with ``provenance`` as file metadata."""
    fmt = _format_of(path)
    if fmt == "geojson":
        with open(path, "w") as f:
            json.dump({**collection, **provenance}, f)
        return
    import geopandas as gpd

    features = collection["features"]
    columns = list(dict.fromkeys(k for f in features for k in f["properties"])) or ["id"]
    frame = gpd.GeoDataFrame.from_features(features, crs=crs, columns=[*columns, "geometry"])
    if fmt == "fgb":
        import pyogrio

        pyogrio.write_dataframe(
            frame,
            path,
            driver="FlatGeobuf",
            layer_metadata=provenance,
            geometry_type="MultiPolygon",  # one type for the file, also when it holds no building
            promote_to_multi=True,
        )
        return
    if fmt != "parquet":
        raise ValueError(f"{path}: not a vector format of {', '.join(VECTOR_FORMATS)}")
    import pyarrow.parquet as pq

    # geopandas writes GeoParquet (its "geo" metadata); the provenance is added beside it
    with tempfile.TemporaryDirectory(prefix="resseg-vec-") as tmp:
        plain = os.path.join(tmp, "plain.parquet")
        frame.to_parquet(plain, index=False)
        table = pq.read_table(plain)
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in provenance.items()})
    pq.write_table(table.replace_schema_metadata(meta), path)


def read_provenance(name: str, data: bytes) -> dict[str, str]:
    """The provenance record of a vector file's bytes (``name`` tells the format); empty when
    the file carries none or cannot be read as its format."""
    fmt = _format_of(name)
    try:
        if fmt == "geojson":
            doc = json.loads(data)
            if not isinstance(doc, dict):
                return {}
            return {k: v for k, v in doc.items() if isinstance(v, str) and k != "type"}
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.read_schema(io.BytesIO(data)).metadata or {}
            return {k.decode(): v.decode() for k, v in meta.items() if k not in (b"geo", b"pandas")}
        if fmt == "fgb":
            import pyogrio

            return dict(pyogrio.read_info(io.BytesIO(data)).get("layer_metadata") or {})
    except Exception:  # not a file of that format: it carries no provenance
        return {}
    return {}
