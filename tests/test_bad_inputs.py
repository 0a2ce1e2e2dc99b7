"""Bad input at every edge: each family gets a one-line ``error:`` naming the file or field and
what to do, exit status 2, no traceback, and nothing written under a final name.

The jobs run in this process (``runpy``, as ``python jobs/<x>.py`` would), so that the many
generated cases stay fast; each case checks the message, the exit code and the outputs.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resseg_ray.models import build_model
from resseg_ray.models.bundle import save_bundle
from tests.helpers import randomize_batchnorm, run_here
from tests.rasters import write_tif

ROOT = Path(__file__).resolve().parents[1]
BANDS = ["blue", "green", "red", "nir"]
CASES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run(script: str, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``jobs/<script>`` in this process; its exit status and its stderr (its stdout, the
    progress and the results, is kept as ``run.stdout``)."""
    proc = run_here(script, *args, capsys=capsys)
    run.stdout = proc.stdout  # type: ignore[attr-defined]
    return proc.returncode, proc.stderr


def assert_refused(code: int, err: str, *names: str) -> str:
    """Exit 2 and exactly one ``error:`` line (warnings aside) naming each of ``names``."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bad") / "m.resseg.safetensors"
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model("prop18", in_bands=4))
    save_bundle(path, model, norm_mean=[1000.0] * 4, norm_std=[300.0] * 4, band_names=BANDS)
    return str(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> str:
    data = np.random.default_rng(0).integers(1, 2000, size=(4, 64, 64)).astype(np.uint16)
    return write_tif(tmp_path_factory.mktemp("scenes") / "s.tif", data, nodata=0, descriptions=BANDS)


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# numbers: NaN, infinite, zero or negative where meaningless, in flags and in the config alike
# ---------------------------------------------------------------------------------------------

BAD_FLAGS = st.one_of(
    st.tuples(st.sampled_from(["--window", "--batch-size"]), st.sampled_from(["0", "-1", "-512", "99999"])),
    st.tuples(st.just("--overlap"), st.sampled_from(["-1", "512", "4000"])),
    st.tuples(
        st.sampled_from(["--min-area", "--simplify"]), st.sampled_from(["nan", "inf", "-inf", "-1", "-0.5"])
    ),
    st.tuples(st.just("--cpus-per-actor"), st.sampled_from(["nan", "inf", "0", "-1"])),
    st.tuples(st.sampled_from(["--split-mpx", "--gpus-per-actor"]), st.sampled_from(["nan", "inf", "-1"])),
)


@CASES
@given(case=BAD_FLAGS)
def test_bad_numbers_in_flags(case, bundle, scene, tmp_path, capsys) -> None:
    flag, value = case
    out = tmp_path / f"out{abs(hash(case))}"
    extra = ["--polygons"] if flag in ("--min-area", "--simplify") else []
    code, err = run(
        "predict.py", "--model", bundle, "--scenes", scene, "--out", str(out), *extra, f"{flag}={value}",
        capsys=capsys,
    )  # fmt: skip
    assert_refused(code, err, flag)
    assert not out.exists()


BAD_FIELDS = st.sampled_from(
    [
        ("predict.window", "0"),
        ("predict.overlap", "-3"),
        ("predict.batch_size", "0"),
        ("predict.min_area", ".nan"),
        ("predict.simplify", ".inf"),
        ("predict.blend", "smooth"),
        ("predict.bands", "[0, 1]"),
        ("predict.device", "tpu"),
        ("data.tile_size", "0"),
        ("data.val_fraction", ".nan"),
        ("train.lr", ".nan"),
        ("train.weight_decay", ".inf"),
        ("train.momentum", "-.inf"),
        ("scaling.cpus_per_worker", "0"),
        ("serve.max_body_mb", ".nan"),
        ("serve.body_idle_timeout_s", "0"),
    ]
)


@CASES
@given(case=BAD_FIELDS)
def test_bad_numbers_in_the_config(case, bundle, scene, tmp_path, capsys) -> None:
    field, value = case
    out = tmp_path / "out"
    code, err = run(
        "predict.py", "--model", bundle, "--scenes", scene, "--out", str(out), "--set", f"{field}={value}",
        capsys=capsys,
    )  # fmt: skip
    assert_refused(code, err, field)
    assert not out.exists()


@pytest.mark.parametrize(
    "content", [b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)), b"a: [1, 2\n", b"just text"]
)
def test_configs_that_are_not_yaml_mappings(content: bytes, bundle, scene, tmp_path, capsys) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(content)
    out = tmp_path / "out"
    args = ("--model", bundle, "--scenes", scene, "--out", str(out), "--config", str(cfg))
    assert_refused(*run("predict.py", *args, capsys=capsys), str(cfg))
    assert not out.exists()
    args = ("--model", bundle, "--scenes", scene, "--out", str(out), "--config", str(tmp_path))
    assert_refused(*run("predict.py", *args, capsys=capsys), "folder")


# ---------------------------------------------------------------------------------------------
# bundles: one schema at load, whatever wrote the file; weights and outputs that are not finite
# ---------------------------------------------------------------------------------------------


def _rewrite_meta(src: str, dst: Path, change) -> str:
    """A copy of bundle ``src`` whose resseg metadata went through ``change(dict) -> dict``."""
    data = Path(src).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["resseg_bundle"])
    header["__metadata__"]["resseg_bundle"] = json.dumps(change(meta))  # NaN allowed: hostile files
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return str(dst)


def _meta(**fields):
    def change(meta: dict) -> dict:
        for k, v in fields.items():
            if k.startswith("model."):
                meta["model"][k[len("model.") :]] = v
            else:
                meta[k] = v
        return meta

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_meta(norm_std=[300.0, 0.0, 300.0, 300.0]), "norm_std"),
        (_meta(norm_std=[300.0, math.nan, 300.0, 300.0]), "norm_std"),
        (_meta(norm_mean=[1.0, 2.0]), "norm_mean"),
        (_meta(band_names=["a", "b", "c"]), "band_names"),
        (_meta(**{"model.name": "resnet9000"}), "resnet9000"),
        (_meta(**{"model.in_bands": "4"}), "in_bands"),
        (_meta(tile_size=-4), "tile_size"),
        (_meta(class_names=["only"]), "class_names"),
        (lambda meta: [meta], "is a JSON list, not an object"),
        (_meta(format_version="1"), "format_version '1'"),
        (_meta(**{"model.options": {"no_such_option": 3}}), "cannot be built from its metadata"),
    ],
)
def test_bundles_with_broken_metadata(change, says, bundle, scene, tmp_path, capsys) -> None:
    broken = _rewrite_meta(bundle, tmp_path / "broken.resseg.safetensors", change)
    out = tmp_path / "out"
    code, err = run("predict.py", "--model", broken, "--scenes", scene, "--out", str(out), capsys=capsys)
    assert_refused(code, err, "broken.resseg.safetensors", says)
    assert not out.exists()


def _with_weights(bundle: str, dst: Path, change) -> str:
    from resseg_ray.models.bundle import load_bundle

    b = load_bundle(bundle)
    with torch.no_grad():
        change(b.model)
    i = b.info
    save_bundle(dst, b.model, norm_mean=i.norm_mean, norm_std=i.norm_std, band_names=i.band_names)
    return str(dst)


def test_a_bundle_with_nan_weights_maps_nothing(bundle, scene, tmp_path, capsys) -> None:
    path = tmp_path / "nan.resseg.safetensors"
    nan = _with_weights(bundle, path, lambda m: m.classifier.weight.fill_(math.nan))
    out = tmp_path / "out"
    code, err = run("predict.py", "--model", nan, "--scenes", scene, "--out", str(out), capsys=capsys)
    assert_refused(code, err, "nan.resseg.safetensors", "NaN")
    assert not out.exists()


def test_a_network_output_that_is_not_finite_is_an_error_not_a_map(bundle, scene, tmp_path, capsys) -> None:
    def explode(model: torch.nn.Module) -> None:  # finite weights whose activations overflow
        for p in model.parameters():
            if p.dim() == 4:
                p.mul_(1e6)

    huge = _with_weights(bundle, tmp_path / "huge.resseg.safetensors", explode)
    out = tmp_path / "out"
    code, err = run(
        "predict.py", "--model", huge, "--scenes", scene, "--out", str(out), "--device", "cpu", capsys=capsys
    )
    line = assert_refused(code, err, "s.tif", "not finite")
    assert "no map is written" in line
    assert [n for n in _outputs(out) if n.endswith((".tif", ".geojson"))] == []


def test_a_scene_beyond_float32_is_an_error_not_a_map(bundle, tmp_path, capsys) -> None:
    data = np.full((4, 64, 64), 1000.0, np.float64)
    data[:, 10:20, 10:20] = 1e300  # finite in float64, infinite in the network's float32
    scene = write_tif(tmp_path / "f64.tif", data, descriptions=BANDS)
    out = tmp_path / "out"
    code, err = run("predict.py", "--model", bundle, "--scenes", scene, "--out", str(out), capsys=capsys)
    assert_refused(code, err, "f64.tif", "float32")
    assert [n for n in _outputs(out) if n.endswith((".tif", ".geojson"))] == []


def test_a_gdal_default_alpha_band_names_the_bands_flag(bundle, tmp_path, capsys) -> None:
    import rasterio

    from tests.rasters import transform

    path = tmp_path / "rgbn.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 4, "dtype": "uint8"}
    with rasterio.open(path, "w", crs="EPSG:32633", transform=transform(), **profile) as dst:
        dst.write(np.random.default_rng(1).integers(1, 255, (4, 64, 64)).astype(np.uint8))
    out = tmp_path / "out"
    code, err = run("predict.py", "--model", bundle, "--scenes", str(path), "--out", str(out), capsys=capsys)
    assert_refused(code, err, "rgbn.tif", "alpha", "--bands 1 2 3 4")


# ---------------------------------------------------------------------------------------------
# destinations, checked before any compute; nothing the user had is lost
# ---------------------------------------------------------------------------------------------


def test_destinations_that_cannot_be_written(bundle, scene, tmp_path, capsys) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    for out, says in (
        (a_file, "is a file"),
        (a_file / "sub", "cannot be created"),
        (Path("/proc/x"), "--out"),
    ):
        code, err = run("predict.py", "--model", bundle, "--scenes", scene, "--out", str(out), capsys=capsys)
        assert_refused(code, err, "--out", says)
    assert a_file.read_text() == "mine"


def test_a_missing_s3_bucket_is_refused_first(bundle, scene, s3_settings, capsys, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_settings.endpoint_url)
    out = "s3://no-such-bucket-here/maps"
    code, err = run("predict.py", "--model", bundle, "--scenes", scene, "--out", out, capsys=capsys)
    assert_refused(code, err, "no-such-bucket-here")


def test_same_scene_names_from_two_folders_are_told_apart(bundle, tmp_path, capsys) -> None:
    """Two ``D12.tif`` of two folders are mapped in one run under their folder names; outputs
    that would still share a name are refused before any work."""
    from resseg_ray.config import PredictSection
    from resseg_ray.errors import ConfigError
    from resseg_ray.geo.storage import StorageSettings
    from resseg_ray.inference.outputs import check_destination, output_options

    data = np.random.default_rng(2).integers(1, 2000, size=(4, 40, 40)).astype(np.uint16)
    (tmp_path / "day1").mkdir()
    (tmp_path / "day2").mkdir()
    pre = write_tif(tmp_path / "day1" / "D12.tif", data, descriptions=BANDS)
    post = write_tif(tmp_path / "day2" / "D12.tif", data, descriptions=BANDS)
    out = tmp_path / "maps"
    code, err = run("predict.py", "--model", bundle, "--scenes", pre, post, "--out", str(out), "--no-stac",
                    "--window", "32", "--overlap", "8", capsys=capsys)  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*_mask.tif")) == ["D12_day1_mask.tif", "D12_day2_mask.tif"]
    same = output_options(PredictSection())  # named by file name only: one name for both
    with pytest.raises(ConfigError, match=r"2 scenes would be named 'D12'.*day1.*day2"):
        check_destination(str(tmp_path / "other"), [pre, post], same, StorageSettings())
    assert not (tmp_path / "other").exists()


def test_out_equal_to_the_scenes_folder_is_refused(bundle, scene, capsys) -> None:
    folder = str(Path(scene).parent)
    code, err = run("predict.py", "--model", bundle, "--scenes", scene, "--out", folder, capsys=capsys)
    assert_refused(code, err, "folder of the input scenes")
    assert sorted(p.name for p in Path(folder).iterdir()) == ["s.tif"]


def test_a_users_file_under_an_output_name_is_neither_skipped_nor_replaced(
    bundle, scene, tmp_path, capsys
) -> None:
    out = tmp_path / "maps"
    out.mkdir()
    mine = out / "s_mask.tif"
    mine.write_bytes(b"my own map")
    for extra in ((), ("--overwrite",)):
        args = ("--model", bundle, "--scenes", scene, "--out", str(out), *extra)
        assert_refused(*run("predict.py", *args, capsys=capsys), "s_mask.tif", "not written by resseg-ray")
        assert mine.read_bytes() == b"my own map"
    # the project's own finished outputs are recognised: a re-run skips them
    other = tmp_path / "maps2"
    assert run("predict.py", "--model", bundle, "--scenes", scene, "--out", str(other), capsys=capsys)[0] == 0
    written = (other / "s_mask.tif").stat().st_mtime_ns
    code, _ = run("predict.py", "--model", bundle, "--scenes", scene, "--out", str(other), capsys=capsys)
    assert code == 0 and "outputs complete, skipped" in run.stdout  # type: ignore[attr-defined]
    assert (other / "s_mask.tif").stat().st_mtime_ns == written


def test_suggest_annotation_never_overwrites_its_scene(bundle, scene, capsys) -> None:
    before = Path(scene).read_bytes()
    args = ("--model", bundle, "--scene", scene, "--out", scene)
    assert_refused(*run("suggest_annotation.py", *args, capsys=capsys), "--out", "also an input")
    assert Path(scene).read_bytes() == before


# ---------------------------------------------------------------------------------------------
# labels, footprints, reports and MLflow runs
# ---------------------------------------------------------------------------------------------


def test_labels_with_values_other_than_0_1_255(tmp_path, capsys) -> None:
    mask = write_tif(tmp_path / "s_mask.tif", np.ones((1, 32, 32), np.uint8), nodata=255)
    labels = write_tif(tmp_path / "labels.tif", np.full((1, 32, 32), 7, np.uint8))
    args = ("--masks", mask, "--labels", labels)
    assert_refused(*run("evaluate.py", *args, capsys=capsys), "labels.tif", "[7]")


def test_a_report_path_that_is_a_folder(tmp_path, capsys) -> None:
    mask = write_tif(tmp_path / "s_mask.tif", np.ones((1, 32, 32), np.uint8), nodata=255)
    labels = write_tif(tmp_path / "labels.tif", np.ones((1, 32, 32), np.uint8))
    args = ("--masks", mask, "--labels", labels, "--report", str(tmp_path))
    assert_refused(*run("evaluate.py", *args, capsys=capsys), "--report", "is a folder")
    args = ("--masks", mask, "--labels", labels, "--report", labels)
    assert_refused(*run("evaluate.py", *args, capsys=capsys), "--report", "also an input")


def test_an_unknown_mlflow_run_id(tmp_path, capsys) -> None:
    mask = write_tif(tmp_path / "s_mask.tif", np.ones((1, 32, 32), np.uint8), nodata=255)
    labels = write_tif(tmp_path / "labels.tif", np.ones((1, 32, 32), np.uint8))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ("--masks", mask, "--labels", labels, "--mlflow-run", "0123456789abcdef")
    code, err = run("evaluate.py", *args, "--set", f"mlflow.tracking_uri={store}", capsys=capsys)
    assert_refused(code, err, "--mlflow-run", "0123456789abcdef")


def _footprints(path: Path, coords: list) -> str:
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [coords]}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return str(path)


def test_footprints_with_impossible_coordinates(scene, tmp_path, capsys) -> None:
    # UTM metres in a GeoJSON, which means longitude/latitude
    ring = [[452000.0, 5043000.0], [452010.0, 5043000.0], [452010.0, 5042990.0], [452000.0, 5043000.0]]
    fp = _footprints(tmp_path / "fp.geojson", ring)
    out = tmp_path / "dataset"
    args = ("--scenes", scene, "--footprints", fp, "--out", str(out), "--no-ray")
    assert_refused(*run("prepare.py", *args, capsys=capsys), "fp.geojson", "longitude/latitude")
    assert _outputs(out) == []


def test_a_failed_prepare_leaves_no_half_prepared_dataset(scene, tmp_path, capsys) -> None:
    from rasterio.warp import transform as warp

    xs, ys = warp("EPSG:32633", "EPSG:4326", [452001.0, 452009.0], [5042999.0, 5042991.0])
    ring = [[xs[0], ys[0]], [xs[1], ys[0]], [xs[1], ys[1]], [xs[0], ys[1]], [xs[0], ys[0]]]
    fp = _footprints(tmp_path / "fp.geojson", ring)
    out = tmp_path / "dataset"
    # the 64 px scene gives one padded 364 px tile, and no room for validation: refused after labels
    args = (
        "--scenes",
        scene,
        "--footprints",
        fp,
        "--out",
        str(out),
        "--no-ray",
        "--set",
        "data.split_block=364",
    )
    code, err = run("prepare.py", *args, capsys=capsys)
    assert_refused(code, err, "no validation tiles", "64x64 px", "data.val_fraction=0")
    assert _outputs(out) == []
    # a complete dataset, then a --force rebuild that fails after replacing its label rasters:
    # the old description goes with them, so training refuses the half-rebuilt dataset
    ok = (*args[:-1], "data.val_fraction=0", "--set", "data.split_block=728")
    assert run("prepare.py", *ok, capsys=capsys)[0] == 0
    assert "dataset.json" in _outputs(out)
    code, err = run("prepare.py", *args, "--force", capsys=capsys)
    assert_refused(code, err, "no validation tiles")
    assert "dataset.json" not in _outputs(out) and "manifest.parquet" in _outputs(out)
    from resseg_ray.config import load_config
    from resseg_ray.errors import InputDataError
    from resseg_ray.geo.storage import StorageSettings
    from resseg_ray.train.trainer import load_or_prepare

    with pytest.raises(InputDataError, match="is not a prepared dataset"):
        load_or_prepare(load_config(None, [f"train.dataset={out}"]), StorageSettings(), print)


# ---------------------------------------------------------------------------------------------
# flags checked before anything is written; messages that name what the user gave
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--tile-size", "-5"), "--tile-size"),
        (("--bands", "a", "b", "c", "d", "--mean", "nan", "0", "0", "0"), "--mean [nan"),
        (("--bands", "a", "b", "c", "d", "--std", "1", "0", "1", "1"), "--std"),
        (("--bands", "a", "b", "--mean", "1", "2", "3"), "--mean needs one value per band"),
        (("--classes", "building"), "--classes"),
    ],
)
def test_export_model_checks_its_flags_before_writing(args, says, tmp_path, capsys) -> None:
    out = tmp_path / "m.resseg.safetensors"
    assert_refused(*run("export_model.py", *args, "--out", str(out), capsys=capsys), says)
    assert _outputs(tmp_path) == []


def test_export_destinations_that_cannot_be_written(bundle, tmp_path, capsys) -> None:
    """``--out`` that is a folder, under a file, or the input itself: one line, nothing written,
    the user's files untouched (export_model and export_onnx alike)."""
    (tmp_path / "afile").write_text("mine")
    for script, extra, name in (
        ("export_model.py", (), "m.resseg.safetensors"),
        ("export_onnx.py", ("--model", bundle), "m.onnx"),
    ):
        code, err = run(script, *extra, "--out", str(tmp_path), capsys=capsys)
        assert_refused(code, err, "--out", "is a folder" if script == "export_model.py" else "")
        assert_refused(*run(script, *extra, "--out", str(tmp_path / "afile" / name), capsys=capsys),
                       "--out", "afile is a file")  # fmt: skip
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine"
    )


def test_bands_beyond_the_scene_name_the_bands_flag(bundle, scene, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ("--model", bundle, "--scenes", scene, "--out", str(out), "--bands", "1", "2", "3", "9")
    code, err = run("predict.py", *args, capsys=capsys)
    line = assert_refused(code, err, "s.tif has 4 bands", "--bands", "[9]")
    assert "data.bands" not in line
    assert _outputs(out) == []


def test_scenes_without_valid_pixels_are_named(bundle, tmp_path, capsys) -> None:
    """A scene that is no data everywhere: suggest names it; evaluating a mask that is no data
    everywhere is an error naming it, not F1 "100.00 / nan"."""
    empty = write_tif(tmp_path / "empty.tif", np.zeros((4, 48, 48), np.uint16), nodata=0, descriptions=BANDS)
    code, err = run("suggest_annotation.py", "--model", bundle, "--scene", empty, "--out",
                    str(tmp_path / "s.geojson"), capsys=capsys)  # fmt: skip
    assert_refused(code, err, "empty.tif has no valid pixels")
    assert not (tmp_path / "s.geojson").exists()
    mask = write_tif(tmp_path / "x_mask.tif", np.full((1, 48, 48), 255, np.uint8), nodata=255)
    labels = write_tif(tmp_path / "x_labels.tif", np.ones((1, 48, 48), np.uint8), nodata=255)
    report = tmp_path / "report.json"
    code, err = run(
        "evaluate.py", "--masks", mask, "--labels", labels, "--report", str(report), capsys=capsys
    )
    assert_refused(code, err, "x_mask.tif", "no pixel to score")
    assert not report.exists()


def test_footprints_that_are_points_are_refused(scene, tmp_path, capsys) -> None:
    from tests.helpers import points_geojson

    points = points_geojson(tmp_path / "points.geojson")
    out = tmp_path / "dataset"
    code, err = run("prepare.py", "--scenes", scene, "--footprints", points, "--out", str(out), "--no-ray",
                    capsys=capsys)  # fmt: skip
    assert_refused(code, err, "points.geojson holds no polygons", "Point")
    assert _outputs(out) == []
