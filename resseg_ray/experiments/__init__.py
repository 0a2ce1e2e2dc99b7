"""Experiments built on the stages below: the depth comparison of the paper's Table II.

Its names are imported on first use (:mod:`resseg_ray.exports`).
"""

from resseg_ray.exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "resseg_ray.experiments.compare_depths": ["PAPER_ARCHS", "Comparison", "compare_architectures"],
    },
)
