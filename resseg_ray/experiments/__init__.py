"""Experiments built on the stages below: the depth comparison of the paper's Table II."""
