"""The paper's experiments at CPU scale: Table II, Table III, BatchNorm adaptation and where
to annotate, on the demo data (or any prepared dataset with test scenes).

    python -m bench.paper_tables                      # demo data: prop18, prop34, unet19 8 min each
    python -m bench.paper_tables --scenes 0           # Table III and where-to-annotate on all test scenes
    python -m bench.paper_tables --quick              # a few minutes: prop18, 1 epoch, 1 scene
    python -m bench.paper_tables --seeds 3            # Table II three times: mean and spread per depth
    python -m bench.paper_tables --normalization per_scene   # the demo's own setting
    python -m bench.paper_tables --archs prop18 prop50 prop152 unet19 unet35 --minutes 60 \\
        --set scaling.use_gpu=true                    # on a GPU

The models are trained as the paper's: inputs standardised by the training scenes' pooled
statistics (``--normalization pooled``); the demo's test scenes come from other simulated
sensors (gains up to 4x), the domain gap Table III and BatchNorm re-estimation close.

1. Table II: each architecture trained for the same time (``--minutes``, the paper's
   time-critical setting; an equal number of epochs would give U-Net-19, 8x the FLOPs of
   prop18, 8x the compute) by ``compare_architectures`` (what ``jobs/compare_depths.py``
   runs), the model of the best validation F1 scored on the test scenes (F1 / accuracy, %).
2. BatchNorm adaptation: each trained model on the test scenes with its BatchNorm
   statistics re-estimated on each scene (no labels) against without.
3. Table III: each of ``--refine-archs`` refined (``refine_scene``, what
   ``jobs/finetune.py`` runs) on a contiguous block of each test scene holding each of
   ``--fractions`` (paper: 7 % and 15 %), scored before and after on the rest of the scene.
4. Where to annotate: for the first refine architecture and the first fraction, refining
   on the most uncertain regions (``suggest_annotation``) and on a random block against the
   contiguous block; gains are F1 after minus before on each area's own rest of the scene.

Writes markdown (default bench/results/paper_tables.md) and JSON, logs both to an MLflow
run ``<prefix>-tables``. Figures only: it reports what it measures, nothing passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from bench.results_io import machine, write_results
from resseg_ray.adapt.refine import AreaSpec, refine_scene
from resseg_ray.adapt.suggest import suggest_regions
from resseg_ray.cli import init_ray
from resseg_ray.config import PredictSection, load_config
from resseg_ray.data.prepare import load_dataset
from resseg_ray.device import DevicePolicy
from resseg_ray.evaluation.scenes import Evaluation, evaluate_scene, markdown_table, scene_name
from resseg_ray.experiments.compare_depths import compare_architectures
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings, resolve_uri, workdir
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models.bundle import load_bundle
from resseg_ray.train import tracking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pct(score) -> str:
    m = score.metrics
    return f"{100 * m['f1']:.2f} / {100 * m['accuracy']:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.yaml"))
    p.add_argument("--refine-config", default=os.path.join(ROOT, "configs", "finetune_demo.yaml"))
    p.add_argument("--archs", nargs="+", default=["prop18", "prop34", "unet19"])
    p.add_argument("--refine-archs", nargs="+", default=["prop18", "unet19"])
    p.add_argument(
        "--minutes", type=float, default=8.0,
        help="training time per architecture (Table II; train.time_budget_minutes; 0: no budget)",
    )  # fmt: skip
    p.add_argument(
        "--epochs", type=int, default=40, help="at most this many training epochs per architecture"
    )
    p.add_argument("--train-tiles", type=int, default=192, help="training tiles per epoch (Table II; 0: all)")
    p.add_argument("--refine-epochs", type=int, default=12, help="refinement epochs (paper: 100)")
    p.add_argument("--refine-crop", type=int, default=96, help="refinement crop size (px)")
    p.add_argument("--fractions", nargs="+", type=float, default=[0.07, 0.15])
    p.add_argument(
        "--scenes", type=int, default=1,
        help="BatchNorm, Table III and where-to-annotate on the first N test scenes (0: all); "
        "Table II always scores every test scene",
    )  # fmt: skip
    p.add_argument(
        "--normalization", choices=["pooled", "per_scene"], default="pooled",
        help="input standardisation of every model (pooled: the paper's)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=0, help="run.seed of the (first) trainings and of the refinements"
    )
    p.add_argument(
        "--seeds", type=int, default=1,
        help="Table II trained with N seeds (--seed .. --seed+N-1): mean and spread per architecture, "
        "so a difference between depths can be read against run-to-run noise",
    )  # fmt: skip
    p.add_argument("--prefix", default="paper")
    p.add_argument("--quick", action="store_true", help="prop18 only, 1 epoch, 1 scene, one fraction")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "paper_tables.md"))
    args = p.parse_args()
    if args.quick:
        args.archs, args.refine_archs, args.epochs, args.refine_epochs = ["prop18"], ["prop18"], 1, 1
        args.minutes = 0
        args.fractions, args.scenes = [0.15], 1
    start = time.perf_counter()
    init_ray()
    norm = f"data.normalization={args.normalization}"
    tiles = [f"train.train_tiles_per_epoch={args.train_tiles}"] if args.train_tiles else []
    budget = [f"train.time_budget_minutes={args.minutes}"] if args.minutes else []
    base = [norm, *tiles, *budget, *args.overrides, f"train.epochs={args.epochs}"]
    cfg = load_config(args.config, [*base, f"run.seed={args.seed}"])
    settings = StorageSettings.resolve(cfg.storage)
    policy = DevicePolicy.resolve(cfg.train.device)

    # 1. Table II (the first seed's models go on to the other sections)
    comparison = compare_architectures(cfg, args.archs, prefix=args.prefix)
    per_seed = {args.seed: comparison}
    for seed in range(args.seed + 1, args.seed + args.seeds):
        seeded = load_config(args.config, [*base, f"run.seed={seed}"])
        per_seed[seed] = compare_architectures(seeded, args.archs, prefix=f"{args.prefix}-seed{seed}")
    spread = {
        arch: [100 * c.evaluations[arch].mean()["f1"] for c in per_seed.values()] for arch in args.archs
    }
    bundles = {a: r.bundle_uri for a, r in comparison.runs.items()}
    scenes = [
        (s["uri"], s["label_uri"])
        for s in load_dataset(resolve_uri(cfg.train.dataset), settings).scenes("test")
    ]
    scenes = scenes[: args.scenes] if args.scenes else scenes
    out: dict = {"machine": machine(), "args": vars(args), "table2": {}, "bn": {}, "table3": {}, "where": {}}
    out["table2_seeds"] = {a: dict(zip(per_seed, f1s, strict=True)) for a, f1s in spread.items()}
    seed_lines = ["| model | test mean F1 per seed | mean | sd | range |", "|---|---|---|---|---|"]
    for arch, f1s in spread.items():
        sd = statistics.stdev(f1s) if len(f1s) > 1 else 0.0
        seed_lines.append(
            f"| {arch} | {', '.join(f'{v:.2f}' for v in f1s)} | {statistics.fmean(f1s):.2f} | {sd:.2f} | "
            f"{max(f1s) - min(f1s):.2f} |"
        )
    for arch, ev in comparison.evaluations.items():
        out["table2"][arch] = {s.name: s.metrics for s in ev.scenes}
    trained = {a: r.progress for a, r in comparison.runs.items()}
    out["trained"] = {
        a: {"epochs": pr.epochs_done, "minutes": pr.training_seconds() / 60, "stop_reason": pr.stop_reason,
            "best_val_f1": pr.best_val_f1, "best_val_f1_epoch": pr.best_val_f1_epoch}
        for a, pr in trained.items()
    }  # fmt: skip
    sections: dict[str, float] = {}
    out["section_seconds"] = sections

    def section_done(name: str) -> None:  # seconds since the previous section ended
        sections[name] = time.perf_counter() - start - sum(sections.values())

    section_done("table2")

    # 2. BatchNorm adaptation on the whole test scenes (the plain rows are Table II's)
    bn_rows = {}
    names = {scene_name(u) for u, _ in scenes}
    for arch in args.archs:
        bundle = load_bundle(bundles[arch])
        adapted = ScenePredictor(bundle, PredictSection(adapt_bn=True), policy)
        bn_rows[f"{arch}"] = Evaluation([s for s in comparison.evaluations[arch].scenes if s.name in names])
        bn_rows[f"{arch} + BN re-estimated"] = Evaluation(
            [evaluate_scene(adapted, u, lab, settings) for u, lab in scenes]
        )
        out["bn"][arch] = {
            "plain": {s.name: s.metrics for s in bn_rows[arch].scenes},
            "adapted": {s.name: s.metrics for s in bn_rows[f"{arch} + BN re-estimated"].scenes},
        }

    section_done("bn")

    # 3. Table III
    rcfg = load_config(
        args.refine_config,
        [
            *args.overrides,
            f"run.seed={args.seed}",
            f"train.epochs={args.refine_epochs}",
            f"data.crop_size={args.refine_crop}",
            # the paper's schedule (Table III), not the project's refinement recipe: 1e-4,
            # constant, the last epoch kept, from the parent as trained
            "train.lr=0.0001",
            "train.select=last",
            "train.patience=0",
            "train.freeze_bn=false",
            "train.l2sp=0",
            "train.refine_start=parent",
            f"mlflow.experiment={cfg.mlflow.experiment}",
        ],
    )
    t3_lines = [
        "| model | scene | area | F1 / acc. before (rest) | F1 / acc. after (rest) | F1 gain |",
        "|---|---|---|---|---|---|",
    ]
    for arch in args.refine_archs:
        for uri, lab in scenes:
            for f in args.fractions:
                name = f"{args.prefix}-refine-{arch}-{scene_name(uri)}-{round(100 * f)}"
                r = refine_scene(
                    rcfg.replace(run=rcfg.run.replace(name=name)),
                    bundles[arch], uri, AreaSpec(fraction=f), labels=lab, alias=f"{args.prefix}-refined",
                )  # fmt: skip
                gain = 100 * (r.after.metrics["f1"] - r.before.metrics["f1"])
                t3_lines.append(
                    f"| {arch} | {r.before.name} | {100 * r.area.fraction:.1f} % | {_pct(r.before)} | "
                    f"{_pct(r.after)} | {gain:+.2f} |"
                )
                out["table3"].setdefault(arch, {}).setdefault(r.before.name, {})[f] = {
                    "before": r.before.metrics, "after": r.after.metrics, "area_fraction": r.area.fraction
                }  # fmt: skip

    section_done("table3")

    # 4. Where to annotate: suggested vs random vs contiguous (first refine arch, first fraction),
    # all three on 128 px tiles: the suggested regions (--region 256 px squares, scattered) hold
    # too few whole 192 px tiles
    arch, f = args.refine_archs[0], args.fractions[0]
    wcfg = rcfg.replace(data=rcfg.data.replace(tile_size=128, stride=32, split_block=128))
    w_lines = ["| scene | area | F1 before (rest) | F1 after (rest) | F1 gain |", "|---|---|---|---|---|"]
    bundle = load_bundle(bundles[arch])
    with tempfile.TemporaryDirectory(prefix="resseg-suggest-") as tmp:
        for uri, lab in scenes:
            stem = scene_name(uri)
            suggestion = os.path.join(tmp, f"{stem}_suggested.geojson")
            fc = suggest_regions(ScenePredictor(bundle, None, policy), open_scene(uri, settings), settings, f)
            with open(suggestion, "w") as fh:
                json.dump(fc, fh)
            rows = {}
            for label, spec in (
                ("contiguous", AreaSpec(fraction=f)),
                ("suggested", AreaSpec(polygons=suggestion)),
                ("random", AreaSpec(fraction=f, placement="random")),
            ):
                name = f"{args.prefix}-where-{label}-{arch}-{stem}-{round(100 * f)}"
                r = refine_scene(
                    wcfg.replace(run=wcfg.run.replace(name=name)),
                    bundles[arch], uri, spec, labels=lab, alias=f"{args.prefix}-refined",
                )  # fmt: skip
                rows[label] = (r.before.metrics, r.after.metrics)
            for label, (before, after) in rows.items():
                w_lines.append(
                    f"| {stem} | {label} | {100 * before['f1']:.2f} | {100 * after['f1']:.2f} | "
                    f"{100 * (after['f1'] - before['f1']):+.2f} |"
                )
                out["where"].setdefault(stem, {})[label] = {"before": before, "after": after}

    section_done("where")
    seconds = time.perf_counter() - start
    out["seconds"] = seconds
    budget_text = (
        f"{args.minutes:g} min of training (at most {args.epochs} epochs)"
        if args.minutes
        else (f"{args.epochs} training epochs")
    )
    trained_text = ", ".join(
        f"{a} {pr.epochs_done} epochs in {pr.training_seconds() / 60:.1f} min "
        f"(best val F1 {100 * pr.best_val_f1:.1f} at epoch {pr.best_val_f1_epoch})"
        for a, pr in trained.items()
    )
    md = "\n".join(
        [
            f"# The paper's experiments at CPU scale ({args.prefix}; {seconds / 60:.0f} min)",
            "",
            f"Table II ({budget_text} per architecture, {args.train_tiles or 'all'} tiles per epoch, "
            f"{args.normalization} normalisation; model of the best validation F1): {trained_text}",
            "",
            markdown_table(comparison.evaluations),
            f"Table II over {len(per_seed)} seed(s) ({', '.join(map(str, per_seed))}): test mean F1 in %",
            "",
            *seed_lines,
            "",
            "BatchNorm statistics re-estimated on each test scene (no labels)",
            "",
            markdown_table(bn_rows),
            f"Table III: refined ({args.refine_epochs} epochs, lr {rcfg.train.lr:g}, last epoch kept) on "
            "a contiguous block, scored on the rest",
            "",
            *t3_lines,
            "",
            f"Where to annotate ({arch}, {100 * f:.0f} % of each scene, 128 px tiles): gains on each "
            "area's own rest of the scene",
            "",
            *w_lines,
            "",
        ]
    )
    print(md)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(md)
    write_results(os.path.splitext(args.out)[0] + ".json", out)
    uri = tracking.resolve_tracking_uri(cfg.mlflow, workdir())
    run = tracking.open_run(
        uri, cfg.mlflow.experiment, f"{args.prefix}-tables", "bench", tags={"resseg.kind": "paper-tables"}
    )
    c = tracking.client(uri)
    c.log_text(run.run_id, md, "paper_tables.md")
    c.log_text(run.run_id, json.dumps(out, indent=1, default=str), "paper_tables.json")
    c.set_terminated(run.run_id, status="FINISHED")
    print(f"wrote {args.out}; MLflow run {run.run_id} at {uri}")


if __name__ == "__main__":
    main()
