"""Experiments built on the stages below: the depth comparison of the paper's Table II."""

from resseg_ray.experiments.compare_depths import PAPER_ARCHS, Comparison, compare_architectures

__all__ = ["PAPER_ARCHS", "Comparison", "compare_architectures"]
