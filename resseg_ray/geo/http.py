"""Small documents over HTTP(S) (STAC catalogs and items): read whole under a deadline for the
whole document and a size limit, with errors that name the URL."""

from __future__ import annotations

from resseg_ray.errors import InputDataError

HTTP_TIMEOUT_S = 30.0
"""Deadline of one HTTP(S) read (connection and each wait for data), here and in GDAL."""
MAX_HTTP_BYTES = 256 * 2**20
"""Largest small file (a STAC document) read whole over HTTP(S)."""


def http_get(url: str) -> bytes:
    """GET a small file, with a deadline for the whole document (a server that trickles it a
    byte at a time is abandoned too) and a size limit; errors name the URL."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + HTTP_TIMEOUT_S
    chunks: list[bytes] = []
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
            while size <= MAX_HTTP_BYTES:
                if time.monotonic() > deadline:
                    raise InputDataError(
                        f"{url} did not arrive within {HTTP_TIMEOUT_S:g} s ({size} bytes so far); not read"
                    )
                chunk = resp.read1(min(2**20, MAX_HTTP_BYTES + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        data = b"".join(chunks)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise InputDataError(f"{url} does not exist (HTTP 404)") from None
        raise InputDataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputDataError(f"{url} cannot be reached: {reason}") from None
    if len(data) > MAX_HTTP_BYTES:
        raise InputDataError(f"{url} is larger than {MAX_HTTP_BYTES // 2**20} MiB; not read")
    return data


def http_exists(url: str) -> bool:
    """Whether ``url`` answers a HEAD request (404: no); other errors name the URL."""
    import urllib.error
    import urllib.request

    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise InputDataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InputDataError(f"{url} cannot be reached: {getattr(exc, 'reason', exc)}") from None
