"""Scenes from STAC: items, collections, static catalogs (local, s3://, http(s)://) and STAC
API searches, read with pystac / pystac-client.

Wherever a job takes scenes, an argument that is a STAC document (a ``.json`` file or URL)
stands for the rasters its items hold: a catalog or collection is walked through its child
and item links, lazily and at most ``stac.max_items`` items. Of each item one asset is
taken: ``stac.asset``, else the first of :data:`~resseg_ray.config.STAC_ASSETS` it has. An
item listed twice (the open-data catalogs have some) or two items naming the same raster
give one scene; a listed child or item that cannot be read, an item without the asset, an
asset that is not a raster are reported and skipped. Nothing usable at all is an error.

Documents are read through :mod:`resseg_ray.geo.storage` (so ``storage.endpoint_url`` and
``storage.anonymous`` apply to s3:// catalogs, with deadlines and size limits on HTTP).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac
from pystac.stac_io import StacIO

from resseg_ray.config import STAC_ASSETS, StacSection
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.names import unique_stems
from resseg_ray.geo.storage import (
    RASTER_SUFFIXES,
    StorageSettings,
    expand_uris,
    is_http,
    is_s3,
    local_path,
    normalize_uri,
    read_bytes,
    write_bytes,
)
from resseg_ray.jsondoc import load_json

__all__ = ["SceneInputs", "StorageStacIO", "is_stac_uri", "item_raster", "resolve_scenes"]

RASTER_MEDIA = ("image/tiff", "image/geotiff", "image/jp2", "image/vnd.stac.geotiff")
"""Media types of assets taken as rasters (COGs are ``image/tiff; application=geotiff``)."""
SEARCH_TIMEOUT_S = 60
"""Deadline of one STAC API request."""


class StorageStacIO(StacIO):
    """pystac's reads and writes through the project's storage layer (local, s3://, http(s))."""

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__()
        self.settings = settings

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        """The text of a STAC document."""
        href = source if isinstance(source, str) else source.get_absolute_href()
        data = read_bytes(str(href), self.settings)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputDataError(f"{href} is not a STAC JSON document (not UTF-8 text)") from None

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        """Write a STAC document (atomically, as every output)."""
        href = dest if isinstance(dest, str) else dest.get_absolute_href()
        write_bytes(str(href), txt.encode("utf-8"), self.settings)


@dataclass
class SceneInputs:
    """The scenes named by a job's arguments, with the STAC item each came from."""

    uris: list[str] = field(default_factory=list)
    items: dict[str, pystac.Item] = field(default_factory=dict)
    """Scene URI -> the STAC item whose asset it is (scenes given directly have none)."""
    assets: dict[str, str] = field(default_factory=dict)
    """Scene URI -> the key of the item's asset it is."""
    skipped: list[str] = field(default_factory=list)
    """What was listed but not taken, and why (for the job to print)."""
    listed: int = 0
    """STAC items read (taken or not)."""
    _keys: set[str] = field(default_factory=set, repr=False)

    def add(self, uri: str, item: pystac.Item | None = None, asset: str | None = None) -> bool:
        """Add a scene unless it is there already; whether it was added."""
        key = normalize_uri(uri)
        if key in self._keys:
            return False
        self._keys.add(key)
        self.uris.append(uri)
        if item is not None and asset is not None:
            self.items[uri] = item
            self.assets[uri] = asset
        return True

    def output_names(self) -> dict[str, str]:
        """A distinct output stem per scene (normalised URI -> stem): STAC scenes by item id
        (collection and item id where ids repeat), others by file name, same names told apart
        by their folders (:func:`~resseg_ray.geo.storage.unique_stems`)."""
        ids = {u: (item.collection_id, item.id) for u, item in self.items.items()}
        return unique_stems(self.uris, ids)


def is_stac_uri(uri: str) -> bool:
    """Whether a scene argument names a STAC document rather than a raster, folder or glob."""
    low = uri.lower().split("?", 1)[0]
    return low.endswith(".json") or (is_http(uri) and not low.endswith(RASTER_SUFFIXES))


def resolve_scenes(patterns: Sequence[str], settings: StorageSettings, stac: StacSection) -> SceneInputs:
    """The scenes of a job's scene arguments (files, globs, folders, STAC documents) and of the
    ``stac`` search, in the order given, each once."""
    out = SceneInputs()
    budget = [stac.max_items if stac.max_items is not None else -1]
    from_stac: list[str] = []
    for pattern in patterns:
        if is_stac_uri(pattern):
            from_stac.append(pattern)
            _add_items(out, _document_items(pattern, settings, out), stac, budget, pattern)
        else:
            for uri in expand_uris([pattern], settings):
                out.add(uri)
    if stac.search is not None:
        from_stac.append(stac.search)
        _add_items(out, _search_items(stac, out), stac, budget, stac.search)
    if from_stac and not out.items and not out.uris:
        why = "; ".join(out.skipped[:3]) or "it lists no items"
        if not out.listed:  # nothing found at all: the asset is not the question
            advice = (
                "widen the search (--bbox, --datetime, --collections)"
                if stac.search is not None
                else "check that the catalog lists items"
            )
            raise InputDataError(f"no scene in {', '.join(from_stac)}: no STAC item found ({why}); {advice}")
        wanted = f"asset {stac.asset!r}" if stac.asset else "an asset " + " / ".join(STAC_ASSETS)
        raise InputDataError(
            f"no scene in {', '.join(from_stac)}: no item holds {wanted} that is a raster ({why}); "
            "choose the asset with --stac-asset"
        )
    return out


def _add_items(
    out: SceneInputs, items: Iterator[pystac.Item], stac: StacSection, budget: list[int], source: str
) -> None:
    for item in items:
        out.listed += 1
        if budget[0] == 0:
            out.skipped.append(
                f"{source}: more items than --stac-max-items {stac.max_items}; the rest not read"
            )
            return
        try:
            href, key = item_raster(item, stac.asset)
        except InputDataError as exc:
            out.skipped.append(f"{exc}; skipped")
            continue
        if out.add(href, item, key):
            budget[0] -= 1


def item_raster(item: pystac.Item, asset: str | None = None) -> tuple[str, str]:
    """(absolute href, asset key) of the raster to segment of one item (``asset``, else the
    first of the default assets); an InputDataError says why there is none."""
    key, why = _raster_asset(item, asset)
    href = item.assets[key].get_absolute_href() if key is not None else None
    if key is None or href is None:
        raise InputDataError(
            f"item {item.id}: {why or 'its asset has a relative href and the item no location'}"
        )
    return (local_path(href) if href.startswith("file://") else href), key


def _raster_asset(item: pystac.Item, wanted: str | None) -> tuple[str | None, str]:
    """The key of the item's asset to segment, or None and why not."""
    if wanted is not None:
        if wanted not in item.assets:
            return None, f"it has no asset {wanted!r} (it has {', '.join(item.assets) or 'none'})"
        key = wanted
    else:
        found = [k for k in STAC_ASSETS if k in item.assets]
        if not found:
            return None, (
                f"it has none of the assets {', '.join(STAC_ASSETS)} "
                f"(it has {', '.join(item.assets) or 'none'}); name one with --stac-asset"
            )
        key = found[0]
    asset = item.assets[key]
    media = (asset.media_type or "").lower()
    href = asset.href.lower().split("?", 1)[0]
    if not (any(m in media for m in RASTER_MEDIA) or (not media and href.endswith(RASTER_SUFFIXES))):
        return None, f"its asset {key!r} is not a raster ({asset.media_type or asset.href})"
    return key, ""


def _document_items(uri: str, settings: StorageSettings, out: SceneInputs) -> Iterator[pystac.Item]:
    """The items of a STAC item, item collection, collection or catalog document."""
    io = StorageStacIO(settings)
    href = uri if is_s3(uri) or is_http(uri) else normalize_uri(uri)
    doc = load_json(io.read_text(href), f"{uri} (a STAC document)")
    if not isinstance(doc, dict):
        raise InputDataError(f"{uri} is not a STAC document (a JSON object with a type)")
    kind = doc.get("type")
    try:
        if kind == "FeatureCollection":
            collection = pystac.ItemCollection.from_dict(doc, preserve_dict=False)
            for item in collection.items:
                _absolutize(item, href)
                yield item
            return
        obj = pystac.read_dict(doc, href=href, stac_io=io)
    except (pystac.STACError, pystac.STACTypeError) as exc:
        raise InputDataError(f"{uri} is not a STAC item, collection or catalog: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputDataError(f"{uri} is not a valid STAC document: {type(exc).__name__} {exc}") from None
    if isinstance(obj, pystac.Item):
        yield obj
        return
    if not isinstance(obj, pystac.Catalog):
        raise InputDataError(f"{uri} is a STAC {type(obj).__name__}, not an item, collection or catalog")
    obj._stac_io = io
    yield from _walk(obj, out, set())


def _absolutize(item: pystac.Item, base: str) -> None:
    """Asset hrefs of an item read from an item collection document, made absolute against it."""
    from pystac.utils import make_absolute_href

    for asset in item.assets.values():
        asset.href = make_absolute_href(asset.href, base)


MAX_DEPTH = 32
"""Child catalogs followed at most this deep (the open-data catalogs nest 2 or 3 levels)."""


def _walk(catalog: pystac.Catalog, out: SceneInputs, seen: set[str], depth: int = 0) -> Iterator[pystac.Item]:
    """Items of a catalog and its children, depth first; unreadable links reported, skipped;
    children deeper than :data:`MAX_DEPTH` reported, not followed."""
    here = catalog.get_self_href() or catalog.id
    if here in seen:
        return
    if depth > MAX_DEPTH:
        out.skipped.append(f"{here} nests catalogs more than {MAX_DEPTH} levels deep; not followed")
        return
    seen.add(here)
    root = catalog.get_root() or catalog
    for link in catalog.get_links(pystac.RelType.ITEM):
        target = _resolve(link, root, here, out)
        if isinstance(target, pystac.Item):
            yield target
    for link in catalog.get_links(pystac.RelType.CHILD):
        target = _resolve(link, root, here, out)
        if isinstance(target, pystac.Catalog):
            yield from _walk(target, out, seen, depth + 1)


def _resolve(
    link: pystac.Link, root: pystac.Catalog, here: str, out: SceneInputs
) -> pystac.STACObject | None:
    href = link.get_absolute_href() or link.href
    try:
        target = link.resolve_stac_object(root=root).target
        return target if isinstance(target, pystac.STACObject) else None
    except Exception as exc:  # pystac wraps the reader's error; a malformed document: its own types vary
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, InputDataError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            out.skipped.append(f"{href} (listed in {here}) cannot be read: {cause}; skipped")
        else:
            out.skipped.append(f"{href} (listed in {here}) is not a readable STAC document ({exc}); skipped")
    return None


def _search_items(stac: StacSection, out: SceneInputs) -> Iterator[pystac.Item]:
    """The items a STAC API search returns (pystac-client), at most ``max_items``."""
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    assert stac.search is not None
    try:
        client = Client.open(stac.search, timeout=SEARCH_TIMEOUT_S)
        search = client.search(
            bbox=stac.bbox,
            datetime=stac.datetime,
            collections=stac.collections,
            max_items=stac.max_items,
        )
        found = False
        pages: set[tuple[str, ...]] = set()
        count = 0
        for page in search.pages():
            ids = tuple(item.id for item in page.items)
            if ids in pages:  # a "next" link that leads back: paged forever otherwise
                out.skipped.append(
                    f"the search of {stac.search} returned the same page of {len(ids)} items twice (its "
                    f"'next' link loops); stopped after {count} items"
                )
                break
            pages.add(ids)
            for item in page.items:
                found = True
                count += 1
                yield item
    except APIError as exc:
        raise InputDataError(f"STAC API {stac.search} refused the search: {str(exc)[:300]}") from None
    except (OSError, ValueError) as exc:
        raise InputDataError(f"STAC API {stac.search} cannot be searched: {str(exc)[:300]}") from None
    except Exception as exc:  # pystac-client's errors for a landing page that is no STAC API
        if isinstance(exc, (InputDataError, ConfigError)):
            raise
        raise InputDataError(
            f"{stac.search} is not a STAC API that can be searched: {str(exc)[:300]}"
        ) from None
    if not found:
        terms = ", ".join(
            f"{k} {v}"
            for k, v in (("bbox", stac.bbox), ("datetime", stac.datetime), ("collections", stac.collections))
            if v is not None
        )
        out.skipped.append(f"the search of {stac.search} ({terms or 'no terms'}) returned no item")
