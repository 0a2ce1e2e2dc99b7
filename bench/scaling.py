"""How training and whole-scene segmentation scale with workers: measured here (1 vs 2
workers / actors on this machine), projected for a GPU cluster with stated assumptions.
Writes bench/scaling.md and bench/results/scaling.json.

    python -m bench.scaling                     # from the existing result files (below)
    python -m bench.scaling --measure           # re-run the three measurements first (~15 min on 2 cores)
    python -m bench.scaling --nodes 16 --arch prop101 --price-gpu 1.0 --utilization 0.25

Measured (``--measure`` runs them; otherwise their JSON in bench/results is read):
- training samples/s with 1 and with 2 DDP workers (``bench/train_throughput.py``,
  results ``train_throughput.json`` and ``train_throughput_2workers.json``);
- a D12-size scene (6000 x 4500) segmented whole by one Ray actor and split across 2
  actors (``bench/predict_scene.py --actors 2``, ``predict_scene.json``);
- FLOPs per 512 px window of each network (``bench/model_throughput.py``,
  ``model_throughput.json``).

Projected for ``--nodes`` GPU nodes (default 8 x g5.2xlarge, one A10G each), from the
FLOPs and these assumptions, every one a command-line option and printed with the
result: the GPU's dense fp16 tensor throughput and the share of it a convolutional
network reaches under autocast (``--utilization``); the CPU side of segmentation (read,
normalise, stitch, write) scaled from this machine's measured rate by vCPU count;
scene-splitting efficiency across nodes; DDP gradient all-reduce over the nodes'
network, half of it hidden behind the backward pass; on-demand and spot prices.
Figures only: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench.results_io import machine, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
D12 = (6000, 4500)  # the paper's first test scene, pixels
GSD_M = 0.5

MEASUREMENTS = {
    "train_throughput.json": ["-m", "bench.train_throughput", "--set", "scaling.num_workers=1"],
    "train_throughput_2workers.json": [
        "-m", "bench.train_throughput", "--set", "scaling.num_workers=2",
        "--set", "scaling.cpus_per_worker=0.5",
        "--out", "bench/results/train_throughput_2workers.json",
    ],
    "predict_scene.json": ["-m", "bench.predict_scene", "--no-big", "--actors", "2"],
    "model_throughput.json": ["-m", "bench.model_throughput"],
}  # fmt: skip


def load(name: str) -> dict:
    """A result file of bench/results, or a clear error saying which command writes it."""
    path = os.path.join(RESULTS, name)
    if not os.path.isfile(path):
        cmd = " ".join(["python", *MEASUREMENTS[name]])
        raise SystemExit(f"error: {path} is missing: run `{cmd}` (or python -m bench.scaling --measure)")
    with open(path) as f:
        return json.load(f)


def params_of(arch: str) -> int:
    """Parameters of a network (4 bands, 2 classes)."""
    import torch

    from resseg_ray.models import build_model

    with torch.device("meta"):
        model = build_model(arch, in_bands=4)
    return sum(p.numel() for p in model.parameters())


def project(args: argparse.Namespace, gflop_512: float, params: int, cpu_side_mpx_s: float) -> dict:
    """The cluster projection (see the module docstring for every assumption)."""
    eff_tflops = args.gpu_tflops * args.utilization
    stride = args.window - args.overlap
    # every scene pixel costs (window / stride)^2 pixels of network work with overlapping windows
    flop_per_px = gflop_512 * 1e9 / 512**2 * (args.window / stride) ** 2
    gpu_mpx_s = eff_tflops * 1e12 / flop_per_px / 1e6
    cpu_mpx_s = cpu_side_mpx_s * args.vcpus / machine()["cpus"]
    node_mpx_s = min(gpu_mpx_s, cpu_mpx_s)  # reading/stitching overlaps the GPU: the slower side bounds
    d12_mpx = D12[0] * D12[1] / 1e6
    one = d12_mpx / node_mpx_s
    cluster_mpx_s = node_mpx_s * args.nodes * args.split_efficiency
    mpx_per_1000km2 = 1000 * 1e6 / GSD_M**2 / 1e6
    hours = mpx_per_1000km2 / cluster_mpx_s / 3600
    cost = {
        "on_demand": hours * (args.nodes * args.price_gpu + args.price_head),
        "spot": hours * (args.nodes * args.price_spot + args.price_head),
    }
    # training: forward + backward ~ 3x forward FLOPs, on crops of args.crop px
    flop_sample = 3 * gflop_512 * 1e9 * (args.crop / 512) ** 2
    step_s = args.batch * flop_sample / (eff_tflops * 1e12)
    n = args.nodes
    allreduce_s = 2 * (n - 1) / n * params * 4 / (args.net_gbps * 1e9 / 8) if n > 1 else 0.0
    exposed = (1 - args.overlap_comm) * allreduce_s
    per_gpu = args.batch / (step_s + exposed)
    paper_cluster = args.paper_mpx_s * args.nodes * args.split_efficiency
    paper_hours = mpx_per_1000km2 / paper_cluster / 3600
    return {
        "effective_tflops_per_gpu": eff_tflops,
        "segmentation_at_paper_rate": {
            "mpx_s_per_node": args.paper_mpx_s,
            "d12_seconds_one_node": d12_mpx / args.paper_mpx_s,
            "d12_scenes_per_hour_cluster": 3600 * paper_cluster / d12_mpx,
            "hours_per_1000km2": paper_hours,
            "usd_per_1000km2": {
                "on_demand": paper_hours * (args.nodes * args.price_gpu + args.price_head),
                "spot": paper_hours * (args.nodes * args.price_spot + args.price_head),
            },
        },
        "segmentation": {
            "gpu_bound_mpx_s_per_node": gpu_mpx_s,
            "cpu_side_mpx_s_per_node": cpu_mpx_s,
            "mpx_s_per_node": node_mpx_s,
            "d12_seconds_one_node": one,
            "d12_seconds_cluster": d12_mpx / cluster_mpx_s,
            "d12_scenes_per_hour_cluster": 3600 * cluster_mpx_s / d12_mpx,
            "hours_per_1000km2": hours,
            "usd_per_1000km2": cost,
        },
        "training": {
            "samples_s_one_gpu": args.batch / step_s,
            "step_s": step_s,
            "allreduce_s": allreduce_s,
            "samples_s_per_gpu_ddp": per_gpu,
            "samples_s_cluster": per_gpu * n,
            "scaling_efficiency": per_gpu / (args.batch / step_s),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--measure", action="store_true", help="re-run the measurements first")
    p.add_argument("--arch", default="prop152", help="network of the projection (the paper's best)")
    p.add_argument("--nodes", type=int, default=8, help="GPU nodes, one GPU each")
    p.add_argument("--node-type", default="g5.2xlarge (1 x A10G, 8 vCPU)")
    p.add_argument("--vcpus", type=int, default=8, help="vCPUs per GPU node")
    p.add_argument("--gpu-tflops", type=float, default=125.0, help="dense fp16 tensor TFLOP/s (A10G: 125)")
    p.add_argument(
        "--utilization", type=float, default=0.1,
        help="share of it reached: PyTorch autocast ResNet-50 inference on an A10G runs at ~10 TFLOP/s",
    )  # fmt: skip
    p.add_argument(
        "--paper-mpx-s", type=float, default=0.25,
        help="pessimistic bound: the paper's measured Prop-152 rate per GPU (TitanX, 2018)",
    )  # fmt: skip
    p.add_argument("--split-efficiency", type=float, default=0.9, help="scene split across nodes")
    p.add_argument("--net-gbps", type=float, default=10.0, help="node network (g5.2xlarge: up to 10)")
    p.add_argument("--overlap-comm", type=float, default=0.5, help="share of all-reduce hidden by backward")
    p.add_argument("--batch", type=int, default=8, help="training batch per GPU (paper: 8)")
    p.add_argument("--crop", type=int, default=256, help="training crop (paper: 256)")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=int, default=112)
    p.add_argument("--price-gpu", type=float, default=1.212, help="USD/h on demand (g5.2xlarge, us-east-1)")
    p.add_argument("--price-spot", type=float, default=0.45, help="USD/h spot (varies by zone and day)")
    p.add_argument("--price-head", type=float, default=0.384, help="USD/h of the head (m6i.2xlarge)")
    p.add_argument("--md", default=os.path.join(ROOT, "bench", "scaling.md"))
    p.add_argument("--out", default=os.path.join(RESULTS, "scaling.json"))
    args = p.parse_args()

    if args.measure:
        for cmd in MEASUREMENTS.values():
            print("$ python " + " ".join(cmd), flush=True)
            subprocess.run([sys.executable, *cmd], cwd=ROOT, check=True)
    t1, t2 = load("train_throughput.json"), load("train_throughput_2workers.json")
    seg, flops = load("predict_scene.json"), load("model_throughput.json")
    gflop = {r["arch"]: r["gflop_per_tile"] for r in flops["rows"]}
    if args.arch not in gflop:
        known = ", ".join(sorted(gflop))
        raise SystemExit(f"error: --arch {args.arch} is not in model_throughput.json ({known})")

    train_1 = t1["steady_samples_per_s_per_worker"] * t1["workers"]
    train_2 = t2["steady_samples_per_s_per_worker"] * t2["workers"]
    split = seg.get("ray_split") or {}
    d12 = next(r for r in seg["rows"] if (r["width"], r["height"]) == D12)
    # the CPU side of segmentation here: scene pixels per second of everything but the network
    cpu_side = d12["megapixels"] / max(d12["end_to_end_s"] - d12["model_only_s"], 1e-6)
    measured = {
        "machine": t1["machine"],
        "training": {
            "arch": t1["arch"], "crop": t1["crop"], "batch_per_worker": t1["batch_per_worker"],
            "samples_s_1_worker": train_1, "samples_s_2_workers": train_2, "speedup": train_2 / train_1,
            "data_wait_1": t1["steady_data_wait_fraction"], "data_wait_2": t2["steady_data_wait_fraction"],
        },
        "segmentation": {
            "arch": seg["arch"], "d12_seconds_in_process": d12["end_to_end_s"],
            "d12_seconds_1_actor": split.get("wall_s_1_actors"),
            "d12_seconds_2_actors": split.get(f"wall_s_{split.get('actors')}_actors"),
            "speedup": split.get("speedup"), "cpu_side_mpx_s": cpu_side,
        },
    }  # fmt: skip
    params = params_of(args.arch)
    proj = project(args, gflop[args.arch], params, cpu_side)
    summary = {
        "machine": machine(),
        "measured": measured,
        "projection": proj,
        "assumptions": {k: v for k, v in vars(args).items() if k not in ("measure", "md", "out")},
        "gflop_per_512_window": gflop[args.arch],
        "params": params,
    }
    md = render(summary, args)
    print(md)
    with open(args.md, "w") as f:
        f.write(md)
    print(f"wrote {args.md}")
    write_results(args.out, summary)


def render(s: dict, args: argparse.Namespace) -> str:
    """bench/scaling.md."""
    m, p = s["measured"], s["projection"]
    tr, sg = m["training"], m["segmentation"]
    ps, pt, pp = p["segmentation"], p["training"], p["segmentation_at_paper_rate"]
    cpus = m["machine"].get("cpus")
    return f"""# Scaling: measured on this machine, projected for a GPU cluster

Written by `python -m bench.scaling` (figures from bench/results; `--measure` re-runs them).

## Measured here ({cpus} CPU cores, no GPU)

| what | 1 worker | 2 workers | speed-up |
|---|---|---|---|
| training, {tr["arch"]}, {tr["crop"]} px crops, batch {tr["batch_per_worker"]} per worker (samples/s, all workers) | {tr["samples_s_1_worker"]:.2f} | {tr["samples_s_2_workers"]:.2f} | {tr["speedup"]:.2f}x |
| segmentation of a D12-size scene (6000 x 4500), {sg["arch"]}, Ray actors (s) | {_f(sg["d12_seconds_1_actor"])} | {_f(sg["d12_seconds_2_actors"])} | {_f2(sg["speedup"])}x |

Both stay at about 1x because both workers share the same {cpus} cores: one worker
already keeps them busy (torch intra-op threads), so a second one splits the same
compute. What the table does show is that the distributed paths cost little: DDP over
gloo with the Ray Data pipeline keeps {100 * tr["speedup"]:.0f} % of the single-worker
rate (data wait {100 * tr["data_wait_1"]:.0f} % and {100 * tr["data_wait_2"]:.0f} % of
step time), and splitting a scene into row ranges on separate actors keeps
{_pct(sg["speedup"])} of the single-actor rate. Speed-up needs workers on separate
cores or GPUs, which is what the projection assumes. The CPU side of segmentation
(read, normalise, stitch, write COGs) ran at {sg["cpu_side_mpx_s"]:.1f} Mpx/s here.

## Projected: {args.nodes} x {args.node_type}, {args.arch}

Assumptions (each a `bench/scaling.py` option): {args.gpu_tflops:g} TFLOP/s dense fp16
per GPU, of which {100 * args.utilization:.0f} % is reached under autocast
({p["effective_tflops_per_gpu"]:.1f} TFLOP/s); {s["gflop_per_512_window"]:.1f} GFLOP per
512 px window (measured FLOP count), windows of {args.window} px overlapping by
{args.overlap} px; the CPU side scaled from this machine by vCPUs ({args.vcpus} per
node); scenes split across nodes at {100 * args.split_efficiency:.0f} % efficiency;
{s["params"] / 1e6:.1f} M parameters all-reduced in fp32 over {args.net_gbps:g} Gbit/s,
{100 * args.overlap_comm:.0f} % hidden behind the backward pass; USD {args.price_gpu}/h
on demand, {args.price_spot}/h spot per GPU node, {args.price_head}/h for the head;
{GSD_M} m pixels. Steady state (model loading and node start-up excluded). Not measured on a GPU: the
right-hand column bounds it from below.

| segmentation | projected | at the paper's rate |
|---|---|---|
| per node, GPU bound (Mpx/s) | {ps["gpu_bound_mpx_s_per_node"]:.1f} | {pp["mpx_s_per_node"]:.2f} |
| per node, CPU side bound (Mpx/s) | {ps["cpu_side_mpx_s_per_node"]:.1f} | - |
| seconds per D12-size scene, one node | {ps["d12_seconds_one_node"]:.1f} | {pp["d12_seconds_one_node"]:.0f} |
| seconds per D12-size scene, split over {args.nodes} nodes | {ps["d12_seconds_cluster"]:.1f} | - |
| D12-size scenes per hour, cluster | {ps["d12_scenes_per_hour_cluster"]:.0f} | {pp["d12_scenes_per_hour_cluster"]:.0f} |
| hours per 1000 km² at {GSD_M} m ({1000 / GSD_M**2:.0f} Mpx) | {ps["hours_per_1000km2"]:.2f} | {pp["hours_per_1000km2"]:.1f} |
| USD per 1000 km², on demand / spot | {ps["usd_per_1000km2"]["on_demand"]:.2f} / {ps["usd_per_1000km2"]["spot"]:.2f} | {pp["usd_per_1000km2"]["on_demand"]:.0f} / {pp["usd_per_1000km2"]["spot"]:.0f} |

"At the paper's rate" is the pessimistic bound: every node as slow as the paper's
Prop-152 on a TitanX (110 s for the D12 scene, {args.paper_mpx_s} Mpx/s, 2018 code).

| training ({args.crop} px crops, batch {args.batch} per GPU) | figure |
|---|---|
| samples/s, one GPU | {pt["samples_s_one_gpu"]:.0f} |
| all-reduce per step (s) | {pt["allreduce_s"]:.3f} |
| samples/s per GPU with DDP over {args.nodes} nodes | {pt["samples_s_per_gpu_ddp"]:.0f} |
| samples/s, cluster | {pt["samples_s_cluster"]:.0f} |
| scaling efficiency | {100 * pt["scaling_efficiency"]:.0f} % |

The segmentation projection is bound by {"the CPU side" if ps["cpu_side_mpx_s_per_node"] < ps["gpu_bound_mpx_s_per_node"] else "the GPU"}
of each node; the training projection by the gradient all-reduce once steps are short:
a larger batch per GPU or gradient accumulation raises the efficiency.
"""  # noqa: E501


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _f2(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


if __name__ == "__main__":
    main()
