"""Where data is read from: S3 endpoints (``storage``) and STAC catalogs and searches (``stac``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import ClassVar, Self

from pydantic import model_validator

from resseg_ray.config.base import Section
from resseg_ray.errors import ConfigError


class StorageSection(Section):
    """Where S3 URIs are served from. Empty fields fall back to the standard AWS_* variables."""

    section = "storage"

    endpoint_url: str | None = None
    """S3-compatible endpoint, e.g. ``http://127.0.0.1:9000``; default ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL``, else AWS itself."""
    region: str | None = None
    """Bucket region; default ``AWS_REGION`` / ``AWS_DEFAULT_REGION``."""
    anonymous: bool = False
    """Read public buckets without credentials."""


class StacSection(Section):
    """Scenes from STAC: which asset of each item, how many items, and an optional STAC API
    search. Catalogs, collections and items themselves are given where scenes are (``--scenes``)."""

    section = "stac"
    flagged = True
    flags: ClassVar[Mapping[str, str]] = {
        "asset": "--stac-asset",
        "max_items": "--stac-max-items",
        "search": "--stac-search",
    }

    asset: str | None = None
    """Asset key of the raster to take from each item; default the first of ``analytic``,
    ``visual`` and ``data`` that the item has."""
    max_items: int | None = 10_000
    """Take at most this many items in all (null: no limit): a bound on
    what a catalog or search that never ends can make a job read."""
    search: str | None = None
    """A STAC API (its landing page URL) to search; its items are taken besides the scenes given."""
    bbox: list[float] | None = None
    """Search area of ``--stac-search``: west south east north in degrees."""
    datetime: str | None = None
    """Search time of ``--stac-search``: an RFC 3339 instant or interval (``a/b``, open ends as
    ``..``)."""
    collections: list[str] | None = None
    """``--stac-search`` only these collections."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.asset is not None and not re.fullmatch(r"[\w.:-]{1,128}", self.asset):
            raise self.bad("asset", "an asset key such as visual or analytic", self.asset)
        if self.max_items is not None and not 1 <= self.max_items <= 1_000_000:
            raise self.bad("max_items", "an integer from 1 to 1000000", self.max_items)
        if self.search is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.search):
            raise self.bad("search", "the http(s) URL of a STAC API", self.search)
        searching = (self.bbox, self.datetime, self.collections)
        if self.search is None and any(v is not None for v in searching):
            raise ConfigError(
                "--bbox, --datetime and --collections narrow a STAC API search: give --stac-search"
            )
        if self.bbox is not None:
            ok = len(self.bbox) == 4 and all(math.isfinite(v) for v in self.bbox)
            w, s, e, n = self.bbox if ok else (0, 0, 0, 0)
            if not ok or not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
                raise self.bad("bbox", "west south east north in degrees (south < north)", self.bbox)
        if self.datetime is not None and not rfc3339_interval(self.datetime):
            raise self.bad(
                "datetime",
                "an RFC 3339 time or interval, e.g. 2023-02-06 or 2023-02-06T00:00:00Z/..",
                self.datetime,
            )
        if self.collections is not None and (
            not self.collections or not all(re.fullmatch(r"[\w.:/-]{1,256}", c) for c in self.collections)
        ):
            raise self.bad("collections", "collection ids", self.collections)
        return self


def rfc3339_interval(value: str) -> bool:
    """An instant (a date or a date-time) or an interval ``a/b`` whose open ends are ``..``/empty."""
    import datetime as dt

    parts = value.split("/")
    if len(parts) > 2 or (len(parts) == 2 and all(p in ("", "..") for p in parts)):
        return False
    for part in parts:
        if len(parts) == 2 and part in ("", ".."):
            continue
        try:
            dt.datetime.fromisoformat(part.replace("z", "Z"))
        except ValueError:
            return False
    return True
