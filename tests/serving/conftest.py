"""One segmentation service for all the serving tests (package scope: Serve starts once),
with a random prop18 model and, for the map page, the outputs of a real predict run on two
scenes (masks, probabilities, polygons, their STAC catalog) and of a real damage run on a pair."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from resseg_ray.config import PredictSection, load_config
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.batch import predict_scene
from resseg_ray.inference.outputs import output_options
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.stac_items import ModelProvenance, write_run_catalog
from resseg_ray.models import build_model
from resseg_ray.models.bundle import load_bundle, save_bundle
from tests.helpers import CHROMIUM, free_port, poll, randomize_batchnorm
from tests.serving.service import APP, BANDS, OVERLAP, TOKEN, WINDOW, image


@pytest.fixture(scope="package")
def bundle(tmp_path_factory) -> str:
    import torch

    path = tmp_path_factory.mktemp("serve") / "m.resseg.safetensors"
    torch.manual_seed(2)  # random weights whose masks have dozens of buildings on the test scenes
    save_bundle(
        path,
        randomize_batchnorm(build_model("prop18", in_bands=4)),
        norm_mean=[1500.0] * 4,
        norm_std=[800.0] * 4,
        band_names=BANDS,
        extra={"normalization": "pooled"},
    )
    return str(path)


@pytest.fixture(scope="package")
def damage_bundle(tmp_path_factory) -> str:
    """A random damage network (/v1/damage), its BatchNorm randomised so its maps hold each class."""
    import torch

    from resseg_ray.data.pairs import CLASS_NAMES

    path = tmp_path_factory.mktemp("serve-damage") / "damage.resseg.safetensors"
    torch.manual_seed(3)
    save_bundle(
        path,
        randomize_batchnorm(build_model("damage-prop18", in_bands=8, num_classes=len(CLASS_NAMES))),
        norm_mean=[1500.0] * 8,
        norm_std=[800.0] * 8,
        band_names=[f"pre:{b}" for b in BANDS] + [f"post:{b}" for b in BANDS],
        class_names=CLASS_NAMES,
        extra={"normalization": "pooled"},
    )
    return str(path)


@pytest.fixture(scope="package")
def map_catalog(bundle, tmp_path_factory) -> str:
    """``jobs/predict.py``'s outputs (with polygons and the STAC catalog) of two scenes."""
    folder = tmp_path_factory.mktemp("maps")
    scenes = [
        image(folder / f"scene_{i}.tif", h=256, w=320, seed=10 + i, descriptions=BANDS) for i in range(2)
    ]
    predict = PredictSection(window=OVERLAP[0], overlap=OVERLAP[1], device="cpu", polygons=True, min_area=0.0)
    settings = StorageSettings()
    options = output_options(predict, settings)
    predictor = ScenePredictor(load_bundle(bundle), predict)
    out = str(folder / "out")
    reports = [predict_scene(predictor, s, out, settings, options) for s in scenes]
    model = ModelProvenance(bundle, "prop18", "0" * 64)
    from resseg_ray.geo.stac import SceneInputs

    finished = [(r.uri, r.buildings, r.already_mapped, r.engine) for r in reports]
    href, _ = write_run_catalog(out, finished, options, predict, model, SceneInputs(), settings)
    return href


class GradeByPost(torch.nn.Module):
    """A damage network by hand, for maps a test can predict: a building where the pre-event
    image's first band is bright (a roof), graded by the post-event image's second band
    (:data:`GRADE_LEVELS`: the brighter, the less damaged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        roof = 4.0 * (x[:, :1] - 1.0)  # normalised (mean 1500, std 800): roofs 2800 -> 2.4
        post = x[:, 5:6]
        grades = [roof - 6.0 * (post - (v - 1500.0) / 800.0).abs() for v in GRADE_LEVELS]
        return torch.cat([torch.zeros_like(roof), *grades], 1)


GRADE_LEVELS = (2800.0, 2200.0, 1600.0, 1000.0)
"""The post-event second band of a roof of each damage class, no damage to destroyed."""


def damage_pair(folder: Path) -> tuple[str, str]:
    """A pre/post pair of 320 x 256 px: twelve roofs on a noisy dark ground before; after, the
    ground in dark and bright stripes (a screenshot tells which image shows where) and each
    roof's second band at its damage class's level (three roofs of each class)."""
    from tests.rasters import write_tif

    rng = np.random.default_rng(20)
    pre = rng.integers(300, 600, size=(4, 256, 320)).astype(np.uint16)
    stripes = np.where((np.arange(320) // 16) % 2 == 0, 200, 1400).astype(np.uint16)
    post = np.broadcast_to(stripes, (4, 256, 320)).copy()
    for k in range(12):
        r, c = 30 + 70 * (k // 4), 25 + 75 * (k % 4)
        pre[:, r : r + 24, c : c + 24] = 2800
        post[:, r : r + 24, c : c + 24] = 2800
        post[1, r : r + 24, c : c + 24] = GRADE_LEVELS[k % 4]
    return (
        write_tif(folder / "zone_9_pre.tif", pre, nodata=0, descriptions=BANDS),
        write_tif(folder / "zone_9_post.tif", post, nodata=0, descriptions=BANDS),
    )


@pytest.fixture(scope="package")
def damage_catalog(damage_bundle, tmp_path_factory) -> str:
    """``jobs/damage.py``'s outputs of the pair ``zone_9`` (:func:`damage_pair`) mapped by
    :class:`GradeByPost`: twelve buildings, three of each class, their STAC item and catalog."""
    from resseg_ray.inference.damage import map_damage
    from resseg_ray.inference.damage_stac import write_damage_catalog, write_damage_item
    from resseg_ray.models.bundle import ModelBundle

    folder = tmp_path_factory.mktemp("damage-maps")
    pre, post = damage_pair(folder)
    predict = PredictSection(window=OVERLAP[0], overlap=OVERLAP[1])
    by_hand = ModelBundle(model=GradeByPost(), info=load_bundle(damage_bundle).info)
    settings = StorageSettings()
    out = str(folder / "out")
    report = map_damage(ScenePredictor(by_hand, predict), pre, post, out, settings, "zone_9")
    assert report.buildings == {"no-damage": 3, "minor-damage": 3, "major-damage": 3, "destroyed": 3}
    item = write_damage_item(report, out, "grade-by-post", settings)
    assert item is not None
    written = write_damage_catalog(out, [item], ["zone_9"], settings)
    assert written is not None
    return written[0]


REFINE = [
    "data.tile_size=64",
    "data.stride=32",
    "data.crop_size=64",
    "data.split_block=64",
    "data.stats_block=256",
    "data.loader_batch=8",
    "data.loader_num_cpus=0.25",
    "train.epochs=2",
    "train.batch_size=4",
    "train.train_tiles_per_epoch=8",
    "train.val_tiles=4",
    "train.patience=0",
    "train.lr=0.0001",
    "train.select=last",
    "train.quicklook_samples=0",
    "train.min_gain=0",  # the verdict keeps the refined model unless the served one scores higher
    "predict.runtime=torch",  # the verdict's scores, the same on every run
    "predict.precision=fp32",
    "scaling.num_workers=1",
    "scaling.cpus_per_worker=0.5",
    "scaling.torch_threads=1",
    "mlflow.experiment=map-refinements",
    "mlflow.registered_model=test-map-{task}",
    *WINDOW,
]
"""The map page's refinements in the tests: a 2-epoch schedule of 64 px tiles on one worker."""


@pytest.fixture(scope="package")
def refine_config(tmp_path_factory) -> str:
    """A YAML refinement configuration (``serve.refine_config``) with its own SQLite MLflow store."""
    import yaml

    from resseg_ray.config import apply_override

    folder = tmp_path_factory.mktemp("refine")
    raw: dict = {}
    for item in [*REFINE, f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}"]:
        apply_override(raw, item)
    path = folder / "refine.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


ADDED_DIR: list[str] = []
"""serve.scenes_dir of the test service (set when it starts)."""
REFINE_DIR: list[str] = []
"""serve.refine_dir of the test service (set when it starts)."""


@pytest.fixture(scope="package")
def service(
    bundle,
    damage_bundle,
    map_catalog,
    damage_catalog,
    refine_config,
    ray_session,
    s3_settings,
    tmp_path_factory,
):
    """The application on a free port, two model replicas (for the crash test), a damage network."""
    from ray import serve

    from resseg_ray.serving.app import build_app

    ADDED_DIR[:] = [str(tmp_path_factory.mktemp("added") / "scenes")]
    REFINE_DIR[:] = [str(tmp_path_factory.mktemp("refinements"))]
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = load_config(
        None,
        [
            f"serve.model={bundle}",
            f"serve.damage_model={damage_bundle}",
            *WINDOW,
            "serve.max_batch_size=4",
            "serve.min_replicas=2",
            "serve.max_replicas=2",
            "serve.cpus_per_replica=0.25",
            "serve.ingress_cpus=0.25",
            "serve.ingress_max_ongoing_requests=2",
            "serve.ingress_max_queued_requests=2",
            "serve.max_body_mb=2",
            "serve.max_pixels=1000000",
            "serve.body_idle_timeout_s=1",
            "serve.allowed_prefixes=[s3://serve-allowed/post/]",
            f"serve.map_catalogs=[{map_catalog},{damage_catalog}]",
            f"serve.annotations_dir={tmp_path_factory.mktemp('annotations')}",
            f"serve.api_token={TOKEN}",
            "serve.max_annotation_mb=1",
            f"serve.refine_config={refine_config}",
            f"serve.damage_refine_config={refine_config}",
            f"serve.refine_dir={REFINE_DIR[0]}",
            "serve.max_refine_jobs=1",
            "serve.max_refine_epochs=50",
            f"serve.scenes_dir={ADDED_DIR[0]}",
            f"storage.endpoint_url={s3_settings.endpoint_url}",
        ],
    )
    serve.run(build_app(cfg), name=APP, route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    poll(lambda: httpx.get(url + "/healthz", timeout=5).status_code == 200, timeout=60, what="service")
    yield url
    serve.delete(APP)
    serve.shutdown()


def scene_ids(catalog: str) -> list[str]:
    """The item ids of a catalog (the scene ids of the map)."""
    import pystac

    return sorted(i.id for i in pystac.Catalog.from_file(catalog).get_items())


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Debian's, driven by Playwright) for the page tests of a module."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()
