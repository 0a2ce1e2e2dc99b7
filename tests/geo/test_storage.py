"""Storage URIs against a real S3 endpoint (moto server on 127.0.0.1) and the local disk."""

from __future__ import annotations

import os

import numpy as np
import pytest

from resseg_ray.config import StorageSection
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.scene import open_scene, read_window
from resseg_ray.geo.storage import (
    StorageSettings,
    atomic_output,
    exists,
    expand_uris,
    filesystem,
    read_bytes,
    remove_file,
    remove_tree,
    removed_on_failure,
    write_bytes,
)
from tests.rasters import write_tif

LOCAL = StorageSettings()


def test_settings_come_from_config_then_standard_variables(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert StorageSettings.resolve().endpoint_url == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:10")
    assert StorageSettings.resolve().endpoint_url == "http://127.0.0.1:10"
    s = StorageSettings.resolve(StorageSection(endpoint_url="https://minio.example:9000"))
    opts = s.gdal_options()
    assert opts["AWS_S3_ENDPOINT"] == "minio.example:9000" and opts["AWS_HTTPS"] == "YES"
    with pytest.raises(ConfigError, match=r"storage\.endpoint_url"):
        StorageSettings.resolve(StorageSection(endpoint_url="minio:9000"))


def test_scene_on_s3_reads_like_the_local_file(tmp_path, s3_bucket, s3_settings) -> None:
    data = np.random.default_rng(0).integers(0, 3000, (4, 100, 120)).astype(np.uint16)
    local = write_tif(tmp_path / "s.tif", data, nodata=0)
    uri = f"{s3_bucket}/scenes/s.tif"
    filesystem(uri, s3_settings).put_file(local, uri)
    info = open_scene(uri, s3_settings)
    assert (info.width, info.height, len(info.bands)) == (120, 100, 4)
    pix, valid = read_window(info, s3_settings, 90, -5, 40, 30)
    lpix, lvalid = read_window(open_scene(local, LOCAL), LOCAL, 90, -5, 40, 30)
    np.testing.assert_array_equal(pix, lpix)
    np.testing.assert_array_equal(valid, lvalid)


def test_listing_globs_and_prefixes(tmp_path, s3_bucket, s3_settings) -> None:
    fs = filesystem(s3_bucket, s3_settings)
    for name in ("a.tif", "b.tif", "sub/c.tif", "notes.txt"):
        fs.pipe_file(f"{s3_bucket}/in/{name}", b"x")
    assert expand_uris([f"{s3_bucket}/in/"], s3_settings) == [
        f"{s3_bucket}/in/a.tif",
        f"{s3_bucket}/in/b.tif",
        f"{s3_bucket}/in/sub/c.tif",
    ]
    assert expand_uris([f"{s3_bucket}/in/*.tif"], s3_settings) == [
        f"{s3_bucket}/in/a.tif",
        f"{s3_bucket}/in/b.tif",
    ]
    with pytest.raises(InputDataError, match="matches no files"):
        expand_uris([f"{s3_bucket}/in/*.jp2"], s3_settings)
    (tmp_path / "d").mkdir()
    for name in ("x.tif", "y.TIF", "z.txt"):
        (tmp_path / "d" / name).write_bytes(b"x")
    assert [os.path.basename(p) for p in expand_uris([str(tmp_path / "d")], LOCAL)] == ["x.tif", "y.TIF"]
    assert len(expand_uris([f"file://{tmp_path}/d/*.tif"], LOCAL)) == 1


def test_local_folders_and_s3_prefixes_behave_alike(tmp_path, s3_bucket, s3_settings, monkeypatch) -> None:
    """One fsspec path for both: listing (a prefix without its slash too), existence, reads,
    deletions and the clean-up of a failed block; a relative local pattern lists relative
    paths, as a user typed it."""
    monkeypatch.chdir(tmp_path)
    for base in ("here", f"{s3_bucket}/here"):
        for name in ("a.tif", "sub/b.tif", "notes.txt"):
            write_bytes(f"{base}/{name}", b"x", s3_settings)
        listed = [f"{base}/a.tif", f"{base}/sub/b.tif"]
        assert expand_uris([f"{base}/"], s3_settings) == listed
        assert expand_uris([base], s3_settings) == listed  # no trailing slash: the folder, S3 too
        assert expand_uris([f"{base}/*.tif"], s3_settings) == listed[:1]
        with pytest.raises(InputDataError, match=r"holds no files ending in \.jp2"):
            expand_uris([f"{base}/"], s3_settings, suffixes=(".jp2",))
        assert exists(f"{base}/a.tif", s3_settings) and not exists(f"{base}/z.tif", s3_settings)
        remove_file(f"{base}/a.tif", s3_settings)
        remove_file(f"{base}/a.tif", s3_settings)  # already gone: nothing to do
        assert not exists(f"{base}/a.tif", s3_settings)
        with pytest.raises(InputDataError, match="does not exist"):
            read_bytes(f"{base}/a.tif", s3_settings)
        with (
            pytest.raises(RuntimeError),
            removed_on_failure([f"{base}/sub", f"{base}/notes.txt"], s3_settings),
        ):
            raise RuntimeError("the block failed")
        assert not exists(f"{base}/sub/b.tif", s3_settings) and not exists(f"{base}/notes.txt", s3_settings)
        write_bytes(f"{base}/again/c.tif", b"x", s3_settings)
        remove_tree(f"{base}/again", s3_settings, drop_empty_parent=False)
        assert not exists(f"{base}/again/c.tif", s3_settings)
        remove_tree(f"{base}/again", s3_settings)  # already gone: nothing to do
    assert not (tmp_path / "here" / "again").exists()


def test_atomic_output_leaves_nothing_on_failure(tmp_path, s3_bucket, s3_settings) -> None:
    for dest in (str(tmp_path / "out" / "f.bin"), f"{s3_bucket}/out/f.bin"):
        with pytest.raises(RuntimeError), atomic_output(dest, s3_settings) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"half")
            raise RuntimeError("interrupted")
        with pytest.raises(InputDataError, match="does not exist"):
            read_bytes(dest, s3_settings)
        write_bytes(dest, b"whole", s3_settings)
        assert read_bytes(dest, s3_settings) == b"whole"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.bin"]


def test_missing_objects_buckets_and_credentials_are_clear(
    s3_bucket, s3_settings, monkeypatch, tmp_path
) -> None:
    with pytest.raises(InputDataError, match=r"s3://.*/nope\.tif does not exist"):
        open_scene(f"{s3_bucket}/nope.tif", s3_settings)
    with pytest.raises(InputDataError, match="does not exist"):
        read_bytes(f"{s3_bucket}/nope.json", s3_settings)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws either
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(InputDataError, match="credentials"):
        open_scene(f"{s3_bucket}/other.tif", s3_settings)


AUX_XML = """<PAMDataset>
  <PAMRasterBand band="1"><NoDataValue>7</NoDataValue></PAMRasterBand>
  <PAMRasterBand band="2"><NoDataValue>7</NoDataValue></PAMRasterBand>
</PAMDataset>
"""


def test_sidecar_files_on_s3_are_never_read(tmp_path, s3_bucket, s3_settings) -> None:
    """A ``.aux.xml`` beside a scene could change what it means (here: a no-data value that
    blanks pixels). Scenes on S3 are opened without looking for sidecars, and rasters a client
    names (``untrusted``, Serve) without them anywhere."""
    import dataclasses

    import rasterio

    data = np.full((2, 32, 32), 7, np.uint16)
    local = write_tif(tmp_path / "s.tif", data)
    (tmp_path / "s.tif.aux.xml").write_text(AUX_XML)
    with rasterio.open(local) as src:  # GDAL's defaults honour the sidecar: the test can fail
        assert src.nodata == 7
    uri = f"{s3_bucket}/sidecar/s.tif"
    fs = filesystem(uri, s3_settings)
    fs.put_file(local, uri)
    fs.put_file(str(tmp_path / "s.tif.aux.xml"), uri + ".aux.xml")
    untrusted = dataclasses.replace(s3_settings, untrusted=True)
    for settings in (s3_settings, untrusted):
        info = open_scene(uri, settings)
        assert info.nodata is None
        _, valid = read_window(info, settings, 0, 0, 32, 32)
        assert valid.all()
    local_untrusted = dataclasses.replace(LOCAL, untrusted=True)
    assert open_scene(local, local_untrusted).nodata is None
    assert read_window(open_scene(local, local_untrusted), local_untrusted, 0, 0, 32, 32)[1].all()


def test_unique_stems_tell_same_named_scenes_apart() -> None:
    """File names where they are unique; same-named STAC scenes by item id, then collection and
    item id; same-named files by the folders that differ, then a hash of the URI."""
    from resseg_ray.geo.names import unique_stems

    qk = [f"s3://b/ard/37/{q}/2023-02-07/1030-visual.tif" for q in ("0311", "0312")]
    other = "s3://b/pre/1030-pre.tif"
    assert unique_stems([*qk, other]) == {
        qk[0]: "1030-visual_0311",
        qk[1]: "1030-visual_0312",
        other: "1030-pre",
    }
    ids = {qk[0]: ("event", "37_0311_1030"), qk[1]: ("event", "37_0312_1030")}
    assert unique_stems(qk, ids) == {qk[0]: "37_0311_1030", qk[1]: "37_0312_1030"}
    same_id = {qk[0]: ("pre", "1030"), qk[1]: ("post", "1030")}
    assert unique_stems(qk, same_id) == {qk[0]: "pre_1030", qk[1]: "post_1030"}
    odd = {qk[0]: ("c", "a/b:c"), qk[1]: ("c", "a/b:d")}
    assert unique_stems(qk, odd) == {qk[0]: "a_b_c", qk[1]: "a_b_d"}  # safe as file names
    twins = ["s3://b/x/s.tif", "s3://b/x/s.TIF"]  # nothing but the URI tells them apart
    names = unique_stems(twins)
    assert len(set(names.values())) == 2 and all(n.startswith("s_") and len(n) == 10 for n in names.values())
    assert unique_stems(twins) == names  # stable
