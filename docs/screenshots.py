"""Screenshots of the map page for the README, taken by the test browser (Debian's chromium
through Playwright) from a service on the demo's outputs: run after `make demo`.

    .venv/bin/python docs/screenshots.py          # writes docs/map-page.png and docs/map-mask.png
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.chdir(ROOT)


def main() -> None:
    import ray
    from playwright.sync_api import sync_playwright
    from ray import serve

    from resseg_ray.config import load_config
    from resseg_ray.serving.app import build_app
    from tests.helpers import CHROMIUM, free_port, poll

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(load_config(None, ["serve.cpus_per_replica=0.5", "serve.ingress_cpus=0.25"])),
        name="screenshots",
        route_prefix="/",
    )
    url = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/#scene=test_02-analytic")
        page.wait_for_selector("path.leaflet-interactive", timeout=60_000)
        poll(
            lambda: page.evaluate("[...document.querySelectorAll('.leaflet-tile')].every(t => t.complete)"),
            timeout=60,
            what="tiles",
        )
        page.screenshot(path="docs/map-page.png")
        page.check("#overlay-mask")
        page.evaluate("map.setZoom(map.getZoom() + 2)")
        page.wait_for_timeout(500)
        poll(
            lambda: page.evaluate("[...document.querySelectorAll('.leaflet-tile')].every(t => t.complete)"),
            timeout=60,
            what="tiles",
        )
        page.screenshot(path="docs/map-mask.png")
        browser.close()
    serve.shutdown()
    print("wrote docs/map-page.png, docs/map-mask.png")


if __name__ == "__main__":
    main()
