"""The segmentation service on Ray Serve: the HTTP API and the batched model deployment."""

from resseg_ray.serving.app import build_app, model_uri

__all__ = ["build_app", "model_uri"]
