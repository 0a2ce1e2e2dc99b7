"""MLflow pyfunc wrapper of a model bundle, logged as "model from code" (nothing pickled).

``mlflow.pyfunc.load_model(uri).predict(x)`` takes raw pixel values ``float32 (N, D, H, W)``
in the bundle's band order, normalises them with the bundle's statistics and returns the
building probability ``float32 (N, H, W)``. Whole scenes go through the windowed predictor
instead; this wrapper is for quick checks and MLflow tooling.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class BundlePyfunc(PythonModel):
    """Serves the bundle stored as the ``bundle`` artifact of the logged model."""

    def load_context(self, context) -> None:
        """Load the bundle (safetensors: no code executed) on the default device policy."""
        from resseg_ray.device import DevicePolicy
        from resseg_ray.models.bundle import load_bundle

        bundle = load_bundle(context.artifacts["bundle"])
        self.info = bundle.info
        self.policy = DevicePolicy.resolve()
        self.model = self.policy.prepare_for_inference(bundle.model)
        self.mean = np.asarray(self.info.norm_mean, np.float32)[None, :, None, None]
        self.std = np.asarray(self.info.norm_std, np.float32)[None, :, None, None]

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        """Building probability of each pixel of a batch of raw images."""
        import torch

        if isinstance(model_input, dict) and len(model_input) == 1:
            model_input = next(iter(model_input.values()))
        x = np.asarray(model_input, np.float32)
        if x.ndim != 4 or x.shape[1] != self.info.in_bands:
            raise ValueError(
                f"expected float32 images of shape (N, {self.info.in_bands}, H, W) "
                f"(bands {self.info.band_names}), got {x.shape}"
            )
        if self.info.extra.get("normalization") == "per_scene":  # each image by its own statistics
            mean = x.mean(axis=(2, 3), keepdims=True)
            std = np.maximum(x.std(axis=(2, 3), keepdims=True), 1e-6)
            x = (x - mean) / std
        else:
            x = (x - self.mean) / self.std
        with torch.inference_mode(), self.policy.autocast():
            logits = self.model(self.policy.prepare_batch(torch.from_numpy(x)))
        return torch.softmax(logits.float(), 1)[:, 1].cpu().numpy()


mlflow.models.set_model(BundlePyfunc())
