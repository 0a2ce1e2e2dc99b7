"""Real HTTP servers on 127.0.0.1 for the STAC tests: a static file server (a catalog as a
web server or a bucket website serves it) and a small STAC API (landing page, conformance,
item search with bbox / datetime / collections filters and paging), which pystac-client
talks to as it talks to any STAC API."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

from shapely.geometry import box, shape

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]


class _Quiet(SimpleHTTPRequestHandler):
    """Static files with HTTP range requests (``Range: bytes=a-b`` -> 206), as S3, CDNs and
    web servers answer them: GDAL reads COGs over HTTP by ranges."""

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if wanted is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(wanted.group(1))
        end = min(int(wanted.group(2)) if wanted.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return None
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(data)


@contextlib.contextmanager
def static_server(folder: str) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1; yields the base URL (no trailing slash)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _matches(item: dict, bbox: list[float] | None, collections: list[str] | None, when: str | None) -> bool:
    if collections and item.get("collection") not in collections:
        return False
    if bbox and not shape(item["geometry"]).intersects(box(*bbox)):
        return False
    if when:
        start, _, end = when.partition("/")
        t = item["properties"]["datetime"]
        if "/" not in when:
            return t[:10] == start[:10] if len(start) == 10 else t == start
        if start not in ("", "..") and t < start:
            return False
        if end not in ("", "..") and t > end:
            return False
    return True


class _Api(SimpleHTTPRequestHandler):
    items: ClassVar[list[dict]] = []
    page = 2
    loop = False
    requests: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path in ("", "/"):
            base = self._base()
            self._send(
                {
                    "type": "Catalog",
                    "id": "test-api",
                    "stac_version": "1.1.0",
                    "description": "STAC API for tests",
                    "conformsTo": CONFORMS,
                    "links": [
                        {"rel": "self", "href": base + "/", "type": "application/json"},
                        {"rel": "root", "href": base + "/", "type": "application/json"},
                        {
                            "rel": "search",
                            "href": base + "/search",
                            "type": "application/geo+json",
                            "method": "GET",
                        },
                        {
                            "rel": "search",
                            "href": base + "/search",
                            "type": "application/geo+json",
                            "method": "POST",
                        },
                    ],
                }
            )
        elif url.path == "/conformance":
            self._send({"conformsTo": CONFORMS})
        elif url.path == "/search":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            terms: dict[str, Any] = {
                "bbox": [float(x) for x in q["bbox"].split(",")] if "bbox" in q else None,
                "collections": q["collections"].split(",") if "collections" in q else None,
                "datetime": q.get("datetime"),
                "token": int(q.get("token", 0)),
            }
            self._search(terms)
        else:
            self._send({"code": "NotFound", "description": self.path}, 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self._search({**body, "token": int(body.get("token", 0))})

    def _search(self, terms: dict[str, Any]) -> None:
        type(self).requests.append(terms)
        hits = [
            i
            for i in self.items
            if _matches(i, terms.get("bbox"), terms.get("collections"), terms.get("datetime"))
        ]
        start = terms["token"]
        links = []
        if self.loop:  # a broken API whose "next" link always leads back to the first page
            links.append({"rel": "next", "href": self._base() + "/search", "method": "POST", "merge": True,
                          "body": {"token": 0}})  # fmt: skip
        elif start + self.page < len(hits):
            links.append(
                {
                    "rel": "next",
                    "href": self._base() + "/search",
                    "method": "POST",
                    "merge": True,
                    "body": {"token": start + self.page},
                }
            )
        self._send({"type": "FeatureCollection", "features": hits[start : start + self.page], "links": links})


@contextlib.contextmanager
def stac_api(items: list[dict], loop: bool = False) -> Iterator[tuple[str, list[dict]]]:
    """A STAC API serving ``items`` (dicts with absolute asset hrefs), two per page (with
    ``loop``, every page's ``next`` link leads back to the first); yields its landing page URL
    and the list of search requests it answered."""
    handler = type("Api", (_Api,), {"items": items, "requests": [], "loop": loop})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
