"""The embedded demo: synthetic scenes from a procedural landscape and simulated sensors, written
as GeoTIFFs with their footprints and prepared into a training dataset (no download)."""

from resseg_ray.demo.dataset import prepare_damage_demo, prepare_demo
from resseg_ray.demo.scenes import write_demo_scenes, write_scene
from resseg_ray.demo.specs import DemoSet, SceneSpec, default_demo

__all__ = [
    "DemoSet",
    "SceneSpec",
    "default_demo",
    "prepare_damage_demo",
    "prepare_demo",
    "write_demo_scenes",
    "write_scene",
]
