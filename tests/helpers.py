"""Helpers shared by the tests (fixtures live in conftest.py): free ports, polling with a
deadline, jobs run as a user runs them, small training overrides, models with non-trivial
BatchNorm statistics, and a tiny exact model whose building score is an input band."""

from __future__ import annotations

import json
import os
import random
import runpy
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resseg_ray.models.bundle import BundleInfo, ModelBundle

ROOT = Path(__file__).resolve().parents[1]


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running stats and affine parameters, so that
    tests comparing outputs (bundles, folding) cannot pass on identity BatchNorms."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
    return model


# Ports for test servers come from 20000-32767: above Ray's worker ports (10002-19999) and
# below the kernel's ephemeral range (32768-60999), from which outgoing connections take
# their source ports. A port asked of the kernel with bind(0) is an ephemeral one: between
# closing the probe socket and the server binding it, any client connection can take it.
_PORT_RANGE = (20000, 32767)
_ports_given: set[int] = set()
_port_rng = random.Random(os.getpid())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and was not handed out before in this session."""
    for _ in range(1000):
        port = _port_rng.randint(*_PORT_RANGE)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {_PORT_RANGE} after 1000 tries")


def poll(check, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Call ``check`` until it returns a truthy value or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not ready yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout} s (last error: {last})")


SMALL_DATA = [
    "data.tile_size=96",
    "data.stride=48",
    "data.crop_size=64",
    "data.split_block=192",
    "data.stats_block=256",
    "data.loader_batch=8",
    "data.loader_num_cpus=0.5",
]
"""Overrides that scale the paper's tiling down to the small test scenes."""


def run_script(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``jobs/<script>`` as a user does: a subprocess from the repository root."""
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def assert_cogs(*paths: str | Path) -> None:
    """Each raster passes rio-cogeo's ``cog_validate`` (the field's COG validator), warnings
    included: tiled, overviews, IFDs before the data."""
    from rio_cogeo.cogeo import cog_validate

    for path in paths:
        valid, errors, warns = cog_validate(str(path), quiet=True)
        assert valid and not warns, f"{path} is not a clean COG: errors {errors}, warnings {warns}"


def run_here(script: str, *args: str, capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """Run ``jobs/<script>`` in this process, as ``python jobs/<script>`` would (``runpy``):
    for the many quick refusals, without a subprocess's start-up (about 5 s each here)."""
    argv = sys.argv
    sys.argv = [str(ROOT / "jobs" / script), *args]
    code = 0
    try:
        runpy.run_path(str(ROOT / "jobs" / script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(sys.argv, code, captured.out, captured.err)


def small_train_overrides(
    dataset: str, storage: str, tracking_uri: str, name: str, **extra: object
) -> list[str]:
    """Overrides for a quick 2-worker CPU training on the small demo (prop18, 64 px crops)."""
    items = {
        "train.dataset": dataset,
        "model.arch": "prop18",
        "train.epochs": 3,
        "train.batch_size": 4,
        "train.train_tiles_per_epoch": 16,
        "train.val_tiles": 8,
        "train.patience": 0,
        "train.quicklook_samples": 2,
        "scaling.num_workers": 2,
        "scaling.cpus_per_worker": 0.5,
        "scaling.torch_threads": 1,
        "run.name": name,
        "run.storage_path": storage,
        "mlflow.tracking_uri": tracking_uri,
        "mlflow.experiment": "tests",
        "mlflow.registered_model": "test-buildings",
        **extra,
    }
    return [*SMALL_DATA, *(f"{k}={v}" for k, v in items.items())]


class BandAsLogit(nn.Module):
    """Logits (0, band 0): softmax gives sigmoid(normalised band 0) as the building probability."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1]], 1)


def band_bundle(mean: float = 100.0, std: float = 50.0) -> ModelBundle:
    info = BundleInfo(
        model={"name": "band-as-logit", "in_bands": 2, "num_classes": 2},
        band_names=["a", "b"],
        class_names=["ground", "building"],
        norm_mean=[mean, 100.0],
        norm_std=[std, 50.0],
        tile_size=64,
        package_versions={},
        created="",
    )
    return ModelBundle(model=BandAsLogit(), info=info)


def band_probability(band: np.ndarray, mean: float = 100.0, std: float = 50.0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(band.astype(np.float64) - mean) / std))


CHROMIUM = "/usr/bin/chromium"
_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the machine has no internet: no calls out at start
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)


def _chromium(
    url: str, profile: Path, *args: str, budget_ms: int = 20000
) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (as root)")
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            CHROMIUM,
            *_CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def browser_text(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The text of a page as a real headless browser renders it (scripts run), whitespace
    collapsed; with ``screenshot``, also a PNG of it from the same browser run."""
    import html
    import re

    shot = (f"--screenshot={screenshot}",) if screenshot is not None else ()
    dom = _chromium(url, profile / "text", "--dump-dom", *shot).stdout
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def points_geojson(path: Path) -> str:
    """A GeoJSON file of one point (vector data without a polygon)."""
    point = {"type": "Point", "coordinates": [14.4, 45.5]}
    feature = {"type": "Feature", "properties": {}, "geometry": point}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return str(path)
