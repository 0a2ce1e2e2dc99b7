"""A refinement's rehearsal: the parent's training tiles beside the annotated area's."""

from __future__ import annotations

from resseg_ray.config import load_config
from resseg_ray.data.pipeline import SampleSpec, split_rows
from resseg_ray.data.prepare import load_dataset
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.train.rehearsal import add_rehearsal
from tests.helpers import SMALL_DATA


def test_rehearsal_adds_the_parents_tiles_normalised_as_it_saw_them(small_demo, tmp_path) -> None:
    """train.rehearsal_tiles: K training tiles of the parent's dataset (drawn with run.seed)
    join a refinement's training tiles, never its validation tiles, each normalised with its
    own scene's statistics in the parent's dataset; a dataset that cannot be used is said."""
    settings = StorageSettings()
    parent = load_dataset(small_demo.root, settings)
    cfg = load_config(None, [*SMALL_DATA, "data.normalization=per_scene", "train.rehearsal_tiles=3"])
    own_scene = "s3://bucket/new-event/scene.tif"
    rows = split_rows(parent, settings, 7, {"train": 4, "val": 2})  # stand-ins for the area's tiles
    spec = SampleSpec((1, 2, 3, 4), {"": (1.0,) * 4, own_scene: (2.0,) * 4}, {"": (3.0,) * 4,
                      own_scene: (4.0,) * 4}, 64, True, 0, settings)  # fmt: skip
    said: list[str] = []
    got, gspec = add_rehearsal(rows, spec, cfg, parent, settings, small_demo.root, said.append)
    assert got["val"] is rows["val"] and got["train"].num_rows == 4 + 3
    added = got["train"].slice(4).to_pylist()
    expected = split_rows(parent, settings, 0, {"train": 3}, splits=("train",))["train"].to_pylist()
    assert [r["tile_id"] for r in added] == [f"rehearsal-{r['tile_id']}" for r in expected]
    assert all(r["split"] == "train" for r in added)
    for r in added:  # the parent's per-scene statistics; the refinement's own kept
        stats = small_demo.statistics.scenes[r["scene_uri"]]
        assert gspec.mean[r["scene_uri"]] == tuple(stats.mean) and gspec.std[r["scene_uri"]] == tuple(
            stats.std
        )
    assert gspec.mean[own_scene] == (2.0,) * 4 and gspec.mean[""] == (1.0,) * 4
    assert said == [
        f"rehearsal: 3 training tiles of the parent's dataset {small_demo.root} beside the area's 4 "
        "(train.rehearsal_tiles)"
    ]
    # a parent without a dataset, or one that is gone: said, and the area's tiles alone
    for source, reason in (
        (None, "is not recorded in its bundle"),
        (str(tmp_path / "gone"), "cannot be read"),
    ):
        said.clear()
        same, sspec = add_rehearsal(rows, spec, cfg, parent, settings, source, said.append)
        assert same is rows and sspec is spec
        assert (
            said[0].startswith("rehearsal skipped (training on the annotated area alone): ")
            and reason in said[0]
        )
