"""The segmentation service and the map page (``serve``)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from resseg_ray.config.base import Section
from resseg_ray.config.choices import Precision, Runtime
from resseg_ray.errors import ConfigError


class ServeSection(Section):
    """The segmentation service (``serve run serve_app:app``): model, request limits, batching
    and autoscaling of the model replicas."""

    section = "serve"

    model: str | None = None
    """Bundle path, s3:// bundle or ``models:/`` URI; default the ``RESSEG_MODEL`` environment
    variable, else the demo's model ``runs/demo-prop18/model.resseg.safetensors``."""
    damage_model: str | None = None
    """A damage network (``damage-prop<depth>``) served at ``POST /v1/damage`` beside the building
    model: bundle path, s3:// bundle or ``models:/`` URI (e.g. ``models:/resseg-damage@best``);
    unset: ``/v1/damage`` answers 404."""
    damage_replicas: int = 1
    """Replicas of the damage network (``serve.cpus_per_replica`` CPUs or one GPU each), when
    ``serve.damage_model`` is set."""
    allowed_prefixes: list[str] = Field(default_factory=list)
    """``s3://bucket/prefix/`` URIs a request may name (``{"uri": ...}``); empty: none allowed."""
    max_body_mb: float = 512.0
    """Largest request body accepted (413 above)."""
    max_pixels: int = 150_000_000
    """Largest image (width x height) accepted, checked from the header before any pixel is
    decoded (413 above; guards against decompression bombs)."""
    body_idle_timeout_s: float = 10.0
    """A request body that sends nothing for this long is dropped (408), so stalled clients do
    not hold the ingress's slots."""
    body_timeout_s: float = 300.0
    """A request body must arrive within this many seconds (408 after), however it trickles."""
    max_batch_size: int = 8
    """Windows a model replica runs at once (``@serve.batch``), from any requests."""
    batch_wait_timeout_s: float = 0.02
    """How long a replica waits for a batch to fill."""
    min_replicas: int = 1
    """Model replicas kept when idle."""
    max_replicas: int = 2
    """Model replicas at most (autoscaling)."""
    target_ongoing_requests: float | None = None
    """Windows in flight per model replica the autoscaler aims at; default ``max_batch_size``."""
    max_ongoing_requests: int | None = None
    """Windows in flight per model replica at most; default ``2 x max_batch_size`` (a batch
    never exceeds it, and the autoscaler needs room above its target)."""
    max_queued_requests: int = 256
    """Windows waiting for a model replica at most; more are refused (503)."""
    ingress_replicas: int = 1
    """HTTP ingress replicas (they cut images into windows and stitch the results)."""
    ingress_max_ongoing_requests: int = 16
    """Images an ingress replica works on at once; with single-window images a model batch
    fills only when at least ``max_batch_size`` images are in flight, so keep it >= that."""
    ingress_max_queued_requests: int = 8
    """Images waiting for an ingress replica at most; more are answered 503 at once."""
    cpus_per_replica: float = 1.0
    """CPUs reserved per model replica (fractions allowed; its torch threads follow unless
    ``torch_threads`` says otherwise)."""
    torch_threads: int | None = None
    """Intra-op threads of each model replica; default its reserved CPUs (at least 1). On one
    small machine, reserve little (room for the map page's refinements) and use all cores."""
    ingress_cpus: float = 0.5
    """CPUs reserved per ingress replica."""
    use_gpu: bool = False
    """One GPU per model replica."""
    runtime: Runtime = "auto"
    """What runs the network in the model replicas: ``torch``, ``openvino``, ``onnxruntime`` or
    ``auto`` (as ``predict.runtime``; chosen when a replica starts)."""
    precision: Precision = "auto"
    """The model replicas' precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (as ``predict.precision``)."""
    annotations_dir: str = "runs/annotations"
    """Where the map page's annotations are saved: ``<dir>/<scene id>/v<NNNNNN>.geojson``."""
    api_token: str | None = None
    """When set, every write (saving annotations, starting refinements) needs the header
    ``Authorization: Bearer <token>`` (401 otherwise)."""
    max_annotation_mb: float = 8.0
    """Largest annotation save accepted (413 above)."""
    map_catalogs: list[str] | None = None
    """The map page's scenes: ``catalog.json`` of ``jobs/predict.py`` output folders (building
    scenes) and of ``jobs/damage.py`` output folders (damage scenes: pre/post pairs); default
    those of ``make demo`` and ``make demo-damage`` that exist (``runs/demo-maps/catalog.json``,
    ``runs/demo-damage-maps/catalog.json``), else none."""
    refine_config: str | None = None
    """YAML configuration of the refinements started from the map page (``train`` schedule,
    ``data`` tiling, ``scaling``, ``mlflow``; as ``jobs/finetune.py --config``); default
    ``configs/finetune_demo.yaml`` when it exists, else the defaults."""
    damage_refine_config: str | None = None
    """The same for the refinements of the damage network (``serve.damage_model``) on a damage
    scene's pair; default ``configs/finetune_damage_demo.yaml`` when it exists, else
    ``serve.refine_config``'s."""
    refine_in_process: bool = True
    """Train the map page's refinements in their runner actor with Ray Train's local mode
    (``scaling.in_process``, one worker, reserving ``scaling.cpus_per_worker`` and a GPU with
    ``scaling.use_gpu``) instead of starting Ray Train workers: each refinement is a new run,
    never resumed, and the start of the workers (10-30 s on a small machine) is the mapper's
    wait. ``false`` trains on Ray Train workers as the refinement configuration's ``scaling``
    says (several GPU workers of a cluster, restarts after a lost worker)."""
    refine_dir: str = "runs/map-refinements"
    """Where the map page's refinements live: ``<dir>/<scene id>/r<N>/`` (record, inputs, run,
    refined map)."""
    max_refine_jobs: int = 1
    """Refinements running at once (all ingress replicas); one more is answered 503."""
    max_refine_epochs: int = 200
    """Most epochs a refinement from the map page may ask for."""
    scenes_dir: str = "runs/map-scenes"
    """Where scenes added at run time (``POST /v1/scenes``: uploads, s3:// URIs, STAC items) and
    their outputs are kept: ``<dir>/<scene id>/``."""
    max_added_scenes: int = 100
    """Scenes that may be added at run time at most (their images are copied to ``scenes_dir``)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.max_body_mb <= 0 or self.max_pixels < 1:
            raise ConfigError("serve.max_body_mb and serve.max_pixels must be positive")
        if not 0 < self.body_idle_timeout_s <= self.body_timeout_s:
            raise ConfigError(
                f"serve.body_idle_timeout_s ({self.body_idle_timeout_s}) must be > 0 and <= "
                f"serve.body_timeout_s ({self.body_timeout_s})"
            )
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ConfigError("serve.max_batch_size must be >= 1 and serve.batch_wait_timeout_s >= 0")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(
                f"serve.min_replicas ({self.min_replicas}) must be <= serve.max_replicas "
                f"({self.max_replicas}), and max_replicas >= 1"
            )
        if self.ongoing < self.max_batch_size:
            raise ConfigError(
                f"serve.max_ongoing_requests ({self.ongoing}) is below serve.max_batch_size "
                f"({self.max_batch_size}): batches could never fill; raise it"
            )
        if not 0 < self.target <= self.ongoing:
            raise ConfigError(
                f"serve.target_ongoing_requests ({self.target}) must be in (0, max_ongoing_requests = "
                f"{self.ongoing}]: above it the autoscaler would never see its target and never scale up"
            )
        for p in self.allowed_prefixes:
            if not p.startswith("s3://") or len(p.rstrip("/")) <= len("s3://"):
                raise ConfigError(f"serve.allowed_prefixes: {p!r} is not an s3://bucket[/prefix]")
        if self.max_added_scenes < 0:
            raise ConfigError("serve.max_added_scenes must be >= 0 (0: no scenes added at run time)")
        if self.max_refine_jobs < 0 or self.max_refine_epochs < 1:
            raise ConfigError(
                "serve.max_refine_jobs must be >= 0 (0: no refinements) and serve.max_refine_epochs >= 1"
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"serve.torch_threads must be >= 1, got {self.torch_threads}")
        if self.damage_replicas < 1:
            raise ConfigError(f"serve.damage_replicas ({self.damage_replicas}) must be >= 1")
        if self.cpus_per_replica <= 0 or self.ingress_cpus < 0 or self.ingress_replicas < 1:
            raise ConfigError(
                "serve.cpus_per_replica must be > 0, serve.ingress_cpus >= 0 and serve.ingress_replicas >= 1"
            )
        return self

    @property
    def ongoing(self) -> int:
        """``max_ongoing_requests`` with its default applied."""
        return self.max_ongoing_requests or 2 * self.max_batch_size

    @property
    def target(self) -> float:
        """``target_ongoing_requests`` with its default applied."""
        return self.target_ongoing_requests or float(self.max_batch_size)
