"""The embedded demo data set: synthetic scenes written and prepared in one call."""

from __future__ import annotations

from resseg_ray.config import Config
from resseg_ray.data.prepare import PreparedDataset, prepare_dataset
from resseg_ray.demo.scenes import write_demo_scenes
from resseg_ray.demo.specs import default_demo
from resseg_ray.errors import ConfigError
from resseg_ray.geo.storage import StorageSettings, join_uri


def prepare_demo(out: str, cfg: Config, settings: StorageSettings, scale: float = 1.0) -> PreparedDataset:
    """Write the demo scenes and footprints under ``out/scenes`` and prepare them into ``out``
    (6 training scenes from two sensors, 3 held-out test scenes from three others)."""
    if not 0.05 <= scale <= 4:
        raise ConfigError(f"--demo-scale must be in [0.05, 4], got {scale}")
    summary = write_demo_scenes(join_uri(out, "scenes"), default_demo(scale), settings)
    return prepare_dataset(
        [s["scene"] for s in summary["train"]],
        out,
        cfg,
        footprints=[s["footprints"] for s in summary["train"]],
        test_scenes=[s["scene"] for s in summary["test"]],
        test_footprints=[s["footprints"] for s in summary["test"]],
        settings=settings,
    )


def prepare_damage_demo(
    out: str, cfg: Config, settings: StorageSettings, scale: float = 1.0
) -> PreparedDataset:
    """Write the demo's disasters under ``out/scenes`` (:func:`~resseg_ray.demo.events.default_events`:
    an earthquake, a flood and a fire to train on, a storm and an earthquake by other sensors to
    test on) and prepare them into ``out`` as a damage data set."""
    from resseg_ray.data.pairs import DamagePair, prepare_pairs
    from resseg_ray.demo.events import default_events, write_event

    if not 0.05 <= scale <= 4:
        raise ConfigError(f"--demo-scale must be in [0.05, 4], got {scale}")
    train, test = default_events(scale)

    def pairs(events) -> list[DamagePair]:
        written = [write_event(ev, join_uri(out, "scenes"), settings) for ev in events]
        return [DamagePair(w["name"], w["pre"], w["post"], w["damage"]) for w in written]

    return prepare_pairs(pairs(train), out, cfg, pairs(test), settings)
