"""The GPU check: what no CPU can show, in one short run (under 8 minutes on one GPU), for the
sessions that are lent a GPU machine. Each step is one of the project's benchmarks run as its
own process with a deadline; a step that fails or runs out of time is recorded and the next
one runs; the figures of every step go into one JSON.

    python -m bench.gpu_check                        # on a GPU machine: writes bench/results/gpu_check.json
    python -m bench.gpu_check --out $OUT/gpu_check.json --budget-s 450
    python -m bench.gpu_check --device cpu --quick   # the same steps, tiny, on a CPU (a dry run)

Steps (``--device cuda``):

1. ``environment``: the GPU, its memory, CUDA, cuDNN and NCCL versions, bf16 support;
2. ``model_<precision>``: ``bench/model_throughput.py`` inference Mpx/s of prop18, prop152 and
   unet19 in fp32, bf16 and fp16 autocast (channels-last);
3. ``train_<arch>``: ``bench/train_throughput.py`` steps of prop18 and prop152 with bf16
   autocast on one GPU worker through Ray Train (the NCCL backend of a 1-worker DDP run);
4. ``predict``: ``bench/predict_scene.py`` a D12-size scene (6000 x 4500 x 4) end to end with
   prop152, in-process and through ``--actors 1``;
5. ``serve``: ``bench/serve_load.py`` 512 px images at concurrency 8 and 32, batching off
   and on, the model replica on the GPU (``serve.use_gpu=true``).

Steps whose Python packages are missing are recorded as not run, with what they need. The
lent H200 machine runs its own Python 3.12 image with torch but without Ray, rasterio or
MLflow, and nothing can be fetched there; Ray's cp312 wheel (79 MB) is over the 64 MiB a call
may carry. So the check also has a torch-only step, ``ddp_<arch>``: training steps/s of a
1-process DistributedDataParallel run over NCCL (gloo on a CPU) with the project's networks
and device policy (bf16 autocast on CUDA). It and the ``model_*`` steps need only torch,
safetensors, PyYAML and fsspec, all in that image:

    python3 -m bench.gpu_check --out $OUT/gpu_check.json   # there: ddp_* and model_* run

With ``--quick`` every step is shrunk (one architecture, small tiles and scenes, seconds of
load) so that the orchestration itself can be checked on a CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.results_io import machine, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def environment() -> dict:
    """What the GPU and its libraries are (empty where there is no CUDA)."""
    import torch

    out: dict = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(
            gpu=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            nccl=".".join(str(x) for x in torch.cuda.nccl.version()),
            bf16=torch.cuda.is_bf16_supported(),
        )
    return out


NEEDS = {
    "ddp": ["torch", "numpy", "fsspec"],  # fsspec comes with torch; tests/models/test_imports.py
    "model": ["torch", "numpy", "fsspec"],
    "train": ["ray", "mlflow", "rasterio", "pyarrow", "dask"],
    "predict": ["ray", "rasterio", "shapely", "pyarrow"],
    "serve": ["ray", "fastapi", "httpx", "rasterio", "rio_tiler"],
}
"""Python packages each kind of step imports."""


def missing(step: str) -> list[str]:
    """The packages step ``step`` needs that are not installed here."""
    import importlib.util

    return [m for m in NEEDS[step.split("_")[0]] if importlib.util.find_spec(m) is None]


def ddp_steps(arch: str, device: str, quick: bool, out: str) -> None:
    """Training steps/s of ``arch`` in a 1-process DDP group (NCCL on CUDA, gloo on CPU) with
    the project's device policy (bf16 autocast on CUDA), on random 4-band crops; JSON to ``out``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from resseg_ray.device import DevicePolicy
    from resseg_ray.models import build_model

    policy = DevicePolicy.resolve(device, precision="auto")
    backend = "nccl" if policy.device.type == "cuda" else "gloo"
    port = 29500 + os.getpid() % 1000
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0)
    batch, crop, timed = (2, 64, 3) if quick else (16, 256, 20)
    model = policy.prepare_model(build_model(arch, in_bands=4))
    ddp = DistributedDataParallel(model, device_ids=[0] if backend == "nccl" else None)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    scaler = policy.grad_scaler()
    x = policy.prepare_batch(torch.randn(batch, 4, crop, crop))
    y = torch.randint(0, 2, (batch, crop, crop), device=policy.device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with policy.autocast():
            loss = torch.nn.functional.cross_entropy(ddp(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    if backend == "nccl":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(timed):
        step()
    if backend == "nccl":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "arch": arch,
        "backend": backend,
        "policy": policy.describe(),
        "batch": batch,
        "crop": crop,
        "steps_per_s": round(timed / seconds, 3),
        "samples_per_s": round(timed * batch / seconds, 2),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if backend == "nccl" else None,
    }
    dist.destroy_process_group()
    print(json.dumps(result))
    with open(out, "w") as f:
        json.dump(result, f)


def steps(device: str, quick: bool, tmp: str) -> list[tuple[str, list[str], str, float]]:
    """(name, command, JSON it writes, seconds allowed) of each step."""
    gpu = device == "cuda"
    out: list[tuple[str, list[str], str, float]] = []
    for arch in ["prop18"] if quick else ["prop18", "prop152"]:
        path = os.path.join(tmp, f"ddp_{arch}.json")
        cmd = [PY, "-m", "bench.gpu_check", "--device", device, "--ddp-worker", arch, "--out", path]
        out.append((f"ddp_{arch}", cmd + (["--quick"] if quick else []), path, 60.0))
    archs = ["prop18"] if quick else ["prop18", "prop152", "unet19"]
    size = ["--size", "128", "--batch", "2", "--repeats", "1"] if quick else ["--size", "512", "--batch", "8"]
    for precision in ["fp32", "bf16"] if quick else ["fp32", "bf16", "fp16"]:
        path = os.path.join(tmp, f"model_{precision}.json")
        cmd = [PY, "-m", "bench.model_throughput", "--device", device, "--precision", precision,
               "--archs", *archs, "--formats", "channels_last", *size, "--json", path]  # fmt: skip
        out.append((f"model_{precision}", cmd, path, 60.0 if quick else 75.0))
    if gpu:  # torch.compile where it may help: the GPU's bf16 path (inductor's CPU build is minutes)
        path = os.path.join(tmp, "model_bf16_compiled.json")
        cmd = [PY, "-m", "bench.model_throughput", "--device", device, "--precision", "bf16", "--compile",
               "--archs", "prop18", "prop152", "--formats", "channels_last", *size,
               "--json", path]  # fmt: skip
        out.append(("model_bf16_compiled", cmd, path, 120.0))
    for arch in ["prop18"] if quick else ["prop18", "prop152"]:
        path = os.path.join(tmp, f"train_{arch}.json")
        sets = [f"model.arch={arch}", f"scaling.use_gpu={'true' if gpu else 'false'}",
                f"train.precision={'bf16' if gpu else 'fp32'}"]  # fmt: skip
        if gpu:
            sets += [
                "scaling.cpus_per_worker=4",
                "data.loader_num_cpus=1",
                "train.batch_size=16",
                "data.crop_size=256",
            ]
        cmd = [PY, "-m", "bench.train_throughput", "--epochs", "2", "--tiles", "16" if quick else "256",
               *(x for s in sets for x in ("--set", s)), "--out", path]  # fmt: skip
        out.append((f"train_{arch}", cmd, path, 150.0 if quick else 100.0))
    path = os.path.join(tmp, "predict.json")
    scene = ["--width", "768", "--height", "640", "--arch", "prop18"] if quick else ["--arch", "prop152"]
    cmd = [
        PY,
        "-m",
        "bench.predict_scene",
        "--device",
        device,
        *scene,
        "--no-big",
        "--actors",
        "1",
        "--out",
        path,
    ]
    out.append(("predict", cmd, path, 120.0 if quick else 90.0))
    path = os.path.join(tmp, "serve.json")
    small = ["--sizes", "256", "--concurrency", "2", "--batch-sizes", "4", "--duration", "3"]
    full = ["--sizes", "512", "--concurrency", "8", "32", "--batch-sizes", "1", "8", "--duration", "10"]
    load = small if quick else full
    cmd = [
        PY,
        "-m",
        "bench.serve_load",
        *load,
        "--set",
        f"serve.use_gpu={'true' if gpu else 'false'}",
        "--out",
        path,
    ]
    out.append(("serve", cmd, path, 120.0 if quick else 110.0))
    return out


def run_step(name: str, cmd: list[str], path: str, limit: float) -> dict:
    """One step as its own process (its own process group, killed at ``limit`` seconds)."""
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=limit)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        status = f"timed out after {limit:g} s"
    seconds = round(time.perf_counter() - start, 1)
    tail = [line for line in (output or "").splitlines() if line.strip()][-15:]
    print("\n".join(tail), flush=True)
    print(f"-- {name}: {status} in {seconds} s", flush=True)
    result: dict = {"status": status, "seconds": seconds, "command": " ".join(cmd[1:])}
    if os.path.isfile(path):
        with open(path) as f:
            result["figures"] = json.load(f)
    else:
        result["output_tail"] = tail
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="tiny steps (a dry run of the orchestration)")
    p.add_argument("--budget-s", type=float, default=450.0, help="no step starts after this many seconds")
    p.add_argument("--only", nargs="+", help="run only these steps (e.g. model_bf16 serve)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "gpu_check.json"))
    p.add_argument("--ddp-worker", metavar="ARCH", help=argparse.SUPPRESS)  # the ddp step's own process
    args = p.parse_args()
    if args.ddp_worker:
        ddp_steps(args.ddp_worker, args.device, args.quick, args.out)
        return
    env = environment()
    if args.device == "cuda" and not env["cuda_available"]:
        sys.exit(
            "error: --device cuda: torch sees no CUDA GPU here; run it on a GPU machine or give --device cpu"
        )
    print(json.dumps(env), flush=True)
    started = time.perf_counter()
    results: dict = {
        "machine": machine(),
        "environment": env,
        "device": args.device,
        "quick": args.quick,
        "steps": {},
    }
    with tempfile.TemporaryDirectory(prefix="resseg-gpu-check-") as tmp:
        for name, cmd, path, limit in steps(args.device, args.quick, tmp):
            if args.only and name not in args.only:
                continue
            lacking = missing(name)
            if lacking:
                results["steps"][name] = {"status": f"not run: needs {', '.join(lacking)} here"}
                print(f"-- {name}: not run (needs {', '.join(lacking)})", flush=True)
                continue
            left = args.budget_s - (time.perf_counter() - started)
            if left < 20:
                results["steps"][name] = {"status": "not run: the budget was spent"}
                print(f"-- {name}: not run (budget spent)", flush=True)
                continue
            results["steps"][name] = run_step(name, cmd, path, min(limit, left))
            write_results(args.out, results)  # what ran so far survives a kill
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, results)
    print(f"{sum(s['status'] == 'ok' for s in results['steps'].values())}/{len(results['steps'])} steps ok "
          f"in {results['seconds']} s")  # fmt: skip


if __name__ == "__main__":
    main()
