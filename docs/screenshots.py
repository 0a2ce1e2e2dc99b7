"""Screenshots of the map page for the README and the manual, taken by the test browser (Debian's chromium
through Playwright) from a service on the demo's outputs: run after `make demo`.

    .venv/bin/python docs/screenshots.py          # docs/map-page.png, map-mask.png, map-refined.png
    .venv/bin/python docs/screenshots.py --mlflow # docs/mlflow-comparison.png only
    .venv/bin/python docs/screenshots.py --josm   # docs/josm-in-context.png only

The refinement screenshot annotates 7 % of test_01 with its true footprints (as
``bench/map_page.py`` does), refines for ``--epochs`` (default 5) from the page and shows
the refined map with its figures; annotations, refinements and their MLflow store live in a
temporary folder.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.chdir(ROOT)


def tiles_loaded(page) -> None:
    """Wait (with a deadline) until every map tile of ``page`` has loaded."""
    from tests.helpers import poll

    poll(
        lambda: page.evaluate("[...document.querySelectorAll('.leaflet-tile')].every(t => t.complete)"),
        timeout=60,
        what="tiles",
    )


def mlflow_comparison(
    out: str = "docs/mlflow-comparison.png",
    store: str = "sqlite:///mlflow.db",
    experiment_name: str | None = None,
) -> None:
    """The demo's MLflow experiment as ``compare_depths.py``'s link opens it (model training view,
    runs by test mean F1, the comparison in its description), from an ``mlflow server`` on the
    demo's store (``mlflow.db``), in the test browser."""
    import subprocess
    import urllib.request

    from playwright.sync_api import sync_playwright

    from resseg_ray.config import load_config
    from resseg_ray.train import tracking
    from tests.helpers import CHROMIUM, free_port, poll

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen(
        [exe, "server", "--backend-store-uri", store, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        poll(lambda: urllib.request.urlopen(url + "/health", timeout=1).status == 200, timeout=90,
             interval=0.5, what="mlflow server")  # fmt: skip
        name = experiment_name or load_config("configs/demo.yaml").mlflow.experiment
        experiment = tracking.client(url).get_experiment_by_name(name)
        if experiment is None:
            raise SystemExit(f"error: no MLflow experiment {name!r} in {store}: run make demo first")
        link = tracking.experiment_url(url, experiment.experiment_id)
        assert link is not None
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(link)
            page.wait_for_selector("text=Depth comparison", timeout=60_000)
            page.wait_for_function(  # the runs table's rows come after the description
                "() => /\\b[1-9][0-9]* matching run/.test(document.body.innerText)", timeout=60_000
            )
            assistant = page.locator("text=MLflow Assistant")  # a side panel MLflow opens: closed
            if assistant.count():
                page.get_by_role("button", name="Close").last.click(timeout=5_000)
            page.wait_for_timeout(500)  # the table's last paint after the panel closed
            page.screenshot(path=out)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(f"wrote {out}")


def josm_in_context(
    osm: str = "runs/demo-maps/test_01-analytic_buildings.osm",
    scene: str = "data/demo/scenes/test/test_01.tif",
    out: str = "docs/josm-in-context.png",
) -> None:
    """The JOSM file ``make demo`` writes, as a mapper opens it: its ways read back by GDAL's OSM
    driver and drawn over the scene they came from (true colour, a 600 px part), beside the
    file's own first lines (the ``upload="false"`` header, the tags of a way)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pyogrio
    import rasterio
    from rasterio.windows import Window

    pyogrio.set_gdal_config_options({"OSM_USE_CUSTOM_INDEXING": "NO"})  # the file's ids are negative
    ways = pyogrio.read_dataframe(osm, layer="multipolygons")
    with rasterio.open(scene) as src:
        size = 600
        win = Window((src.width - size) // 2, (src.height - size) // 2, size, size)
        rgb = src.read([3, 2, 1], window=win).astype("float32")
        bounds = rasterio.windows.bounds(win, src.transform)
        crs = src.crs
    lo, hi = np.percentile(rgb, [2, 98])
    image = np.clip((rgb - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)
    local = ways.to_crs(crs).cx[bounds[0] : bounds[2], bounds[1] : bounds[3]]
    with open(osm, encoding="utf-8") as f:
        lines = f.read().splitlines()
    way = next(i for i, line in enumerate(lines) if line.lstrip().startswith("<way"))
    end = next(i for i in range(way, len(lines)) if lines[i].lstrip().startswith("</way"))
    tags = [line for line in lines[way:end] if line.lstrip().startswith("<tag")]
    header = lines[1].split(" resseg_ray_source=")[0] + " ...>"  # the source: a local path
    shown = [
        lines[0],
        header,
        *lines[2:4],
        "  ...",
        *lines[way : way + 3],
        "    ...",
        *tags,
        lines[end],
        "  ...",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [1, 1]})
    left.imshow(image, extent=(bounds[0], bounds[2], bounds[1], bounds[3]))
    local.boundary.plot(ax=left, color="#ff2a6d", linewidth=1.2)
    left.set_xlim(bounds[0], bounds[2])
    left.set_ylim(bounds[1], bounds[3])
    left.set_axis_off()
    left.set_title(f"{os.path.basename(osm)}: {len(ways)} buildings, {len(local)} in this part of the scene")
    right.set_axis_off()
    right.text(0, 1, "\n".join(x[:90] for x in shown), family="monospace", fontsize=9, va="top")
    right.set_title("the file JOSM opens (never uploadable)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


def main() -> None:
    import argparse
    import tempfile

    import httpx
    import yaml

    from bench.map_page import annotations_of

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5, help="epochs of the refinement shown")
    p.add_argument("--mlflow", action="store_true", help="only the MLflow comparison screenshot")
    p.add_argument("--store", default="sqlite:///mlflow.db", help="with --mlflow: the MLflow store")
    p.add_argument("--experiment", help="with --mlflow: the experiment (default configs/demo.yaml's)")
    p.add_argument("--josm", action="store_true", help="only the JOSM file drawn over its scene")
    args = p.parse_args()
    if args.mlflow:
        mlflow_comparison(store=args.store, experiment_name=args.experiment)
        return
    if args.josm:
        josm_in_context()
        return
    tmp = tempfile.mkdtemp(prefix="resseg-screenshots-")
    import ray
    from playwright.sync_api import sync_playwright
    from ray import serve

    from resseg_ray.config import load_config
    from resseg_ray.serving.app import build_app
    from tests.helpers import CHROMIUM, free_port

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    refine_yaml = os.path.join(tmp, "refine.yaml")
    with open(refine_yaml, "w") as f:
        yaml.safe_dump({"extends": os.path.join(ROOT, "configs", "finetune_demo.yaml"),
                        "mlflow": {"tracking_uri": f"sqlite:///{tmp}/mlflow.db"}}, f)  # fmt: skip
    options = [
        "serve.cpus_per_replica=0.5",
        "serve.ingress_cpus=0.25",
        f"serve.annotations_dir={tmp}/annotations",
        f"serve.refine_dir={tmp}/refinements",
        f"serve.scenes_dir={tmp}/scenes",
        f"serve.refine_config={refine_yaml}",
    ]
    serve.run(build_app(load_config(None, options)), name="screenshots", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/#scene=test_02-analytic")
        page.wait_for_selector("path.leaflet-interactive", timeout=60_000)
        tiles_loaded(page)
        page.screenshot(path="docs/map-page.png")
        page.check("#overlay-mask")
        page.evaluate("map.setZoom(map.getZoom() + 2)")
        page.wait_for_timeout(500)
        tiles_loaded(page)
        page.screenshot(path="docs/map-mask.png")

        from resseg_ray.geo.storage import StorageSettings
        from resseg_ray.serving.scenes import load_map_scenes

        scene_id = "test_01-analytic"
        imagery = load_map_scenes([os.path.abspath("runs/demo-maps/catalog.json")], StorageSettings())[
            scene_id
        ].imagery
        doc, _ = annotations_of(imagery, "data/demo/scenes/test/test_01_buildings.geojson", 0.07)
        httpx.post(f"{url}/v1/scenes/{scene_id}/annotations", json=doc).raise_for_status()
        page.goto(url + f"/#scene={scene_id}")
        page.reload()
        page.wait_for_selector("path.leaflet-interactive", timeout=60_000)
        page.fill("#refine-epochs", str(args.epochs))
        page.click("#refine-start")
        page.wait_for_function(
            "document.getElementById('refine-state').textContent.includes(' is shown')",
            timeout=1_800_000,
        )
        bounds = next(f["geometry"] for f in doc["features"] if f["properties"]["kind"] == "area")
        xs = [c[0] for c in bounds["coordinates"][0]]
        ys = [c[1] for c in bounds["coordinates"][0]]
        page.evaluate(f"map.fitBounds([[{min(ys)}, {min(xs)}], [{max(ys)}, {max(xs)}]])")
        page.wait_for_timeout(500)
        tiles_loaded(page)
        page.screenshot(path="docs/map-refined.png")
        browser.close()
    serve.shutdown()
    print("wrote docs/map-page.png, docs/map-mask.png, docs/map-refined.png")


if __name__ == "__main__":
    main()
