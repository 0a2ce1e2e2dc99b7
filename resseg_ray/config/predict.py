"""How scenes are segmented (``predict``): one set of options for every stage that does it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import ClassVar, Self

from pydantic import model_validator

from resseg_ray.config.base import Section
from resseg_ray.config.choices import BlendMode, Normalization, Precision, ProbDtype, Runtime, VectorFormat

_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,2})?")


class PredictSection(Section):
    """How scenes are segmented, the one set of options of every stage that does it
    (``jobs/predict.py``, ``evaluate``, ``suggest_annotation``, ``finetune``'s scoring,
    ``compare_depths``' test scenes, the Ray actors and Serve). The jobs' flags of the same
    name (``--window``, ``--overlap``, ...) override these fields."""

    section = "predict"
    flagged = True
    flags: ClassVar[Mapping[str, str]] = {"prob": "--no-prob"}

    window: int = 512
    """Window side in pixels (the paper's 512)."""
    overlap: int = 112
    """Overlap of neighbouring windows in pixels (the authors' code: 512 px tiles every 400 px)."""
    blend: BlendMode = "flat"
    """Blending of overlapping windows: ``flat``, averaged (the paper); ``linear``,
    weighted by a ramp towards the window edges (the authors' code); or ``cosine``, by a
    raised-cosine ramp."""
    batch_size: int = 4
    """Windows per forward pass."""
    normalization: Normalization | None = None
    """``pooled`` (the training scenes' statistics, kept in the bundle) or ``per_scene``
    (each scene's own); default: as the model was trained."""
    adapt_bn: bool = False
    """Label-free adaptation: re-estimate the network's BatchNorm statistics on each
    scene's own windows first."""
    bands: list[int] | None = None
    """1-based scene band indexes in the model's band order (e.g. ``3 2 1 4``); default
    every non-alpha band of the scene."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    runtime: Runtime = "auto"
    """What runs the network: ``torch``, ``openvino``, ``onnxruntime`` (CPU), or ``auto``: the
    fastest here whose masks agree with fp32 PyTorch, measured once per model and machine
    (PyTorch with autocast on CUDA)."""
    precision: Precision = "auto"
    """``fp32``, ``bf16`` (CPUs with AMX or AVX512_BF16 units, CUDA), ``fp16`` (CUDA) or ``auto``:
    bf16 where the device has bf16 units and the masks agree, else fp32 on CPU."""
    prob: bool = True
    """Write the probability raster besides the mask (on by default; ``--no-prob`` writes the
    masks only)."""
    prob_dtype: ProbDtype = "uint8"
    """Probability raster type: ``uint8`` (0-250 = probability x 250, 255 no data) or
    ``float32`` (NaN no data)."""
    polygons: bool = False
    """Also write the building polygons (``<stem>_buildings.geojson``, or ``.parquet``,
    ``.fgb``: see ``vector_format``)."""
    min_area: float = 10.0
    """Drop polygons smaller than this, in CRS units squared (m² in a metric CRS such as UTM)."""
    simplify: float = 0.5
    """Douglas-Peucker tolerance of the polygons in CRS units; 0 keeps the pixel outlines."""
    wgs84: bool = False
    """Polygons in EPSG:4326 instead of the scene's CRS."""
    osm: bool = False
    """Also write the polygons as ``<stem>_buildings.osm`` for JOSM (implies polygons): OSM XML
    API 0.6 in EPSG:4326, negative ids, adjacent buildings sharing their corner nodes,
    ``building=yes`` and ``source=resseg-ray building segmentation of <stem>`` on every building
    (courtyards as multipolygon relations), and ``upload="false"`` so JOSM will not upload the
    layer: copy the buildings you accept into your data layer."""
    vector_format: VectorFormat = "geojson"
    """Format of the building polygons: ``geojson``; ``parquet`` (GeoParquet, read by
    geopandas, DuckDB, QGIS 3.28+); or ``fgb`` (FlatGeobuf, streamable, read by QGIS and GDAL).
    ``parquet`` and ``fgb`` imply polygons."""
    regularize: bool = False
    """Square the building outlines: edges parallel or perpendicular to each building's
    main direction (45° where the outline clearly has it), by buildingregulariser, with tolerances
    of one and two pixels; ``area`` and ``mean_probability`` stay those of the pixel outline. On
    the demo's test scenes it costs 0.5 points of object F1 for 80 % right-angle corners
    (``bench/regularize.py``)."""
    existing: str | None = None
    """Buildings already mapped (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet,
    or OSM XML such as a JOSM or Overpass download; any CRS; local or ``s3://``): predicted
    buildings that overlap them are left out of the polygons and the JOSM file and counted per
    scene (implies polygons). A file without polygons or without a CRS stops the job before any
    work."""
    existing_overlap: float = 0.3
    """A predicted building counts as already mapped when the existing buildings cover
    more than this share of its area, or it covers more than this share of one of theirs (a mapped
    shed inside a predicted block counts)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not 16 <= self.window <= 16384:
            raise self.bad("window", "an integer from 16 to 16384 pixels", self.window)
        if not 0 <= self.overlap < self.window:
            raise self.bad("overlap", f"an integer from 0 to window - 1 = {self.window - 1}", self.overlap)
        if not 1 <= self.batch_size <= 4096:
            raise self.bad("batch_size", "an integer from 1 to 4096", self.batch_size)
        if self.bands is not None and (
            not self.bands or min(self.bands) < 1 or len(set(self.bands)) != len(self.bands)
        ):
            raise self.bad("bands", "distinct 1-based band indexes, e.g. 3 2 1 4", self.bands)
        if not _DEVICE.fullmatch(self.device):
            raise self.bad("device", "auto, cpu, cuda or cuda:N", self.device)
        for name in ("min_area", "simplify"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise self.bad(name, "a finite number >= 0", value)
        if not 0 <= self.existing_overlap < 1:
            raise self.bad("existing_overlap", "a share from 0 to below 1", self.existing_overlap)
        if self.existing is not None and not self.existing.strip():
            raise self.bad("existing", "a vector file of buildings already mapped", self.existing)
        return self

    @property
    def wants_polygons(self) -> bool:
        """Whether building polygons are written (asked for, needed by ``osm``/``existing``, or in
        a format other than the default chosen)."""
        return self.polygons or self.osm or self.existing is not None or self.vector_format != "geojson"
