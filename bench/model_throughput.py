"""Model throughput: FLOPs per tile, inference Mpx/s and GFLOP/s against a same-run matmul.

For each architecture: FLOPs of one tile (torch.utils.flop_counter), then inference
time of a batch in both memory formats (contiguous NCHW and channels_last), the
best of ``--repeats`` timed runs after a warm-up. Achieved GFLOP/s is compared with
the GFLOP/s of a large fp32 matmul measured in the same run, between the models, as
a same-run yardstick (oneDNN's convolution kernels can exceed it: figures above
100 %). A conventional ResNet-18 U-Net with bilinear upsampling
(bench/reference_unet.py) runs side by side with prop18.

    python -m bench.model_throughput                      # all models, 512x512, batch 4
    python -m bench.model_throughput --archs prop18 ref_unet_resnet18 --repeats 5
    python -m bench.model_throughput --archs prop18 prop152 --runtimes torch openvino onnxruntime
    python -m bench.model_throughput --bundle runs/demo-prop18/model.resseg.safetensors \
        --runtimes torch openvino onnxruntime --json bench/results/runtimes_demo.json

Prints a table and writes JSON (default bench/results/model_throughput.json).
Figures only: nothing here passes or fails on a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.reference_unet import ResNet18UNet
from bench.results_io import machine, write_results
from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError
from resseg_ray.models import build_model, list_models
from resseg_ray.models.bundle import load_bundle
from resseg_ray.runtime import candidates, cpu_info, select_engine
from resseg_ray.runtime.select import Choice, EngineFactory, runtime_versions

REFERENCE = "ref_unet_resnet18"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(policy: DevicePolicy, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an n x n fp32 (or autocast dtype) matmul: the practical peak."""
    dtype = policy.amp_dtype or torch.float32
    a = torch.randn(n, n, device=policy.device, dtype=dtype)
    b = torch.randn(n, n, device=policy.device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(policy.device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync(policy.device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def build(name: str, bands: int) -> torch.nn.Module:
    """A product model from the registry, or the bench-only reference U-Net."""
    if name == REFERENCE:
        return ResNet18UNet(in_bands=bands)
    return build_model(name, in_bands=bands, num_classes=2)


def tile_flops(model: torch.nn.Module, bands: int, size: int) -> int:
    """FLOPs of one forward pass on one size x size tile."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, bands, size, size))
    return int(counter.get_total_flops())


def time_forward(model: torch.nn.Module, x: torch.Tensor, policy: DevicePolicy, repeats: int) -> list[float]:
    """Seconds per forward pass (after one warm-up pass), ``repeats`` times."""
    times = []
    with torch.inference_mode(), policy.autocast():
        model(x)
        _sync(policy.device)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            _sync(policy.device)
            times.append(time.perf_counter() - t)
    return times


def runtime_rows(
    name: str, model: torch.nn.Module, args: argparse.Namespace, policy: DevicePolicy
) -> list[dict[str, Any]]:
    """Mpx/s of each runtime x precision through the project's engines (resseg_ray.runtime),
    with speed-up over torch fp32 and agreement of the classes with it, then what ``auto`` picks."""
    x = np.random.default_rng(0).standard_normal((args.batch, args.bands, args.size, args.size), np.float32)
    factory = EngineFactory(model, policy)
    reference = factory.build(Choice("torch", "fp32"))
    want = reference.forward(x)
    px = args.batch * args.size * args.size
    rows: list[dict[str, Any]] = []
    combos = [(r, p) for p in args.precisions for r in args.runtimes]
    for runtime, precision in [*combos, ("auto", "auto")]:
        try:
            if runtime == "auto":
                engine = select_engine(model, policy, "auto", "auto", x.shape)
            else:
                candidates(runtime, precision, policy.device)
                engine = factory.build(Choice(runtime, precision))
        except ConfigError as exc:
            print(f"{name:<20}{runtime:>12}{precision:>6}  not run: {exc}")
            continue
        got = engine.forward(x)  # warm-up (and auto's guard)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            engine.forward(x)
            times.append(time.perf_counter() - t)
        best = min(times)
        row = {
            "arch": name,
            "runtime": runtime if runtime != "auto" else f"auto -> {engine.runtime}",
            "precision": precision if runtime != "auto" else engine.precision,
            "seconds_best": best,
            "seconds_median": statistics.median(times),
            "mpx_per_s": px / best / 1e6,
            "max_abs_diff": float(np.abs(got - want).max()),
            "agreement": float((got.argmax(1) == want.argmax(1)).mean()),
        }
        rows.append(row)
    base = next((r["mpx_per_s"] for r in rows if r["runtime"] == "torch" and r["precision"] == "fp32"), None)
    for row in rows:
        row["speedup_over_torch_fp32"] = row["mpx_per_s"] / base if base else None
        speedup = f"{row['speedup_over_torch_fp32']:>8.2f}x" if base else f"{'-':>9}"
        print(
            f"{name:<20}{row['runtime']:>20}{row['precision']:>6}{row['seconds_best']:>9.3f}"
            f"{row['mpx_per_s']:>8.3f}{speedup}{100 * row['agreement']:>9.3f}{row['max_abs_diff']:>10.2e}"
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=[*list_models("buildings"), REFERENCE])
    parser.add_argument("--size", type=int, default=512, help="tile side in pixels (512)")
    parser.add_argument("--batch", type=int, default=4, help="tiles per forward pass (4)")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per format (3)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--formats", nargs="+", default=["nchw", "channels_last"])
    parser.add_argument(
        "--no-fold",
        action="store_true",
        help="time the training graph (BatchNorm not folded) instead of the inference copy",
    )
    parser.add_argument(
        "--compile", action="store_true", help="time torch.compile'd networks (compile time recorded apart)"
    )
    parser.add_argument(
        "--runtimes",
        nargs="+",
        choices=["torch", "openvino", "onnxruntime"],
        help="instead of the formats table: a runtime x precision table through the project's engines "
        "(channels_last, BatchNorm folded), plus what --runtime auto picks",
    )
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="with --runtimes")
    parser.add_argument(
        "--bundle", help="with --runtimes: time this trained bundle's network (its arch and bands) instead"
    )
    parser.add_argument("--json", default="bench/results/model_throughput.json")
    args = parser.parse_args(argv)
    if args.runtimes:
        return runtimes_main(args)

    torch.manual_seed(0)
    policy = DevicePolicy.resolve(args.device, channels_last=True, precision=args.precision)
    px = args.batch * args.size * args.size
    mm_runs = [matmul_gflops(policy)]
    rows: list[dict[str, Any]] = []
    print(
        f"device {policy.describe()}, BN folded: {not args.no_fold}, compiled: {args.compile}, "
        f"threads {torch.get_num_threads()}, "
        f"batch {args.batch} x {args.bands} x {args.size} x {args.size}"
    )
    print(f"matmul: {mm_runs[0]:.1f} GFLOP/s")
    header = (
        f"{'arch':<20}{'params M':>9}{'GFLOP/tile':>11}{'format':>15}"
        f"{'s/batch':>9}{'Mpx/s':>8}{'GFLOP/s':>9}{'% mm':>7}"
    )
    print(header)
    for name in args.archs:
        model = build(name, args.bands).eval()
        flops = tile_flops(model, args.bands, args.size)
        if not args.no_fold:
            model = policy.prepare_for_inference(model)
        params = sum(p.numel() for p in model.parameters())
        x = torch.randn(args.batch, args.bands, args.size, args.size)
        for fmt in args.formats:
            memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            model = model.to(device=policy.device, memory_format=memory_format)
            xb = x.to(policy.device).contiguous(memory_format=memory_format)
            run = model
            compile_s = None
            if args.compile:  # compiled for this layout; the first (warm-up) pass compiles
                run = torch.compile(model, dynamic=False)
                t = time.perf_counter()
                time_forward(run, xb, policy, 0)
                compile_s = time.perf_counter() - t
            times = time_forward(run, xb, policy, args.repeats)
            best = min(times)
            gflops = args.batch * flops / best / 1e9
            row = {
                "arch": name,
                "params": params,
                "bn_folded": not args.no_fold,
                "compiled": args.compile,
                "compile_s": compile_s,
                "gflop_per_tile": flops / 1e9,
                "format": fmt,
                "seconds_best": best,
                "seconds_median": statistics.median(times),
                "mpx_per_s": px / best / 1e6,
                "gflop_per_s": gflops,
            }
            rows.append(row)
        # matmul between models, so slow drifts of the machine show up in the figures
        mm_runs.append(matmul_gflops(policy))
        mm = statistics.median(mm_runs)
        for row in rows:
            if row["arch"] == name:
                row["matmul_gflop_per_s"] = mm
                row["pct_of_matmul"] = 100 * row["gflop_per_s"] / mm
                print(
                    f"{name:<20}{params / 1e6:>9.2f}{row['gflop_per_tile']:>11.1f}{row['format']:>15}"
                    f"{row['seconds_best']:>9.3f}{row['mpx_per_s']:>8.3f}{row['gflop_per_s']:>9.1f}"
                    f"{row['pct_of_matmul']:>7.1f}"
                )
        del model

    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["arch"] not in best or row["gflop_per_s"] > best[row["arch"]]["gflop_per_s"]:
            best[row["arch"]] = row
    mm = statistics.median(mm_runs)
    print(f"\nmatmul GFLOP/s over the run: {', '.join(f'{v:.0f}' for v in mm_runs)} (median {mm:.1f})")
    goals: dict[str, Any] = {}
    props = [a for a in best if a.startswith("prop")]
    if props:
        worst = min(props, key=lambda a: best[a]["pct_of_matmul"])
        goals["prop_min_pct_of_matmul"] = best[worst]["pct_of_matmul"]
        print(
            f"goal >= 70 % of matmul, best format per prop model: lowest is {worst} at "
            f"{best[worst]['pct_of_matmul']:.1f} % ({best[worst]['format']})"
        )
    if "prop18" in best and REFERENCE in best:
        ratio = best["prop18"]["mpx_per_s"] / best[REFERENCE]["mpx_per_s"]
        goals["prop18_over_reference_mpx"] = ratio
        print(
            f"goal prop18 Mpx/s >= reference U-Net: {best['prop18']['mpx_per_s']:.3f} vs "
            f"{best[REFERENCE]['mpx_per_s']:.3f} Mpx/s (ratio {ratio:.2f}; "
            f"{best['prop18']['gflop_per_tile']:.1f} vs {best[REFERENCE]['gflop_per_tile']:.1f} GFLOP/tile)"
        )
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "policy": policy.describe(),
        "batch": args.batch,
        "size": args.size,
        "bands": args.bands,
        "matmul_gflop_per_s_runs": mm_runs,
        "rows": rows,
        "goals": goals,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


def runtimes_main(args: argparse.Namespace) -> dict[str, Any]:
    """The runtime x precision table of ``--runtimes``, printed and written as JSON."""
    torch.manual_seed(0)
    policy = DevicePolicy.resolve(args.device, channels_last=True)
    cpu = cpu_info()
    models: list[tuple[str, torch.nn.Module]] = []
    if args.bundle:
        bundle = load_bundle(args.bundle)
        args.bands = bundle.info.in_bands
        models.append((f"{bundle.info.architecture} (trained)", bundle.model))
    else:
        models = [(name, build(name, args.bands).eval()) for name in args.archs]
    print(f"CPU {cpu.model}, flags {' '.join(cpu.flags) or '-'}, bf16 units: {cpu.bf16_units or 'none'}")
    print(
        f"device {policy.device}, threads {torch.get_num_threads()}, batch {args.batch} x {args.bands} x "
        f"{args.size} x {args.size}; agreement: share of pixels with torch fp32's class"
    )
    print(
        f"{'arch':<20}{'runtime':>20}{'prec':>6}{'s/batch':>9}{'Mpx/s':>8}{'speed-up':>9}{'agree %':>9}"
        f"{'max diff':>10}"
    )
    rows: list[dict[str, Any]] = []
    for name, model in models:
        rows += runtime_rows(name, model, args, policy)
    result = {
        "machine": {**machine(), "threads": torch.get_num_threads(), "versions": runtime_versions()},
        "batch": args.batch,
        "size": args.size,
        "bands": args.bands,
        "rows": rows,
    }
    if args.json:
        write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
