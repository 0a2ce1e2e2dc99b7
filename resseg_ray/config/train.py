"""Optimisation and what is trained on (``train``)."""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from resseg_ray.config.base import Section
from resseg_ray.config.choices import Precision, RefineStart, Selection
from resseg_ray.errors import ConfigError


class TrainSection(Section):
    """Optimisation (paper Sec. III-C/D, IV-B) and what is trained on."""

    section = "train"

    dataset: str = "data/demo"
    """Prepared dataset (``jobs/prepare.py --out``): a folder or s3:// prefix. The demo's
    (``data/demo``) is prepared on first use."""
    epochs: int = 200
    """Maximum number of epochs (early stopping usually ends training sooner)."""
    batch_size: int = 8
    """Samples per step on each worker (paper: 8)."""
    lr: float = 0.005
    """Initial learning rate of SGD (paper: 0.005)."""
    momentum: float = 0.9
    """SGD momentum (paper: 0.9)."""
    weight_decay: float = 0.0005
    """L2 penalty lambda on the weights (paper: "weight decay", value not given; 5e-4 as the
    authors' ResNet code)."""
    lr_step_epochs: int = 30
    """Divide the learning rate every this many epochs (paper: 30)."""
    lr_gamma: float = 0.2
    """Factor the learning rate is multiplied by at each step (paper: divided by 5)."""
    patience: int = 10
    """Stop after this many epochs without a decrease of the validation loss (0: never stop early)."""
    min_delta: float = 0.0
    """A decrease smaller than this does not count as one."""
    select: Selection = "val_loss"
    """Which kept checkpoint becomes the final model: ``val_loss`` (lowest), ``val_f1`` (highest)
    or ``last`` (the last epoch's: a fixed schedule, as the paper's refinement)."""
    time_budget_minutes: float | None = None
    """Stop once another epoch would take the time spent training and validating past this many
    minutes (start-up and checkpoints not counted, restarts included; a re-run with a larger
    budget goes on): an emergency deadline, or equal training time per architecture
    (``bench/paper_tables.py --minutes``). Default: no budget, ``epochs`` and ``patience`` decide."""
    freeze_bn: bool = False
    """Keep BatchNorm layers in inference mode while training: their running statistics stay
    the starting model's (or the scene's, after ``--adapt-bn``) instead of drifting towards the
    few batches of a small annotated area; their scale and shift are still trained."""
    freeze_encoder: bool = False
    """Train the decoder only: the encoder's weights and BatchNorm statistics stay the starting
    model's (a refinement's parent)."""
    l2sp: float = 0.0
    """L2-SP strength alpha (Li et al., 2018): a penalty ``alpha / 2 * ||w - w0||^2`` pulls the
    weights toward those training starts from (a refinement's parent) instead of
    ``weight_decay`` pulling them toward zero, which is then not applied. 0: off."""
    refine_start: RefineStart = "parent"
    """A refinement's starting weights: ``parent`` (the model as given) or ``adapted`` (the
    parent with its BatchNorm statistics re-estimated on the scene, as ``finetune --adapt-bn``,
    which also forces it)."""
    rehearsal_tiles: int = 0
    """A refinement's rehearsal: this many training tiles of the parent's own dataset (the one
    its bundle records), drawn once with ``run.seed``, trained on every epoch beside the
    annotated area's tiles, normalised as the parent saw them, so the model keeps seeing what it
    learned from. Never in the held-out blocks of the verdict. 0: off; when the parent's dataset
    cannot be read the refinement says so and goes on without."""
    train_tiles_per_epoch: int | None = None
    """Use only the first N training tiles (in the seeded order) per epoch; default all."""
    val_tiles: int | None = None
    """Validate on only the first N validation tiles; default all."""
    device: str = "auto"
    """``auto`` (the worker's GPU when scaling.use_gpu, else CPU), ``cpu`` or ``cuda``."""
    precision: Precision = "auto"
    """``auto`` (bf16/fp16 autocast on GPU, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``."""
    channels_last: bool = True
    """Keep activations in channels-last layout (faster on CPU and on tensor cores)."""
    class_weights: list[float] | None = None
    """Weight of each class in the loss, in ``model.class_names`` order (default all 1): a
    damage network weights its rare classes up, e.g. ``[1, 1, 3, 2, 2]``."""
    quicklook_samples: int = 4
    """Validation samples drawn in the quicklook PNG logged to MLflow (0: none)."""
    min_gain: float = 0.01
    """A refinement's model ships (is registered, offered on the map page) only when its F1 on
    the annotated pixels kept out of its training beats the parent's, and the parent's with
    BatchNorm re-estimated, by at least this much (0.01 = 1 point); otherwise the better of
    those two is kept."""
    folds: int = 1
    """How a refinement's verdict (``min_gain``) holds annotated pixels out: 1, the blocks of
    ``data.val_fraction`` of the area once; k > 1, k-fold cross-validation for small areas, whose
    one held-out share holds few buildings: the area's blocks (``data.split_block``) are dealt
    into k folds, k refinements each keep one fold out (its epoch chosen there), and their
    predictions on the folds they never saw, pooled, are compared with the parent's and the
    re-estimated parent's on every annotated block; the model shipped is then refined on every
    block for the median of the k chosen epochs. k + 1 trainings; the area needs k whole blocks."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("epochs", "batch_size", "lr_step_epochs"):
            if getattr(self, name) < 1:
                raise self.bad(name, ">= 1", getattr(self, name))
        if not self.lr > 0:
            raise self.bad("lr", "> 0", self.lr)
        if not 0 <= self.momentum < 1:
            raise self.bad("momentum", "in [0, 1)", self.momentum)
        if self.weight_decay < 0:
            raise self.bad("weight_decay", ">= 0", self.weight_decay)
        if self.rehearsal_tiles < 0:
            raise self.bad("rehearsal_tiles", ">= 0", self.rehearsal_tiles)
        if self.l2sp < 0:
            raise self.bad("l2sp", "a strength >= 0", self.l2sp)
        if not 0 < self.lr_gamma <= 1:
            raise self.bad("lr_gamma", "in (0, 1]", self.lr_gamma)
        if self.patience < 0 or self.min_delta < 0:
            raise ConfigError("train.patience and train.min_delta must be >= 0")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise self.bad("time_budget_minutes", "> 0", self.time_budget_minutes)
        for name in ("train_tiles_per_epoch", "val_tiles"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise self.bad(name, ">= 1 (or null for all)", value)
        if self.class_weights is not None and not all(w > 0 for w in self.class_weights):
            raise self.bad("class_weights", "a list of weights > 0, one per class", self.class_weights)
        if self.quicklook_samples < 0:
            raise self.bad("quicklook_samples", ">= 0", self.quicklook_samples)
        if not 1 <= self.folds <= 10:
            raise self.bad("folds", "1 (one held-out share) or a fold count from 2 to 10", self.folds)
        if not 0 <= self.min_gain < 1:
            raise self.bad("min_gain", "an F1 difference in [0, 1)", self.min_gain)
        return self
