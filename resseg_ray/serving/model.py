"""The model deployment: one network per replica, windows from any requests batched together.

The ingress (:mod:`resseg_ray.serving.ingress`) cuts each image into normalised windows and
sends them here one by one; ``@serve.batch`` groups the windows waiting on a replica into
one forward pass (up to ``serve.max_batch_size``), so concurrent requests share batches.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter

import numpy as np
from ray import serve

from resseg_ray.config import PredictSection, StorageSection, from_dict
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.stac_items import ModelProvenance
from resseg_ray.models.bundle import BundleInfo, load_bundle
from resseg_ray.models.source import resolve_bundle


@serve.deployment(name="SegmentModel")
class SegmentModel:
    """A bundle's network on this replica's device (its GPU when it has one), run by the engine
    of ``serve.runtime`` x ``serve.precision`` (``engine``: those and the window side); ``task``
    is the network's (``buildings`` for ``/v1/segment``, ``damage`` for ``/v1/damage``)."""

    def __init__(
        self,
        model_uri: str,
        storage: dict,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        threads: int,
        engine: dict,
        task: str = "buildings",
    ) -> None:
        import torch

        from resseg_ray.errors import ConfigError
        from resseg_ray.models.registry import model_task

        torch.set_num_threads(max(1, threads))
        settings = StorageSettings.resolve(from_dict(StorageSection, storage))
        with tempfile.TemporaryDirectory(prefix="resseg-serve-model-") as tmp:
            path = resolve_bundle(model_uri, tmp, settings)
            bundle = load_bundle(path)
            arch = bundle.info.architecture
            if model_task(arch) != task:  # a damage network at /v1/segment, or the reverse
                option = "serve.damage_model" if task == "damage" else "serve.model (RESSEG_MODEL)"
                raise ConfigError(
                    f"{option}: {model_uri} is a {model_task(arch)} network ({arch}), not a {task} one"
                )
            with open(path, "rb") as f:
                self._provenance = ModelProvenance.of(model_uri, f.read(), bundle.info)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        options = PredictSection(device=device, batch_size=max_batch_size, **engine)
        self.predictor = ScenePredictor(bundle, options)
        self.engine = self.predictor.engine  # chosen (with auto: measured, or read from the cache) now
        self.model_uri = model_uri
        # @serve.batch wraps the method in an object with these setters (untyped in Ray)
        self.predict.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.sizes: Counter[int] = Counter()

    def info(self) -> BundleInfo:
        """The bundle's metadata (architecture, bands, classes, normalisation)."""
        return self.predictor.info

    def provenance(self) -> ModelProvenance:
        """Which model this is (URI, architecture, SHA-256, registry version), for STAC items."""
        return self._provenance

    def source(self) -> dict:
        """Where the model came from and which device runs it."""
        import ray

        return {
            "uri": self.model_uri,
            "device": str(self.predictor.policy.device),
            **{k: v for k, v in self.engine.describe().items() if k != "device"},
            "replica": ray.get_runtime_context().get_actor_name(),
            "pid": os.getpid(),
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def predict(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Class probabilities ``(C, H, W)`` of normalised windows ``(D, H, W)`` (float32)."""
        self.sizes[len(windows)] += 1
        # off the replica's event loop, so that the next batch gathers while this one runs
        probs = await asyncio.to_thread(self.predictor.forward, np.stack(windows))
        return list(probs)

    def batch_sizes(self) -> dict[int, int]:
        """How many forward passes ran with each batch size on this replica."""
        return dict(self.sizes)
