"""Storage URIs: local paths, ``file://`` and ``s3://``, for GDAL (rasterio) and fsspec (s3fs);
``http(s)://`` for reading only (STAC catalogs and the COGs they list).

Rasters are read by GDAL directly from their URI (``s3://`` becomes ``/vsis3/``); listing,
existence, small-file reads and deletions go through fsspec, local and S3 alike
(:func:`filesystem`), and fail as one :class:`~resseg_ray.errors.InputDataError` naming the URI.
What differs stays apart: the checks of a local destination (a probe file, a parent that is a
file), and writes (a local file is fsync-ed, then renamed into place; an object is one PUT).
S3-compatible endpoints (MinIO, moto, Ceph) are set the standard way:
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` or the ``storage.endpoint_url`` configuration
field. Every output is written atomically: to a temporary local file first, then renamed
(local) or uploaded in one PUT (S3).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fsspec import AbstractFileSystem

from resseg_ray.config import StorageSection
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.http import HTTP_TIMEOUT_S, http_exists, http_get

UNTRUSTED_DRIVER = "GTiff"
"""The GDAL driver of rasters a client names: GeoTIFF (COGs are GeoTIFFs). A GeoTIFF names no
other file or URL; VRT, GDAL's WMS/WCS, netCDF, HDF and others can."""
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class StorageSettings:
    """Resolved S3 settings, picklable so Ray tasks on other nodes read the same endpoint."""

    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False
    untrusted: bool = False
    """The rasters named come from a client (Serve): open them as GeoTIFF/COG only
    (:data:`UNTRUSTED_DRIVER`; a VRT or another format could name a file on the server's
    disk or a URL), without sidecar files (``.aux.xml``, ``.ovr``)."""

    @classmethod
    def resolve(cls, cfg: StorageSection | None = None) -> StorageSettings:
        """Configuration fields first, then the standard AWS_* environment variables."""
        cfg = cfg or StorageSection()
        endpoint = (
            cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            parsed = urlparse(endpoint)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(
                    f"storage.endpoint_url {endpoint!r} must look like http://host:port or https://host"
                )
        region = cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(endpoint_url=endpoint or None, region=region or None, anonymous=cfg.anonymous)

    def gdal_options(self) -> dict[str, str]:
        """GDAL configuration options for /vsis3/ reads with these settings."""
        opts = {
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_HTTP_MAX_RETRY": "3",
            "GDAL_HTTP_RETRY_DELAY": "0.5",
            "GDAL_HTTP_TIMEOUT": str(int(HTTP_TIMEOUT_S)),
            "GDAL_HTTP_CONNECTTIMEOUT": str(int(HTTP_TIMEOUT_S)),
        }
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            opts["AWS_S3_ENDPOINT"] = parsed.netloc
            opts["AWS_HTTPS"] = "YES" if parsed.scheme == "https" else "NO"
            opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
        if self.region:
            opts["AWS_REGION"] = self.region
        if self.anonymous:
            opts["AWS_NO_SIGN_REQUEST"] = "YES"
        if self.untrusted:
            opts["GDAL_PAM_ENABLED"] = "NO"  # no .aux.xml read (nor written) beside the file
            opts["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"  # no sidecar .ovr/.msk looked up
            opts["GDAL_HTTP_MAX_RETRY"] = "0"
        return opts

    @property
    def driver(self) -> str | None:
        """The one GDAL driver rasters may be opened with (None: any)."""
        return UNTRUSTED_DRIVER if self.untrusted else None

    def fsspec_options(self) -> dict[str, Any]:
        """Keyword arguments of ``s3fs.S3FileSystem`` for these settings."""
        opts: dict[str, Any] = {"anon": self.anonymous}
        if self.endpoint_url:
            opts["endpoint_url"] = self.endpoint_url
        if self.region:
            opts["client_kwargs"] = {"region_name": self.region}
        return opts


def is_s3(uri: str) -> bool:
    """True for ``s3://bucket/key`` URIs."""
    return str(uri).startswith("s3://")


def is_http(uri: str) -> bool:
    """True for ``http://`` and ``https://`` URLs (read-only)."""
    return str(uri).startswith(("http://", "https://"))


def is_remote(uri: str) -> bool:
    """True for URIs that are not local files (s3://, http(s)://)."""
    return is_s3(uri) or is_http(uri)


def local_path(uri: str | os.PathLike[str]) -> str:
    """The filesystem path of a local URI (``/x``, ``x``, ``file:///x``)."""
    uri = os.fspath(uri)
    if uri.startswith("file://"):
        return urlparse(uri).path
    if is_http(uri):
        raise ConfigError(f"{uri}: http(s) URLs can be read, not written; give a local path or s3:// URI")
    if "://" in uri:
        raise ConfigError(f"{uri}: only local paths, file://, s3:// and (to read) http(s):// are supported")
    return uri


def normalize_uri(uri: str | os.PathLike[str]) -> str:
    """``s3://`` and ``http(s)://`` URIs unchanged; local ones as absolute paths (stable keys)."""
    uri = os.fspath(uri)
    if is_remote(uri):
        return uri
    return str(Path(local_path(uri)).resolve())


def workdir() -> str:
    """Base of relative paths: ``RESSEG_WORKDIR`` when set (e.g. for ``ray job submit``, whose
    working directory is a temporary copy), else the current directory."""
    return os.environ.get("RESSEG_WORKDIR") or os.getcwd()


def resolve_uri(uri: str, base: str | None = None) -> str:
    """An s3:// or http(s) URI unchanged; a relative local path made absolute against
    ``base``/:func:`workdir`."""
    if is_remote(uri):
        return uri.rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return normalize_uri(os.path.join(base or workdir(), uri))


def scene_stem(uri: str) -> str:
    """The file name of a scene without its raster suffix (``.../D12.tif`` -> ``D12``): the one
    stem every output, label raster and report of a scene is named after."""
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    for suffix in RASTER_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def join_uri(base: str, *parts: str) -> str:
    """Join path components onto a local or s3:// base."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(local_path(base), *parts))


def filesystem(uri: str, settings: StorageSettings) -> AbstractFileSystem:
    """The fsspec filesystem serving ``uri`` (s3fs for ``s3://``, else the local one)."""
    if is_s3(uri):
        import s3fs

        return s3fs.S3FileSystem(**settings.fsspec_options())
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()


def _fs_path(uri: str) -> str:
    """What to hand to :func:`filesystem`'s methods for ``uri``."""
    return uri if is_s3(uri) else local_path(uri)


def _uri_of(found: str, pattern: str) -> str:
    """A path fsspec listed for ``pattern`` as a URI of the same kind: ``s3://bucket/key``, or a
    local path relative when the pattern was."""
    if is_s3(pattern):
        return "s3://" + found
    return found if os.path.isabs(local_path(pattern)) else os.path.relpath(found)


@contextlib.contextmanager
def _said(uri: str, doing: str = "read") -> Iterator[None]:
    """Storage errors of a block as one :class:`InputDataError` naming ``uri`` and what to do
    (the project's own errors pass as they are)."""
    try:
        yield
    except (InputDataError, ConfigError):
        raise
    except FileNotFoundError:
        raise InputDataError(f"{uri} does not exist") from None
    except IsADirectoryError:
        raise InputDataError(f"{uri} is a directory, not a file") from None
    except Exception as exc:
        if is_s3(uri):
            raise InputDataError(explain_s3_error(uri, exc)) from None
        raise InputDataError(f"cannot {doing} {uri}: {exc}") from None


@contextlib.contextmanager
def gdal_env(settings: StorageSettings) -> Iterator[None]:
    """A rasterio/GDAL environment that reads s3:// URIs through the configured endpoint."""
    # GDAL reads credentials itself (AWS_* variables, ~/.aws, instance metadata). A dummy
    # rasterio session stops rasterio from building a boto3 session on every entry, which
    # made each window read ~10x slower whenever AWS credentials were in the environment.
    import rasterio  # here, not at import: the networks and bundles need no GDAL (a GPU image)
    from rasterio.session import DummySession

    with rasterio.Env(session=DummySession(), **settings.gdal_options()):
        yield


def gdal_path(uri: str) -> str:
    """What to hand to rasterio.open for a URI."""
    if is_http(uri):
        return "/vsicurl/" + uri
    return uri if is_s3(uri) else local_path(uri)


def explain_s3_error(uri: str, exc: BaseException) -> str:
    """A message for a failed S3 access that says what to do about it."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, FileNotFoundError) or "does not exist" in low or "nosuchkey" in low or "404" in low:
        return f"{uri} does not exist (check the bucket and key, e.g. with `aws s3 ls`)"
    if "nosuchbucket" in low:
        return f"{uri}: the bucket does not exist"
    if "credential" in low or "signature" in low or "access denied" in low or "403" in low:
        return (
            f"{uri}: access denied or no AWS credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "or AWS_PROFILE (storage.anonymous: true for public buckets)"
        )
    if "connect" in low or "endpoint" in low:
        return f"{uri}: cannot reach the S3 endpoint ({text}); check storage.endpoint_url / AWS_ENDPOINT_URL"
    return f"{uri}: {text}"


def exists(uri: str, settings: StorageSettings) -> bool:
    """Whether a file exists at ``uri``."""
    if is_http(uri):
        return http_exists(uri)
    with _said(uri):
        return bool(filesystem(uri, settings).exists(_fs_path(uri)))


def check_writable(uri: str, settings: StorageSettings, what: str = "the output folder") -> None:
    """Before any work: a folder (or s3:// prefix) that can be created or written to. A path that
    is a file, under a file, or in a folder this process may not write, and a missing or
    unreachable bucket, are a :class:`ConfigError` naming ``what`` (e.g. ``--out``)."""
    if is_s3(uri):
        bucket = uri[len("s3://") :].split("/", 1)[0]
        try:
            ok = bool(filesystem(uri, settings).exists(bucket))
        except Exception as exc:
            raise ConfigError(f"{what} {uri}: {explain_s3_error(uri, exc)}") from None
        if not ok:
            raise ConfigError(f"{what} {uri}: the bucket {bucket!r} does not exist (or is not visible)")
        return
    path = Path(local_path(uri)).absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {uri} is a file, not a folder; give a folder for the outputs")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {uri} cannot be created: {existing} is a file")
    try:  # a probe file: permissions, read-only file systems, quotas (root passes os.access)
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".resseg-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {uri} cannot be written: {existing}: {exc.strerror}") from None


def check_output_file(uri: str, settings: StorageSettings, what: str, inputs: Sequence[str] = ()) -> None:
    """Before any work: ``uri`` may be written as a file: not one of the ``inputs`` (a job must
    never overwrite what it reads), not a folder, in a folder that can be written."""
    if normalize_uri(uri) in {normalize_uri(i) for i in inputs}:
        raise ConfigError(
            f"{what} {uri} is also an input of this job; writing it would destroy it: choose another file"
        )
    if is_s3(uri):
        check_writable(uri.rsplit("/", 1)[0], settings, what)
        return
    path = Path(local_path(uri)).absolute()
    if path.is_dir():
        raise ConfigError(f"{what} {uri} is a folder; give a file name")
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        raise ConfigError(f"{what} {uri} cannot be written: {above} is a file, not a folder")
    check_writable(str(path.parent), settings, what)


def read_bytes(uri: str, settings: StorageSettings) -> bytes:
    """The whole content of a (small) file."""
    if is_http(uri):
        return http_get(uri)
    with _said(uri):
        return bytes(filesystem(uri, settings).cat_file(_fs_path(uri)))


def download(uri: str, dest_dir: str, settings: StorageSettings) -> str:
    """Copy a remote file into ``dest_dir`` (local files are returned as they are)."""
    if not is_remote(uri):
        return local_path(uri)
    dest = os.path.join(dest_dir, uri.rstrip("/").rsplit("/", 1)[-1])
    Path(dest).write_bytes(read_bytes(uri, settings))
    return dest


def _may_be_folder(uri: str, suffixes: Sequence[str]) -> bool:
    """Whether ``uri`` is worth asking whether it is a folder: a local path (cheap to ask), one
    ending in ``/``, or an ``s3://`` key without a raster suffix (one request each, not one per
    scene of a long list)."""
    return not is_s3(uri) or uri.endswith("/") or not uri.lower().endswith(tuple(suffixes))


def expand_uris(patterns: list[str], settings: StorageSettings, suffixes=RASTER_SUFFIXES) -> list[str]:
    """Expand globs (``*``, ``?``, ``[``) and folders or prefixes (a local folder, an ``s3://``
    prefix) into a sorted list of files with one of ``suffixes`` below them, local and S3 alike
    (fsspec). Local results keep the pattern's form (relative stays relative).

    Plain file URIs are kept as given (checked later, where they are opened).
    """
    out: list[str] = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        fs, path = filesystem(pattern, settings), _fs_path(pattern)
        with _said(pattern, "list"):
            if any(c in path for c in "*?["):
                found = fs.glob(path)
                if not found:
                    raise InputDataError(f"{pattern} matches no files")
            elif _may_be_folder(pattern, suffixes) and fs.isdir(path):
                found = [f for f in fs.find(path) if f.lower().endswith(suffixes)]
                if not found:
                    raise InputDataError(f"{pattern} holds no files ending in {', '.join(suffixes)}")
            elif pattern.endswith("/"):  # an S3 prefix with nothing under it
                raise InputDataError(f"{pattern} matches no files")
            else:
                out.append(pattern)
                continue
        out.extend(sorted(_uri_of(f, pattern) for f in found))
    return out


@contextlib.contextmanager
def atomic_output(uri: str, settings: StorageSettings, suffix: str | None = None) -> Iterator[str]:
    """Yield a local temporary path; on success it becomes ``uri`` in one step.

    Local destinations: the temporary file lives in the destination directory and is
    renamed over it (``os.replace``). S3 destinations: the file is uploaded with one PUT,
    which S3 makes visible atomically. On any exception nothing appears at ``uri``.
    """
    if suffix is None:
        suffix = os.path.splitext(uri)[1]
    if is_s3(uri):
        tmpdir = tempfile.mkdtemp(prefix="resseg-upload-")
        tmp = os.path.join(tmpdir, "part" + suffix)
        try:
            yield tmp
            fs = filesystem(uri, settings)
            try:
                fs.put_file(tmp, uri)
            except Exception as exc:
                raise InputDataError(explain_s3_error(uri, exc)) from None
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return
    dest = Path(local_path(uri))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part" + suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        with open(tmp, "rb+") as f:  # on disk before the rename publishes it (power loss)
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_file(uri: str, settings: StorageSettings) -> None:
    """Delete one file or object (nothing when absent)."""
    fs, path = filesystem(uri, settings), _fs_path(uri)
    with _said(uri, "delete"), contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def remove_tree(uri: str, settings: StorageSettings, drop_empty_parent: bool = False) -> None:
    """Delete a folder or prefix and everything under it (nothing when absent); with
    ``drop_empty_parent`` also its parent folder when that is left empty (S3 has no empty
    folders)."""
    fs, path = filesystem(uri, settings), _fs_path(uri)
    with _said(uri, "delete"):
        if fs.exists(path):
            fs.rm(path, recursive=True)
    if drop_empty_parent and not is_s3(uri):  # S3 has no folders to leave behind
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path.rstrip("/")))


@contextlib.contextmanager
def removed_on_failure(uris: Sequence[str], settings: StorageSettings) -> Iterator[None]:
    """Delete ``uris`` (files or folders the block creates) when the block raises, so a failed
    run leaves nothing half-made; the block's own error is what propagates."""
    try:
        yield
    except BaseException:
        for uri in uris:
            with contextlib.suppress(Exception):
                if filesystem(uri, settings).isdir(_fs_path(uri)):
                    remove_tree(uri, settings)
                else:
                    remove_file(uri, settings)
        raise


def write_bytes(uri: str, data: bytes, settings: StorageSettings) -> None:
    """Write a whole file atomically."""
    with atomic_output(uri, settings) as tmp:
        Path(tmp).write_bytes(data)
