"""The map page's speed, through the real service over HTTP: map tiles once a scene is open,
the first overlay of an uploaded 2048 x 2048 scene, and a refinement on 7 % of a demo test
scene from the click to the refined map (each stage's time).

    make demo && python -m bench.map_page                 # the demo's model and maps
    python -m bench.map_page --skip-refine --tiles 200
    python -m bench.map_page --epochs 5                   # a shorter refinement

The service is ``build_app`` (the ingress and the model deployment) behind Serve's HTTP proxy
on 127.0.0.1, serving the demo's model and its maps of the test scenes (``make demo``), with
its annotations, refinements and added scenes in a temporary folder and the refinement's
MLflow store there too (the demo's registry is not touched). Goals of issue 19 on a 2-core
CPU: a tile under 100 ms median, the first overlay of a 2048 px upload under 15 s, a 7 %
refinement from click to refined map under 5 minutes.

1. Tiles: every 256 px tile of the first test scene at the zoom where a tile pixel is about a
   scene pixel, for the imagery and the probability layers, one request after another (after
   one warm-up request per layer, which opens the scene and computes the stretch).
2. Upload: a synthetic 4-band 2048 x 2048 post-event GeoTIFF sent raw to ``POST /v1/scenes``,
   then ``GET /v1/scenes/{id}`` polled until it is ready, then its first probability tile.
3. Refinement: the top-left block holding 7 % of the scene's valid pixels as the annotated area
   and the demo's true footprints inside it as the buildings (what a mapper would draw), saved
   like the page saves them; ``POST .../refinements`` (the configuration's epochs, default
   ``configs/finetune_demo.yaml``'s 20), polled until it ends, then the refined map's first tile.

Figures only; prints them and writes JSON (default ``bench/results/map_page.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from bench.results_io import machine, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = "resseg-map-bench"


def poll(check, timeout: float, interval: float, what: str):
    """``check()`` until it returns something truthy, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s")


def scene_tiles(bounds: list[float], resolution_m: float) -> tuple[int, list]:
    """The zoom where a tile pixel is about a scene pixel, and the tiles covering the scene."""
    import math

    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    lat = (bounds[1] + bounds[3]) / 2
    zoom = round(math.log2(156543.03 * math.cos(math.radians(lat)) / resolution_m))
    return zoom, list(tms.tiles(*bounds, zooms=[zoom]))


def time_tiles(http, url: str, scene: dict, resolution_m: float, limit: int) -> dict:
    """Median and 90th percentile of tile requests, per layer."""
    zoom, tiles = scene_tiles(scene["bounds"], resolution_m)
    tiles = tiles[:limit]
    out: dict = {"zoom": zoom, "tiles": len(tiles)}
    for layer in ("imagery", "probability"):
        base = f"{url}/v1/scenes/{scene['id']}/tiles/{layer}"
        t0 = time.perf_counter()
        http.get(f"{base}/{tiles[0].z}/{tiles[0].x}/{tiles[0].y}.png").raise_for_status()
        first = time.perf_counter() - t0
        times, sizes = [], []
        for t in tiles:
            t0 = time.perf_counter()
            r = http.get(f"{base}/{t.z}/{t.x}/{t.y}.png")
            times.append(time.perf_counter() - t0)
            if r.status_code not in (200, 204):
                raise RuntimeError(f"tile {t}: {r.status_code} {r.text[:200]}")
            sizes.append(len(r.content))
        ms = sorted(1000 * x for x in times)
        out[layer] = {
            "first_ms": round(1000 * first, 1),
            "median_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
            "mean_kb": round(sum(sizes) / len(sizes) / 1024, 1),
        }
        print(
            f"tiles {layer:11s} z{zoom}: {len(tiles)} tiles, median {out[layer]['median_ms']:.1f} ms, "
            f"p90 {out[layer]['p90_ms']:.1f} ms (first, opening the scene: {out[layer]['first_ms']:.0f} ms)"
        )
    return out


def time_upload(http, url: str, headers: dict, tmp: str, side: int) -> dict:
    """From sending a ``side`` px GeoTIFF to its first probability tile."""
    from bench.serve_load import make_images

    data = make_images(tmp, [side])[side]
    t0 = time.perf_counter()
    r = http.post(
        f"{url}/v1/scenes?name=bench-{side}", content=data, headers={**headers, "Content-Type": "image/tiff"}
    )
    if r.status_code != 202:
        raise RuntimeError(f"upload: {r.status_code} {r.text}")
    accepted = time.perf_counter() - t0
    scene = poll(
        lambda: (x := http.get(f"{url}/v1/scenes/bench-{side}").json())["state"] != "segmenting" and x,
        timeout=600,
        interval=0.1,
        what="the uploaded scene to be segmented",
    )
    if scene["state"] != "ready":
        raise RuntimeError(f"upload failed: {scene}")
    ready = time.perf_counter() - t0
    _, tiles = scene_tiles(scene["bounds"], 0.5)
    middle = tiles[len(tiles) // 2]
    r = http.get(f"{url}/v1/scenes/bench-{side}/tiles/probability/{middle.z}/{middle.x}/{middle.y}.png")
    r.raise_for_status()
    overlay = time.perf_counter() - t0
    stages = http.get(f"{url}/v1/scenes/bench-{side}").json()
    record = json.load(open(os.path.join(tmp, "scenes", f"bench-{side}", "scene.json")))
    print(
        f"upload {side}x{side}: {len(data) / 1e6:.1f} MB accepted in {accepted:.2f} s, ready in "
        f"{ready:.2f} s, first overlay tile at {overlay:.2f} s (stages {record.get('stage_seconds')})"
    )
    return {
        "side": side,
        "megabytes": round(len(data) / 1e6, 2),
        "accepted_s": round(accepted, 2),
        "ready_s": round(ready, 2),
        "first_overlay_s": round(overlay, 2),
        "stages": record.get("stage_seconds"),
        "buildings": stages.get("building_count"),
    }


def annotations_of(scene_uri: str, footprints: str, fraction: float) -> tuple[dict, float]:
    """The top-left block holding ``fraction`` of the scene's valid pixels as an annotated area,
    and the true footprints inside it (clipped to it) as drawn buildings, in EPSG:4326."""
    import geopandas as gpd
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape

    from resseg_ray.adapt.area import contiguous_area
    from resseg_ray.geo.labels import scene_valid_mask
    from resseg_ray.geo.scene import open_scene
    from resseg_ray.geo.storage import StorageSettings

    settings = StorageSettings()
    scene = open_scene(scene_uri, settings)
    area = contiguous_area(scene_valid_mask(scene, settings), fraction)
    rows, cols = np.nonzero(area.mask)
    a = scene.affine
    x0, y0 = a * (int(cols.min()), int(rows.min()))
    x1, y1 = a * (int(cols.max()) + 1, int(rows.max()) + 1)
    block = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    crs = scene.crs
    frame = gpd.read_file(footprints).to_crs(crs)
    features = [{"type": "Feature", "properties": {"kind": "area"},
                 "geometry": transform_geom(crs, "EPSG:4326", mapping(block))}]  # fmt: skip
    for geom in frame.geometry:
        part = geom.intersection(block.buffer(-0.5))
        if part.is_empty or part.area < 4.0 or part.geom_type != "Polygon":
            continue
        features.append(
            {
                "type": "Feature",
                "properties": {"kind": "building", "source": "drawn"},
                "geometry": transform_geom(crs, "EPSG:4326", mapping(part), precision=8),
            }
        )
    for f in features:
        shape(f["geometry"])  # valid shapes only
    return {"type": "FeatureCollection", "features": features}, float(
        area.fraction(scene_valid_mask(scene, settings))
    )


def time_refinement(http, url: str, headers: dict, scene: dict, fraction: float, epochs: int | None) -> dict:
    """From the click on "Refine" to the refined map's first tile, with each stage's time."""
    from resseg_ray.geo.scene import open_scene  # noqa: F401  (imported before timing)

    imagery = scene["_imagery"]
    stem = scene["id"].split("-")[0]
    truth = os.path.join(ROOT, "data", "demo", "scenes", "test", f"{stem}_buildings.geojson")
    doc, share = annotations_of(imagery, truth, fraction)
    r = http.post(f"{url}/v1/scenes/{scene['id']}/annotations", json=doc, headers=headers)
    r.raise_for_status()
    buildings = sum(f["properties"]["kind"] == "building" for f in doc["features"])
    t0 = time.perf_counter()
    r = http.post(
        f"{url}/v1/scenes/{scene['id']}/refinements",
        json={"epochs": epochs} if epochs else {},
        headers=headers,
    )
    if r.status_code != 202:
        raise RuntimeError(f"refinement: {r.status_code} {r.text}")
    job = r.json()["id"]
    last = [-1]

    def ended():
        rec = http.get(f"{url}/v1/scenes/{scene['id']}/refinements/{job}").json()
        if rec["epoch"] != last[0]:
            last[0] = rec["epoch"]
            h = rec["history"][-1] if rec["history"] else {}
            at = time.perf_counter() - t0
            print(f"  {at:6.1f} s: {rec['stage']}, epoch {rec['epoch']}/{rec['epochs']} {h}")
        return rec if rec["state"] not in ("queued", "running") else None

    rec = poll(ended, timeout=3600, interval=0.5, what="the refinement to end")
    done = time.perf_counter() - t0
    if rec["state"] != "succeeded":
        raise RuntimeError(f"refinement {rec['state']}: {rec.get('error')}")
    decision = rec.get("decision") or {}
    print(f"verdict: {decision.get('line')}")
    if rec.get("outputs"):  # the kept model's map (none when the parent is kept: the served map)
        _, tiles = scene_tiles(scene["bounds"], 0.5)
        t = tiles[len(tiles) // 2]
        http.get(
            f"{url}/v1/scenes/{scene['id']}/tiles/probability/{t.z}/{t.x}/{t.y}.png?map={job}"
        ).raise_for_status()
    total = time.perf_counter() - t0
    first = rec["history"][0]["epoch"] if rec["history"] else None
    print(
        f"refinement on {100 * share:.1f} % of {scene['id']} ({buildings} buildings, {rec['epochs']} "
        f"epochs): refined map at {total:.1f} s after the click (record: {rec['stage_seconds']}); "
        f"figures {rec['figures']}"
    )
    return {
        "scene": scene["id"],
        "area_percent": round(100 * share, 2),
        "buildings": buildings,
        "epochs": rec["epochs"],
        "first_epoch": first,
        "ended_s": round(done, 1),
        "refined_map_s": round(total, 1),
        "stages": rec["stage_seconds"],
        "figures": rec["figures"],
        "kept": decision.get("chosen"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="bundle to serve (default the demo's)")
    p.add_argument("--catalog", default="runs/demo-maps/catalog.json", help="maps to show (make demo's)")
    p.add_argument("--tiles", type=int, default=100, help="tiles timed per layer at most")
    p.add_argument("--upload", type=int, default=2048, help="side of the uploaded scene in pixels")
    p.add_argument("--fraction", type=float, default=0.07, help="annotated share of the scene")
    p.add_argument("--epochs", type=int, help="refinement epochs (default the refinement configuration's)")
    p.add_argument("--skip-refine", action="store_true")
    p.add_argument(
        "--refine-on-workers",
        action="store_true",
        help="serve.refine_in_process=false: the refinement on Ray Train workers (default: in its runner)",
    )
    p.add_argument("--cpus-per-replica", type=float, default=1.0, help="serve.cpus_per_replica")
    p.add_argument("--torch-threads", type=int, help="serve.torch_threads (default: the reserved CPUs)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "map_page.json"))
    args = p.parse_args()
    os.chdir(ROOT)

    import httpx
    import ray
    import yaml
    from ray import serve

    from resseg_ray.config import load_config
    from resseg_ray.serving.app import DEMO_MODEL, DEMO_REFINE, build_app

    model = args.model or DEMO_MODEL
    for needed in (model, args.catalog):
        if not os.path.isfile(needed):
            sys.exit(f"error: {needed} does not exist; run `make demo` first (or give --model/--catalog)")
    token = "bench-token"
    headers = {"Authorization": f"Bearer {token}"}
    with tempfile.TemporaryDirectory(prefix="resseg-map-bench-") as tmp:
        refine_yaml = os.path.join(tmp, "refine.yaml")
        with open(refine_yaml, "w") as f:  # the demo's schedule, its own MLflow store
            yaml.safe_dump(
                {
                    "extends": os.path.abspath(DEMO_REFINE),
                    "mlflow": {"tracking_uri": f"sqlite:///{tmp}/mlflow.db"},
                },
                f,
            )
        cfg = load_config(
            None,
            [
                f"serve.model={model}",
                f"serve.map_catalogs=[{args.catalog}]",
                f"serve.cpus_per_replica={args.cpus_per_replica}",
                *([f"serve.torch_threads={args.torch_threads}"] if args.torch_threads else []),
                "serve.ingress_cpus=0.25",
                f"serve.api_token={token}",
                f"serve.annotations_dir={tmp}/annotations",
                f"serve.refine_dir={tmp}/refinements",
                f"serve.scenes_dir={tmp}/scenes",
                f"serve.refine_config={refine_yaml}",
                f"serve.refine_in_process={str(not args.refine_on_workers).lower()}",
            ],
        )
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        port = 8791
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(cfg), name=APP, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        results: dict = {
            "machine": machine(),
            "model": model,
            "cpus_per_replica": args.cpus_per_replica,
            "torch_threads": args.torch_threads,
            "refine_in_process": not args.refine_on_workers,
        }
        print(f"CPU: {results['machine']['cpu']['model']} ({', '.join(results['machine']['cpu']['flags'])})")
        try:
            with httpx.Client(timeout=120) as http:
                poll(lambda: http.get(url + "/healthz").status_code == 200, 120, 0.2, "the service")
                scenes = http.get(url + "/v1/scenes").json()["scenes"]
                if not scenes:
                    sys.exit(f"error: {args.catalog} lists no scene")
                scene = scenes[0]
                from resseg_ray.geo.storage import StorageSettings
                from resseg_ray.serving.scenes import load_map_scenes

                known = load_map_scenes([os.path.abspath(args.catalog)], StorageSettings())
                scene["_imagery"] = known[scene["id"]].imagery
                results["tiles"] = time_tiles(http, url, scene, 0.5, args.tiles)
                results["upload"] = time_upload(http, url, headers, tmp, args.upload)
                if not args.skip_refine:
                    results["refinement"] = time_refinement(
                        http, url, headers, scene, args.fraction, args.epochs
                    )
        finally:
            serve.shutdown()
            ray.shutdown()
    write_results(args.out, results)


if __name__ == "__main__":
    main()
