"""What a request sends, read and checked before any work is done: the body under a size
limit and deadlines, a multipart file, an ``s3://`` URI or STAC item under the allowed
prefixes (403 otherwise: no local files, no other schemes or hosts), and an image's header
(a raster, not too large, the model's band count).

Whatever a request names is hostile: these are the service's only ways in.
"""

import asyncio
import json
import re

import pystac
from fastapi import HTTPException, Request

from resseg_ray.config import ServeSection, StacSection
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.stac import item_raster
from resseg_ray.geo.storage import StorageSettings, gdal_env, read_bytes
from resseg_ray.jsondoc import load_json
from resseg_ray.models.bundle import BundleInfo

__all__ = [
    "PAIR",
    "ImageRequest",
    "check_image",
    "check_uri",
    "image_request",
    "pair_request",
    "read_body",
    "request_scene",
]

_SEGMENT = re.compile(r"[A-Za-z0-9!_.*'()=+,;@&$ -]+")
ImageRequest = tuple[str | None, bytes]
"""What an image request sends: ``(uri, b"")`` for an allowed s3:// image or STAC item, else
``(None, the GeoTIFF's bytes)``."""


def check_uri(uri: object, allowed: list[str]) -> str:
    """``uri`` when it is ``s3://bucket/key`` under one of ``allowed`` (s3:// prefixes);
    otherwise an HTTP 403 that says why (other schemes, local paths, ``..``)."""
    if not isinstance(uri, str) or not uri:
        raise HTTPException(400, 'the JSON body must be {"uri": "s3://bucket/key.tif"}')
    if not uri.startswith("s3://"):
        raise HTTPException(403, f"{uri!r}: only s3:// URIs under the allowed prefixes are accepted")
    parts = uri[len("s3://") :].split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") or not _SEGMENT.fullmatch(p) for p in parts):
        raise HTTPException(403, f"{uri!r} is not a plain s3://bucket/key URI")
    for prefix in allowed:
        p = prefix if prefix.endswith("/") else prefix + "/"
        if uri.startswith(p):
            return uri
    allowed_text = ", ".join(allowed) if allowed else "none are configured (serve.allowed_prefixes)"
    raise HTTPException(403, f"{uri!r} is outside the allowed prefixes: {allowed_text}")


def request_scene(doc: dict, allowed: list[str], settings: StorageSettings) -> str:
    """The raster a JSON body names: ``{"uri": "s3://.../scene.tif"}``, a STAC item by URI
    (``{"uri": "s3://.../item.json"}``) or inline (``{"item": {...}}``), with an optional
    ``"asset"`` key (default: the first of analytic, visual, data). The item's and the asset's
    URIs must both lie under ``allowed`` (403 otherwise); a document that is no STAC item, or
    an item without a raster asset, is a 422 that says why."""
    asset = doc.get("asset")
    if asset is not None and not isinstance(asset, str):
        raise HTTPException(400, '"asset" must be an asset key such as "visual"')
    try:
        StacSection(asset=asset)
    except ConfigError as exc:
        raise HTTPException(400, f'"asset": {exc}') from None
    raw = doc.get("item")
    if raw is None:
        uri = check_uri(doc.get("uri"), allowed)
        if not uri.lower().endswith(".json"):
            return uri
        try:
            raw = json.loads(read_bytes(uri, settings))
        except InputDataError as exc:
            raise HTTPException(404 if "does not exist" in str(exc) else 422, str(exc)) from None
        except ValueError:
            raise HTTPException(422, f"{uri} is not a STAC item (not JSON)") from None
        href: str | None = uri
    else:
        href = None
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        raise HTTPException(422, "the STAC document is not an item (a Feature with assets); give one item")
    try:
        item = pystac.Item.from_dict(raw, preserve_dict=False)
        if href is not None:
            item.set_self_href(href)
        raster, _ = item_raster(item, asset)
    except InputDataError as exc:
        raise HTTPException(422, str(exc)) from None
    except Exception as exc:  # pystac's errors for a malformed item
        raise HTTPException(422, f"not a valid STAC item: {exc}") from None
    return check_uri(raster, allowed)


async def read_body(request: Request, limit: int, idle_s: float = 10.0, total_s: float = 300.0) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes, and with 408
    when nothing arrives for ``idle_s`` seconds or the whole body takes over ``total_s``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body ({int(declared)} bytes) exceeds the limit of {limit} bytes")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_s
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        wait = min(idle_s, deadline - loop.time())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            break
        except TimeoutError:
            what = f"nothing for {idle_s:g} s" if wait >= idle_s else f"not all within {total_s:g} s"
            raise HTTPException(408, f"the request body stalled ({what}); send it again") from None
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request, body: bytes, max_files: int):
    """The parsed multipart ``body`` (400 when unreadable)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    try:
        return await MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=10).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"unreadable multipart body: {exc.message}") from None


async def multipart_file(request: Request, body: bytes) -> bytes:
    """The one file of a multipart body, whatever its field's name (400 when there is none)."""
    from starlette.datastructures import UploadFile

    form = await _form(request, body, 1)
    files = [v for v in form.values() if isinstance(v, UploadFile)]
    if not files:
        raise HTTPException(400, "the multipart body holds no file; send the GeoTIFF as a file field")
    data = await files[0].read()
    await form.close()
    return data


def check_image(
    uri: str, info: BundleInfo, max_pixels: int, settings: StorageSettings, role: str = "image"
) -> None:
    """Header checks before any pixel is decoded: a raster (415), not too large (413), with
    the model's band count (422; a damage network's: half of it, per scene of the pair, whose
    ``role`` (``pre`` or ``post``) the answer names); a missing S3 object is 404."""
    bands = info.in_bands
    names = list(info.band_names)
    if role != "image":  # one scene of a pair: the pre (or post) half of the damage network's bands
        bands //= 2
        names = [n.split(":", 1)[-1] for n in names[:bands]]
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with gdal_env(settings), rasterio.open(uri, driver=settings.driver) as ds:
            width, height, count = ds.width, ds.height, ds.count
    except RasterioIOError as exc:
        if uri.startswith("s3://") and ("No such file" in str(exc) or "does not exist" in str(exc)):
            raise HTTPException(404, f"no readable object at {uri}") from None
        raise HTTPException(
            415, f"the {role} is not a readable raster (send a GeoTIFF): {str(exc).splitlines()[0]}"
        ) from None
    if width * height > max_pixels:
        raise HTTPException(
            413, f"the {role} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if count not in (bands, bands + 1):  # + 1: an alpha band
        raise HTTPException(
            422, f"the {role} has {count} bands but the model expects {bands} ({', '.join(names)})"
        )


PAIR = ("pre", "post")
"""The two images of a damage request, as its JSON keys and multipart fields name them."""


async def pair_request(
    request: Request, cfg: ServeSection, settings: StorageSettings
) -> dict[str, ImageRequest]:
    """The two images of ``/v1/damage``, by role (``pre``, ``post``): JSON ``{"pre": {...},
    "post": {...}}`` whose members are what ``/v1/segment``'s JSON body may be (an allowed s3://
    image or STAC item), or a multipart body with the files ``pre`` and ``post``; 400 otherwise."""
    limit = int(cfg.max_body_mb * 1024 * 1024)
    body = await read_body(request, limit, cfg.body_idle_timeout_s, cfg.body_timeout_s)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    shape = (
        'send the pair as JSON {"pre": {"uri": "s3://..."}, "post": {"uri": "s3://..."}} or as the '
        "multipart files pre and post"
    )
    if ctype == "application/json":
        try:
            doc = load_json(body, "the JSON body")
        except InputDataError as exc:
            raise HTTPException(400, str(exc)) from None
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), dict) for k in PAIR):
            raise HTTPException(400, shape)
        out: dict[str, ImageRequest] = {}
        for role in PAIR:
            uri = await asyncio.to_thread(request_scene, doc[role], cfg.allowed_prefixes, settings)
            out[role] = (uri, b"")
        return out
    if ctype != "multipart/form-data":
        raise HTTPException(400, shape)
    files = await multipart_files(request, body, PAIR)
    return {role: (None, data) for role, data in files.items()}


async def multipart_files(request: Request, body: bytes, names: tuple[str, ...]) -> dict[str, bytes]:
    """The files ``names`` of a multipart body (400 when one is missing or empty)."""
    from starlette.datastructures import UploadFile

    form = await _form(request, body, len(names))
    out = {}
    try:
        for name in names:
            field = form.get(name)
            data = await field.read() if isinstance(field, UploadFile) else b""
            if not data:
                raise HTTPException(
                    400, f"the multipart body holds no file {name!r}; send the files {', '.join(names)}"
                )
            out[name] = data
    finally:
        await form.close()
    return out


async def image_request(request: Request, cfg: ServeSection, settings: StorageSettings) -> ImageRequest:
    """What an image request sends, read once for /v1/segment and /v1/scenes: ``(uri, b"")``
    for JSON naming an allowed s3:// image or STAC item, else ``(None, the GeoTIFF's bytes)``
    from a raw or multipart body (400 when empty or malformed, 413 over the limit)."""
    limit = int(cfg.max_body_mb * 1024 * 1024)
    body = await read_body(request, limit, cfg.body_idle_timeout_s, cfg.body_timeout_s)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            doc = load_json(body, "the JSON body")
        except InputDataError as exc:
            raise HTTPException(400, str(exc)) from None
        if not isinstance(doc, dict):
            raise HTTPException(400, 'the JSON body must be {"uri": "s3://bucket/key.tif"}')
        return await asyncio.to_thread(request_scene, doc, cfg.allowed_prefixes, settings), b""
    if ctype == "multipart/form-data":
        body = await multipart_file(request, body)
    if not body:
        raise HTTPException(400, "empty body: send a GeoTIFF")
    return None, body
