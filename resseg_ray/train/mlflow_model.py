"""MLflow pyfunc wrapper of a model bundle, logged as "model from code" (nothing pickled).

``mlflow.pyfunc.load_model(uri).predict(x)`` takes raw pixel values ``float32 (N, D, H, W)``
in the bundle's band order (NaN where there is no data), normalises them as
``jobs/predict.py`` does (:func:`~resseg_ray.geo.stats.normalize`: the bundle's statistics,
or with a ``per_scene`` model each image's own over its valid pixels; no-data pixels 0) and
returns the building probability ``float32 (N, H, W)`` (NaN where there is no data). An
image no larger than the predictor's window gives what ``jobs/predict.py`` gives on it as a
scene. Each image is one forward pass, whatever its size: segment larger scenes with the
windowed predictor (``jobs/predict.py``, or the service).
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class BundlePyfunc(PythonModel):
    """Serves the bundle stored as the ``bundle`` artifact of the logged model."""

    def load_context(self, context) -> None:
        """Load the bundle (safetensors: no code executed) into a predictor with the default options."""
        from resseg_ray.config import PredictSection
        from resseg_ray.inference.predictor import ScenePredictor
        from resseg_ray.models.bundle import load_bundle

        bundle = load_bundle(context.artifacts["bundle"])
        self.info = bundle.info
        # the engine jobs/predict.py runs with its default options here (runtime and precision auto)
        self.predictor = ScenePredictor(bundle, PredictSection())

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        """Building probability of each pixel of a batch of raw images."""
        if isinstance(model_input, dict) and len(model_input) == 1:
            model_input = next(iter(model_input.values()))
        x = np.asarray(model_input, np.float32)
        if x.ndim != 4 or x.shape[1] != self.info.in_bands:
            raise ValueError(
                f"expected float32 images of shape (N, {self.info.in_bands}, H, W) "
                f"(bands {self.info.band_names}), got {x.shape}"
            )
        from resseg_ray.geo.stats import norm_arrays, normalize, valid_stats

        valid: np.ndarray = np.all(np.isfinite(x), axis=1)
        pooled = norm_arrays(self.info.norm_mean, self.info.norm_std)
        per_scene = self.info.extra.get("normalization") == "per_scene"
        inputs = []
        for image, ok in zip(x, valid, strict=True):
            norm = pooled
            if per_scene and ok.any():  # each image by its own statistics
                mean, std = valid_stats(image, ok)
                # a constant band (predict.py refuses such a scene) is centred, not divided by 0
                norm = norm_arrays(mean, [max(s, 1e-6) for s in std])
            inputs.append(normalize(image, ok, norm))
        prob = self.predictor.forward(np.stack(inputs))[:, 1].copy()
        prob[~valid] = np.nan
        return prob


mlflow.models.set_model(BundlePyfunc())
