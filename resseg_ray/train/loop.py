"""The per-worker training loop run by Ray Train (one process per DDP worker).

Each epoch: build this worker's share of the epoch's training tiles (their order, share and
augmentation drawn from ``run.seed`` and the epoch: the same on every run) as a Ray dataset,
train on it, validate on this worker's share of the validation tiles, sum losses and
confusion matrices across workers, apply early stopping on the validation loss, write a
checkpoint (rank 0) and report. Rank 0 also logs the epoch's metrics and, when validation
F1 improves, a quicklook PNG to MLflow. A restarted worker group resumes from the latest
checkpoint, with the epochs after it as they would have been.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from resseg_ray.config import Config, from_dict
from resseg_ray.data.pipeline import (
    SampleSpec,
    epoch_streams,
    prefetched_samples,
    reads_in_worker,
    steps_per_epoch,
    stream_rows,
    worker_rows,
)
from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError
from resseg_ray.evaluation.metrics import IGNORE, Confusion, confusion_counts_torch
from resseg_ray.inference.batchnorm import set_batchnorm_eval
from resseg_ray.models.base import SegmentationNet
from resseg_ray.models.bundle import load_bundle_bytes, save_bundle
from resseg_ray.models.registry import build_model, model_task
from resseg_ray.scratch import scratch_dir
from resseg_ray.train.epoch_feed import publish
from resseg_ray.train.quicklook import render_quicklook
from resseg_ray.train.state import BEST_FILES, Progress, read_checkpoint, write_checkpoint
from resseg_ray.train.tracking import EpochLogger


def worker_policy(cfg: Config) -> DevicePolicy:
    """The device policy of a Ray Train worker: its assigned GPU when scaling.use_gpu, else CPU."""
    if cfg.scaling.use_gpu and cfg.scaling.in_process:  # Ray Train's local mode: this process's GPU
        device = "cuda"
    elif cfg.scaling.use_gpu:
        import ray.train.torch

        device = str(ray.train.torch.get_device())
    else:
        device = "cpu" if cfg.train.device == "auto" else cfg.train.device
    return DevicePolicy.resolve(device, cfg.train.channels_last, cfg.train.precision)


def _allreduce(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config`` holds the resolved configuration and run facts."""
    import ray.train

    cfg: Config = from_dict(Config, config["cfg"])
    meta = config["meta"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.scaling.torch_threads or max(1, int(cfg.scaling.cpus_per_worker)))
    policy = worker_policy(cfg)

    torch.manual_seed(cfg.run.seed)  # the same initial weights on every worker and every run
    model = build_model(
        cfg.model.arch, in_bands=len(meta["band_names"]), num_classes=len(cfg.model.class_names)
    )
    if cfg.model.pretrained:
        from resseg_ray.models.resnet import load_pretrained_encoder
        from resseg_ray.models.resseg import ResSegNet

        if not isinstance(model, ResSegNet):  # checked by the trainer before any worker starts
            raise ConfigError(f"model.pretrained loads ResNet encoder weights; {cfg.model.arch} has none")
        load_pretrained_encoder(model.encoder, cfg.model.pretrained, meta["band_names"])
    if meta.get("init_bundle") is not None:  # refinement: start from the parent's weights
        model.load_state_dict(_bundle_state(ray.get(meta["init_bundle"])))
    elif meta.get("init_buildings") is not None:  # a damage network from a building network
        from resseg_ray.models.resseg import ResSegNet
        from resseg_ray.models.siamese import SiameseResSegNet, init_from_buildings

        buildings = load_bundle_bytes(ray.get(meta["init_buildings"]), "model.init_from").model
        if not isinstance(model, SiameseResSegNet) or not isinstance(buildings, ResSegNet):
            raise ConfigError("model.init_from starts a damage network from a building network (prop<depth>)")
        init_from_buildings(model, buildings)
    t = cfg.train
    weights = None if t.class_weights is None else torch.tensor(t.class_weights, dtype=torch.float32)
    damage = model_task(cfg.model.arch) == "damage"
    frozen = freeze_modules(model.encoder_modules()) if t.freeze_encoder else []
    trained = [p for p in model.parameters() if p.requires_grad]
    # L2-SP: the weights training starts from, before any checkpoint is resumed
    anchor = [p.detach().clone() for p in trained] if t.l2sp > 0 else []
    optimizer = torch.optim.SGD(
        trained, lr=t.lr, momentum=t.momentum, weight_decay=0.0 if anchor else t.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.lr_step_epochs, gamma=t.lr_gamma)

    # the best bundles so far, carried from checkpoint to checkpoint; removed at the end (or,
    # when Ray kills this worker, by the next scratch folder made on this host)
    with scratch_dir("best") as best_dir:
        progress = Progress()
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                progress = read_checkpoint(d, model, optimizer, scheduler, best_dir)
            progress.restarts += 1
        policy.prepare_model(model)
        _optimizer_to(optimizer, policy.device)
        pull = L2SP(trained, [a.to(policy.device) for a in anchor], t.l2sp) if anchor else None
        net: torch.nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[policy.device] if policy.device.type == "cuda" else None
            )

        logger = None
        if rank == 0 and meta.get("run_id"):
            logger = EpochLogger(meta["tracking_uri"], meta["run_id"])
        rows = ray.get(meta["rows"])
        spec: SampleSpec = meta["sample_spec"]
        val_spec = dataclasses.replace(spec, augment=False)
        val_rows = worker_rows(rows["val"], rank, world)  # read here each epoch (_validate)
        scaler = policy.grad_scaler()

        if progress.finished and progress.may_go_on(t.epochs, t.time_budget_minutes):
            progress.finished, progress.stop_reason = False, ""  # more epochs or time given: go on
        if progress.finished:  # re-run of a finished run: report where it stands, train nothing
            ray.train.report({"epoch": progress.epochs_done, "finished": 1})
            return
        steps = steps_per_epoch(rows["train"].num_rows, world, t.batch_size)
        for epoch, batches in _epoch_batches(rows["train"], spec, cfg, rank, world, policy, progress):
            lr = optimizer.param_groups[0]["lr"]
            train = train_epoch(
                net,
                itertools.islice(batches, steps),
                optimizer,
                scaler,
                policy,
                t.freeze_bn,
                frozen,
                pull,
                weights,
            )
            val, quick = _validate(
                net,
                prefetched_samples(val_rows, val_spec, t.batch_size),
                policy,
                len(cfg.model.class_names),
                t.quicklook_samples if rank == 0 else 0,
            )
            scheduler.step()
            totals = (
                _allreduce(
                    torch.tensor(
                        [
                            train["loss_sum"],
                            train["batches"],
                            train["samples"],
                            train["seconds"],
                            train["wait"],
                            val["loss_sum"],
                            val["pixels"],
                            val["seconds"],
                        ],
                        dtype=torch.float64,
                        device=policy.device,
                    )
                )
                .cpu()
                .tolist()
            )
            counts = _allreduce(val["confusion"].to(policy.device)).cpu().numpy()
            # a dataset without validation tiles (a refinement's last training on every
            # annotated block, train.select=last) reports no validation figure at all
            validated = {}
            if totals[6] > 0:
                m = Confusion(counts, positive=1, damage=damage).metrics()
                validated = {"val_loss": totals[5] / totals[6], **{f"val_{k}": v for k, v in m.items()}}
            metrics = {
                "epoch": epoch,
                "train_loss": totals[0] / max(totals[1], 1),
                **validated,
                "lr": lr,
                # samples/s of the whole job and per worker; data wait = share of step time
                # spent blocked on the loader
                "samples_per_s": totals[2] / max(totals[3] / world, 1e-9),
                "samples_per_s_per_worker": totals[2] / world / max(totals[3] / world, 1e-9),
                "data_wait_fraction": totals[4] / max(totals[3], 1e-9),
                "epoch_seconds": train["seconds"] + val["seconds"],
                "val_seconds": totals[7] / world,  # mean over workers of the validation time
            }
            if not math.isfinite(metrics["train_loss"]):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch} (train loss {metrics['train_loss']}); "
                    "lower train.lr or check the normalisation statistics"
                )
            loss_best, f1_best = progress.update(metrics, t.min_delta)
            progress.check_stop(t.epochs, t.patience, t.time_budget_minutes)
            if validated:
                metrics.update(best_val_loss=progress.best_val_loss, best_val_f1=progress.best_val_f1)
            metrics.update(bad_epochs=progress.bad_epochs, restarts=progress.restarts)

            ckpt = None
            with _checkpoint_dir(meta, epoch) as tmp:
                if rank == 0:
                    kept = ((loss_best, "val_loss"), (f1_best, "val_f1"), (t.select == "last", "last"))
                    current = [BEST_FILES[key] for flag, key in kept if flag]
                    for name in current:
                        _save_best(os.path.join(best_dir, name), model, cfg, meta, metrics)
                    write_checkpoint(tmp, progress, model, optimizer, scheduler, best_dir, current)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                    if logger is not None:
                        logger.log_metrics(metrics, step=epoch)
                        if f1_best and quick is not None:
                            images, labels, probs = quick
                            png = render_quicklook(images, labels, probs, band_names=meta["band_names"])
                            logger.log_bytes(png, f"quicklook/val_epoch_{epoch:03d}.png")
                ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{epoch:04d}")
            if rank == 0 and meta.get("epoch_queue") is not None:  # the job's progress line, once
                publish(meta["epoch_queue"], meta["run_id"], epoch, metrics)  # the epoch is saved
            if progress.finished:
                break


@contextlib.contextmanager
def _checkpoint_dir(meta: dict[str, Any], epoch: int) -> Iterator[str]:
    """The folder an epoch's checkpoint is written to and reported from: a scratch folder that
    Ray Train copies to the run's storage, or, in Ray Train's local mode (which copies nothing,
    ``scaling.in_process``), ``epoch_<n>`` under ``meta["local_checkpoints"]``, kept until the
    next epoch's is written."""
    root = meta.get("local_checkpoints")
    if root is None:
        with scratch_dir("ckpt") as tmp:
            yield tmp
        return
    path = os.path.join(root, f"epoch_{epoch:04d}")
    os.makedirs(path, exist_ok=True)
    yield path
    for old in os.listdir(root):
        if old != os.path.basename(path):
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)


def _epoch_batches(
    rows: pa.Table, spec: SampleSpec, cfg: Config, rank: int, world: int, policy: DevicePolicy,
    progress: Progress,
) -> Iterator[tuple[int, Iterator[dict]]]:  # fmt: skip
    """Each epoch still to train, with this worker's batches of it (its tiles in this epoch's
    order, augmented as this epoch): iterators over a stream of consecutive epochs
    (:func:`~resseg_ray.data.pipeline.epoch_streams`), to be consumed one epoch at a time; an
    epoch of at most ``data.local_loader_tiles`` tiles per worker is read in this process."""
    d, t = cfg.data, cfg.train
    epochs = range(progress.epochs_done + 1, t.epochs + 1)
    if reads_in_worker(rows.num_rows, world, t.batch_size, d.local_loader_tiles):
        for epoch in epochs:  # a small epoch: read here, no Ray Data executor to start
            table = stream_rows(rows, spec.seed, [epoch], rank, world, t.batch_size)
            yield epoch, local_torch_batches(table, spec, t.batch_size, policy)
        return
    for part, dataset in epoch_streams(
        rows, spec, epochs, rank, world, t.batch_size, d.loader_batch, d.loader_num_cpus
    ):
        # streaming_split(1): Ray Data's executor runs in a coordinator actor, not in this
        # process beside the training step, and with one consumer the order stays the dataset's
        batches = iter(torch_batches(dataset.streaming_split(1)[0], t.batch_size, policy, drop_last=True))
        for epoch in part:
            yield epoch, batches


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                state[k] = v.to(device)


def torch_batches(shard, batch_size: int, policy: DevicePolicy, drop_last: bool) -> Iterable[dict]:
    """A Ray dataset's or split's ``{"image", "label"}`` torch batches on the policy's device."""
    return shard.iter_torch_batches(
        batch_size=batch_size,
        dtypes={"image": torch.float32, "label": torch.int64},
        device=str(policy.device),
        drop_last=drop_last,
        prefetch_batches=2,
    )


def local_torch_batches(
    rows: pa.Table, spec: SampleSpec, batch_size: int, policy: DevicePolicy
) -> Iterator[dict]:
    """The ``{"image", "label"}`` torch batches of ``rows`` read in this process by a background
    thread (:func:`~resseg_ray.data.pipeline.prefetched_samples`): what :func:`torch_batches`
    gives for a Ray dataset of the same rows, without its executor."""
    for b in prefetched_samples(rows, spec, batch_size):
        yield {
            "image": torch.from_numpy(b["image"]).to(policy.device),
            "label": torch.from_numpy(b["label"].astype(np.int64)).to(policy.device),
        }


def freeze_modules(modules: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """Stop training ``modules``' weights; :func:`train_epoch` keeps them in inference mode."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)
    return modules


@dataclasses.dataclass
class L2SP:
    """The L2-SP penalty ``alpha / 2 * sum ||w - w0||^2`` of the trained weights ``params``
    against the weights ``anchor`` they started from."""

    params: Sequence[torch.Tensor]
    anchor: Sequence[torch.Tensor]
    alpha: float

    def __call__(self) -> torch.Tensor:
        total = sum(((p - a) ** 2).sum() for p, a in zip(self.params, self.anchor, strict=True))
        return 0.5 * self.alpha * torch.as_tensor(total)


def train_epoch(
    net,
    batches: Iterable[dict],
    optimizer,
    scaler,
    policy: DevicePolicy,
    freeze_bn: bool = False,
    frozen: list[torch.nn.Module] | None = None,
    pull: L2SP | None = None,
    weights: torch.Tensor | None = None,
) -> dict[str, float]:
    """One pass of ``net`` over ``batches`` (:func:`torch_batches`):
    summed loss, batch and sample counts, seconds and seconds waited on data. ``freeze_bn`` keeps
    every BatchNorm in inference mode, ``frozen`` those modules, ``pull`` adds L2-SP, ``weights``
    weigh each class in the loss."""
    net.train()
    if freeze_bn:
        set_batchnorm_eval(net)
    for m in frozen or []:  # a frozen encoder keeps its BatchNorm statistics too
        m.eval()
    loss_sum = steps = samples = wait = 0.0
    start = time.perf_counter()
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        wait += time.perf_counter() - t0
        x = policy.prepare_batch(batch["image"])
        y = batch["label"]
        optimizer.zero_grad(set_to_none=True)
        with policy.autocast():
            logits = net(x)
        w = None if weights is None else weights.to(logits.device)
        loss = F.cross_entropy(logits.float(), y, weight=w, ignore_index=IGNORE)
        if not (y != IGNORE).any():  # nothing labelled: keep DDP in step with a zero loss
            loss = logits.float().sum() * 0.0
        objective = loss + pull() if pull is not None else loss
        scaler.scale(objective).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += float(loss.detach())
        steps += 1
        samples += x.shape[0]
    return {
        "loss_sum": loss_sum,
        "batches": steps,
        "samples": samples,
        "seconds": time.perf_counter() - start,
        "wait": wait,
    }


def _validate(
    net, batches: Iterable[dict[str, np.ndarray]], policy: DevicePolicy, num_classes: int, keep: int
):  # fmt: skip
    """Summed validation loss, labelled pixel count and confusion of this worker's share of
    the validation samples (``batches`` of numpy ``image``/``label``); plus up to ``keep``
    samples (image, labels, building probability) for the quicklook."""
    net.eval()
    start = time.perf_counter()
    loss_sum, pixels = 0.0, 0
    confusion = None
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with torch.inference_mode():
        for batch in batches:
            x = policy.prepare_batch(torch.from_numpy(batch["image"]))
            y = torch.from_numpy(batch["label"]).to(policy.device, torch.int64)
            with policy.autocast():
                logits = net(x).float()
            loss_sum += float(F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum"))
            pixels += int((y != IGNORE).sum())
            pred = logits.argmax(1)
            c = confusion_counts_torch(pred, y, logits.shape[1])
            confusion = c if confusion is None else confusion + c
            if len(kept) < keep:
                prob = 1.0 - torch.softmax(logits, 1)[:, 0]  # a building, of any class
                for i in range(min(keep - len(kept), x.shape[0])):
                    kept.append((batch["image"][i].copy(), y[i].cpu().numpy(), prob[i].float().cpu().numpy()))
    if confusion is None:
        confusion = torch.zeros((num_classes, num_classes), dtype=torch.int64)
    quick: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    if kept:
        images, labels, probs = (np.stack(a) for a in zip(*kept, strict=True))
        quick = (images, labels, probs)
    return {
        "loss_sum": loss_sum,
        "pixels": pixels,
        "confusion": confusion.cpu(),
        "seconds": time.perf_counter() - start,
    }, quick


def _bundle_state(data: bytes) -> dict[str, torch.Tensor]:
    """The weights of a bundle file's bytes (loaded the safe way: no pickle)."""
    return load_bundle_bytes(data, "the parent bundle").model.state_dict()


def _save_best(path: str, model: SegmentationNet, cfg: Config, meta: dict, metrics: dict) -> None:
    save_bundle(
        path,
        model,
        norm_mean=meta["norm_mean"],
        norm_std=meta["norm_std"],
        band_names=meta["band_names"],
        class_names=cfg.model.class_names,
        tile_size=cfg.data.crop_size,
        extra={
            "source": "refine" if meta.get("init_bundle") is not None else "train",
            "parent_run_id": meta.get("parent_run_id"),
            "run_name": meta["run_name"],
            "mlflow_run_id": meta.get("run_id"),
            "dataset": meta["dataset"],
            "manifest_sha256": meta["manifest_sha256"],
            "normalization": cfg.data.normalization,
            "epoch": int(metrics["epoch"]),
            # the epoch's validation figures (none without validation tiles)
            **{k: metrics[k] for k in ("val_loss", "val_f1", "val_accuracy") if k in metrics},
        },
    )
