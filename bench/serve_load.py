"""Load on the Serve application: throughput and latency percentiles of ``POST /v1/segment``
at several concurrencies and image sizes, with window batching on and off.

    python -m bench.serve_load                       # 512 and 2048 px, c = 1, 8, 32, batch 1 vs 8
    python -m bench.serve_load --sizes 512 --concurrency 8 --duration 20
    python -m bench.serve_load --model runs/demo-prop18/model.resseg.safetensors --set serve.use_gpu=true

The service is the real application (``build_app``: the FastAPI ingress and the batching
model deployment) behind Serve's HTTP proxy on 127.0.0.1, deployed once per batch size
(``serve.max_batch_size``; 1 is "without batching"). The images are synthetic 4-band
post-event scenes (uint16 GeoTIFFs, 0.5 m, UTM) of each size, uploaded raw.

Each level runs ``c`` closed-loop clients for ``--duration`` seconds (after a warm-up
request): a client sends an image, waits for the whole answer, and sends the next. An
answer 503 (the designed backpressure: the ingress or model queue is full) is counted and
retried after the server's ``Retry-After``; latencies are those of the 200 answers (send
to last byte), ``job`` times also count the 503s and waits before each success. Anything
else (another status, a connection error, a timeout) is an error. Throughput is images
answered 200 per second. The mean model batch size is read from the model replicas.

Figures only; prints a table and writes JSON (default ``bench/results/serve_load.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import numpy as np

from bench.results_io import machine, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = "resseg-load"


def make_images(tmp: str, sizes: list[int]) -> dict[int, bytes]:
    """A synthetic post-event scene as large as the largest size, cropped (centred) to each."""
    import rasterio
    from rasterio.windows import Window

    from resseg_ray.demo import SceneSpec, write_scene

    side = max(sizes)
    spec = SceneSpec("post_event", "urban", "alpha", side * 0.5, side * 0.5, 32633, (452000.0, 5043000.0), 7)
    scene = os.path.join(tmp, "post_event.tif")
    write_scene(spec, scene, os.path.join(tmp, "post_event.geojson"))
    out = {}
    with rasterio.open(scene) as src:
        for s in sizes:
            x, y = (src.width - s) // 2, (src.height - s) // 2
            win = Window(x, y, s, s)
            profile = dict(src.profile, width=s, height=s, transform=src.window_transform(win))
            path = os.path.join(tmp, f"image_{s}.tif")
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=win))
            with open(path, "rb") as f:
                out[s] = f.read()
    return out


def model_path(arg: str | None, tmp: str) -> tuple[str, str]:
    """The bundle to serve and where it came from: ``--model``, the demo's model, or (no
    trained model here) a prop18 with initial weights: speed does not depend on weights."""
    from resseg_ray.serving.app import DEMO_MODEL

    if arg:
        return arg, "given"
    if os.path.isfile(os.path.join(ROOT, DEMO_MODEL)):
        return os.path.join(ROOT, DEMO_MODEL), "demo"
    from resseg_ray.models import build_model
    from resseg_ray.models.bundle import save_bundle

    path = os.path.join(tmp, "prop18.resseg.safetensors")
    save_bundle(
        path,
        build_model("prop18", in_bands=4),
        norm_mean=[1500.0] * 4,
        norm_std=[800.0] * 4,
        band_names=["blue", "green", "red", "nir"],
    )
    return path, "prop18 with initial weights (no trained demo model; speed does not depend on weights)"


def deploy(overrides: list[str], port: int) -> str:
    """(Re)deploy the application with these ``serve.*`` overrides; its URL once healthy."""
    import httpx
    from ray import serve

    from resseg_ray.config import load_config
    from resseg_ray.serving.app import build_app

    serve.run(build_app(load_config(None, overrides)), name=APP, route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:  # serve.run returns once replicas are up; poll the route with a deadline
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service at {url} did not become healthy in 120 s")
        time.sleep(0.2)


def warm_up(url: str, body: bytes, timeout: float) -> None:
    """One request (first-call costs out of the figures); anything but 200 stops the bench."""
    import httpx

    r = httpx.post(url + "/v1/segment", content=body, headers={"content-type": "image/tiff"}, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"warm-up request answered {r.status_code}: {r.text[:300]}")


def batch_sizes() -> dict[int, int]:
    """Forward passes per batch size so far on the model replica(s) the handle reaches."""
    from ray import serve

    handle = serve.get_deployment_handle("SegmentModel", APP)
    return {int(k): v for k, v in handle.batch_sizes.remote().result().items()}


async def run_level(url: str, body: bytes, c: int, duration: float, timeout: float) -> dict:
    """``c`` closed-loop clients for ``duration`` seconds; counts and latencies."""
    import httpx

    ok: list[float] = []
    jobs: list[float] = []
    busy = errors = 0
    samples: list[str] = []
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    headers = {"content-type": "image/tiff"}
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        stop = start + duration

        async def client_loop() -> None:
            nonlocal busy, errors
            job_start = time.perf_counter()
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/segment", content=body, headers=headers)
                except httpx.HTTPError as exc:
                    errors += 1
                    samples.append(f"{type(exc).__name__}: {exc}")
                    job_start = time.perf_counter()
                    continue
                t1 = time.perf_counter()
                if r.status_code == 200:
                    ok.append(t1 - t0)
                    jobs.append(t1 - job_start)
                    job_start = t1
                elif r.status_code == 503:
                    busy += 1
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                else:
                    errors += 1
                    samples.append(f"{r.status_code}: {r.text[:200]}")
                    job_start = time.perf_counter()

        await asyncio.gather(*(client_loop() for _ in range(c)))
        wall = time.perf_counter() - start

    def pct(xs: list[float], q: float) -> float | None:
        return float(np.percentile(xs, q)) if xs else None

    return {
        "concurrency": c,
        "seconds": wall,
        "ok": len(ok),
        "busy_503": busy,
        "errors": errors,
        "error_samples": samples[:5],
        "throughput_per_s": len(ok) / wall,
        "latency_s": {f"p{q}": pct(ok, q) for q in (50, 95, 99)},
        "job_s": {f"p{q}": pct(jobs, q) for q in (50, 95, 99)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="bundle path or models:/ URI (default: the demo's model)")
    p.add_argument("--sizes", nargs="+", type=int, default=[512, 2048], help="image sides (px)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8], help="serve.max_batch_size values")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per level for 512 px images")
    p.add_argument(
        "--duration-large", type=float, default=90.0, help="seconds per level for images over 1024 px"
    )
    p.add_argument("--timeout", type=float, default=600.0, help="client timeout per request (s)")
    p.add_argument("--replicas", type=int, default=1, help="model replicas (min = max)")
    p.add_argument(
        "--cpus-per-replica", type=float, default=None,
        help="CPUs per model replica (default: all of this machine's, the ingress gets 0 reserved)",
    )  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], help="more serve.* overrides")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "serve_load.json"))
    args = p.parse_args()

    import ray
    from ray import serve

    from resseg_ray.cli import init_ray

    init_ray()
    cpus = args.cpus_per_replica or max(1.0, ray.cluster_resources().get("CPU", 1.0) / args.replicas)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results: dict = {"machine": machine(), "args": vars(args), "levels": []}
    with tempfile.TemporaryDirectory(prefix="resseg-serve-load-") as tmp:
        model, origin = model_path(args.model, tmp)
        results["model"] = {"uri": model, "origin": origin}
        print(f"model: {model} ({origin})")
        images = make_images(tmp, args.sizes)
        for bs in args.batch_sizes:
            overrides = [
                f"serve.model={model}",
                f"serve.max_batch_size={bs}",
                f"serve.min_replicas={args.replicas}",
                f"serve.max_replicas={args.replicas}",
                f"serve.cpus_per_replica={cpus}",
                "serve.ingress_cpus=0",
                *args.overrides,
            ]
            url = deploy(overrides, port)
            for size in args.sizes:
                body = images[size]
                duration = args.duration_large if size > 1024 else args.duration
                warm_up(url, body, args.timeout)
                for c in args.concurrency:
                    before = batch_sizes()
                    level = asyncio.run(run_level(url, body, c, duration, args.timeout))
                    after = batch_sizes()
                    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                    passes = sum(diff.values())
                    level.update(
                        max_batch_size=bs,
                        size=size,
                        megabytes=len(body) / 2**20,
                        forward_passes=passes,
                        mean_batch=(sum(k * v for k, v in diff.items()) / passes) if passes else None,
                    )
                    results["levels"].append(level)
                    lat = level["latency_s"]
                    print(
                        f"batch {bs} size {size} c={c}: {level['ok']} ok, {level['busy_503']} x 503, "
                        f"{level['errors']} errors, {level['throughput_per_s']:.3f} img/s, "
                        f"p50/p95/p99 {_fmt(lat['p50'])}/{_fmt(lat['p95'])}/{_fmt(lat['p99'])} s, "
                        f"mean batch {_fmt(level['mean_batch'])}",
                        flush=True,
                    )
            serve.delete(APP)
    serve.shutdown()
    results["summary"] = summarize(results["levels"], args.batch_sizes)
    print(table(results["levels"]))
    for line in results["summary"]["lines"]:
        print(line)
    write_results(args.out, results)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(levels: list[dict]) -> str:
    """The levels as a markdown table."""
    rows = [
        "| batch | size | c | img/s | p50 s | p95 s | p99 s | p99/p50 | 200 | 503 | errors | mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        lat = lv["latency_s"]
        ratio = lat["p99"] / lat["p50"] if lat["p50"] else None
        rows.append(
            f"| {lv['max_batch_size']} | {lv['size']} | {lv['concurrency']} | {lv['throughput_per_s']:.3f} | "
            f"{_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} | {_fmt(ratio)} | {lv['ok']} | "
            f"{lv['busy_503']} | {lv['errors']} | {_fmt(lv['mean_batch'])} |"
        )
    return "\n".join(rows)


def summarize(levels: list[dict], batch_sizes: list[int]) -> dict:
    """The issue's goals, read off the levels: batching speed-up at c = 8, p99/p50 at c = 32,
    errors other than 503."""
    by = {(lv["max_batch_size"], lv["size"], lv["concurrency"]): lv for lv in levels}
    lines, out = [], {"speedup_c8": {}, "p99_over_p50_c32": {}, "errors": sum(lv["errors"] for lv in levels)}
    lo, hi = min(batch_sizes), max(batch_sizes)
    for (bs, size, c), lv in sorted(by.items()):
        if c == 8 and bs == hi and (lo, size, 8) in by and lo != hi:
            base = by[(lo, size, 8)]["throughput_per_s"]
            s = lv["throughput_per_s"] / base if base else None
            out["speedup_c8"][size] = s
            lines.append(f"batching (max_batch_size {hi} vs {lo}) at c=8, {size} px: {_fmt(s)}x throughput")
        if c == 32 and lv["latency_s"]["p50"]:
            r = lv["latency_s"]["p99"] / lv["latency_s"]["p50"]
            out["p99_over_p50_c32"][f"{bs}/{size}"] = r
            lines.append(f"p99/p50 at c=32, batch {bs}, {size} px: {r:.2f}")
    lines.append(f"errors other than 503: {out['errors']}")
    out["lines"] = lines
    return out


if __name__ == "__main__":
    main()
