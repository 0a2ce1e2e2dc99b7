"""Does a refinement ever ship a worse map? Refinements of demo models on their test scenes.

    python -m bench.refinement                         # 3 base models (seeds 0-2) x 3 scenes x 2 x 2
    python -m bench.refinement --seeds 1 --scenes 1 --fractions 0.07 --placements contiguous
    python -m bench.refinement --models runs/demo-prop18/model.resseg.safetensors
    python -m bench.refinement --merge bench/results/refinement_*.json --out bench/results/all

For each base model (``--models``, or ``--seeds N`` demo models trained with ``run.seed`` 0..N-1
on ``--config``, reused when their run exists), each test scene of the dataset, each fraction
(paper: 7 % and 15 %) and each placement of the annotated area (``contiguous``: the top-left
block; ``suggested``: the most uncertain regions, ``suggest_annotation``), the model is refined
as ``jobs/finetune.py`` refines it (``refine_scene``: epoch chosen and verdict taken on the
annotated blocks kept out of training) and scored on the rest of the scene:

- before: the base model;
- refined: the refined model, whatever the verdict (what was shipped before the verdict);
- shipped: the model the verdict keeps (refined, BatchNorm re-estimated, or the base model).

``--variants`` compares refinement recipes side by side on the same cases (each a name and
overrides of ``--refine-config``): e.g. ``paper`` (keep the last epoch, the paper's schedule),
``l2sp`` (``train.l2sp``), ``frozen`` (``train.freeze_encoder``), ``lowlr`` (``train.lr``);
``start=adapted`` starts from the parent with BatchNorm re-estimated (``finetune --adapt-bn``).

Goal (issue 29): no case's shipped F1 more than 0.5 points below before; a mean gain of at
least +3 points (the paper's small-area gain); the time from click to refined map no worse.
Writes bench/results/refinement.json and .md. Figures only: nothing passes or fails.
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
from resseg_ray.config import Config, load_config
from resseg_ray.data.prepare import load_dataset
from resseg_ray.evaluation.scenes import scene_name
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings, resolve_uri
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models.bundle import load_bundle
from resseg_ray.train.trainer import run_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "results", "refinement")


def base_models(args: argparse.Namespace) -> dict[str, str]:
    """Name -> bundle of the base models: given, or demo models trained with seeds 0..N-1."""
    if args.models:
        return {os.path.basename(os.path.dirname(m)) or m: m for m in args.models}
    out = {}
    for seed in range(args.seeds):
        name = f"{args.prefix}-base-seed{seed}"
        cfg = load_config(args.config, [f"run.seed={seed}", f"run.name={name}", *args.overrides])
        out[name] = run_training(cfg).bundle_uri
    return out


def refine_case(
    args: argparse.Namespace, model: str, bundle_uri: str, uri: str, labels: str, fraction: float,
    placement: str, area: AreaSpec, variant: str, vcfg: Config, adapt_bn: bool,
) -> dict:  # fmt: skip
    """One refinement as ``jobs/finetune.py`` runs it, and its scores on the rest of the scene."""
    stem = scene_name(uri)
    name = f"{args.prefix}-{model}-{stem}-{round(100 * fraction)}-{placement}-{variant}"
    cfg = vcfg.replace(run=vcfg.run.replace(name=name))
    t0 = time.perf_counter()
    r = refine_scene(
        cfg, bundle_uri, uri, area, labels=labels, alias=f"{args.prefix}-refined", adapt_bn=adapt_bn
    )
    seconds = time.perf_counter() - t0
    assert r.before and r.after and r.adapted and r.verdict
    shipped = {"refined": r.after, "adapted": r.adapted, "parent": r.before}[r.verdict.chosen]
    row = {
        "model": model,
        "scene": stem,
        "fraction": r.area.fraction,
        "placement": placement,
        "variant": variant,
        "before_f1": r.before.metrics["f1"],
        "adapted_f1": r.adapted.metrics["f1"],
        "refined_f1": r.after.metrics["f1"],
        "shipped_f1": shipped.metrics["f1"],
        "kept": r.verdict.chosen,
        "heldout": r.verdict.to_dict(),
        "seconds": seconds,
        # how each candidate errs on the rest: precision, recall and the share of its pixels it
        # calls buildings (label-free), against the true share
        **{
            f"{key}_{m}": score.metrics[m]
            for key, score in (("before", r.before), ("adapted", r.adapted), ("refined", r.after))
            for m in ("precision", "recall")
        },
        **{
            f"{key}_building_share": float(score.confusion.counts[:, 1].sum() / score.confusion.counts.sum())
            for key, score in (("before", r.before), ("adapted", r.adapted), ("refined", r.after))
        },
        "true_building_share": float(r.before.confusion.counts[1, :].sum() / r.before.confusion.counts.sum()),
    }
    print(
        f"{model} {stem} {100 * r.area.fraction:.1f} % {placement} {variant}: F1 before "
        f"{100 * row['before_f1']:.1f}, adapted {100 * row['adapted_f1']:.1f}, refined "
        f"{100 * row['refined_f1']:.1f}, kept {row['kept']} -> {100 * row['shipped_f1']:.1f} "
        f"({seconds:.0f} s)",
        flush=True,
    )
    return row


def summarize(rows: list[dict]) -> dict:
    """Gains over the parent in F1 points: of the shipped model, and of the refined model as if
    it always shipped (before the verdict existed)."""
    gains = [100 * (r["shipped_f1"] - r["before_f1"]) for r in rows]
    raw = [100 * (r["refined_f1"] - r["before_f1"]) for r in rows]
    return {
        "cases": len(rows),
        "mean_gain_shipped": statistics.fmean(gains) if gains else None,
        "worst_gain_shipped": min(gains) if gains else None,
        "drops_over_half_point_shipped": sum(g < -0.5 for g in gains),
        "mean_gain_refined_always": statistics.fmean(raw) if raw else None,
        "worst_gain_refined_always": min(raw) if raw else None,
        "drops_over_half_point_refined_always": sum(g < -0.5 for g in raw),
        "refined_kept": sum(r["kept"] == "refined" for r in rows),
        # the verdict against an oracle that knew the rest of the scene: how often it kept the
        # candidate that is best there, and the mean gain that oracle would have shipped
        "kept_best_on_rest": sum(r[_F1[r["kept"]]] >= max(r[k] for k in _F1.values()) for r in rows),
        "mean_gain_oracle": statistics.fmean(
            100 * (max(r[k] for k in _F1.values()) - r["before_f1"]) for r in rows
        )
        if rows
        else None,
        "mean_seconds": statistics.fmean(r["seconds"] for r in rows) if rows else None,
    }


_F1 = {"parent": "before_f1", "adapted": "adapted_f1", "refined": "refined_f1"}


def summaries(rows: list[dict], variants: list[str]) -> dict:
    """Per variant: the summary of all cases, and by base model, area fraction and placement."""
    out: dict = {}
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        out[v] = summarize(mine)
        out[v]["min_gain_replayed"] = margin_sweep(mine)
        for key in ("model", "fraction", "placement"):
            values = sorted({_group(r, key) for r in mine})
            out[v][f"by_{key}"] = {g: summarize([r for r in mine if _group(r, key) == g]) for g in values}
    return out


MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03)
"""``train.min_gain`` values replayed on the measured cases (:func:`margin_sweep`)."""


def margin_sweep(rows: list[dict]) -> dict[str, dict]:
    """What each margin of :data:`MARGINS` would have shipped on these cases, replayed from
    their held-out F1s (the verdict's rule, :func:`resseg_ray.adapt.gate.decide`) and scored
    by their F1 on the rest of the scene: mean and worst gain, drops over half a point, and how
    often it shipped the refined model."""
    out = {}
    for m in MARGINS:
        gains, shipped = [], 0
        for r in rows:
            h = r["heldout"]["f1"]
            if h["refined"] >= max(h["parent"], h["adapted"]) + m:
                kept, shipped = "refined", shipped + 1
            else:
                kept = "adapted" if h["adapted"] > h["parent"] else "parent"
            gains.append(100 * (r[_F1[kept]] - r["before_f1"]))
        out[f"{100 * m:g} points"] = {
            "mean_gain": statistics.fmean(gains) if gains else None,
            "worst_gain": min(gains) if gains else None,
            "drops_over_half_point": sum(g < -0.5 for g in gains),
            "refined_kept": shipped,
        }
    return out


def _group(row: dict, key: str) -> str:
    """The group of a case: its model or placement, or its area fraction asked (7 % or 15 %)."""
    if key == "fraction":  # suggested areas come out a little larger than asked
        return "15 %" if row["fraction"] >= 0.11 else "7 %"
    return str(row[key])


def markdown(rows: list[dict], summary: dict, seconds: float) -> str:
    """The results table, one row per case, and the summary per variant."""
    lines = [
        f"# Refinements: shipped F1 on the rest of each scene ({seconds:.0f} s)",
        "",
        "| model | scene | area | placement | variant | F1 before | F1 adapted | F1 refined | kept "
        "| F1 shipped | gain | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['scene']} | {100 * r['fraction']:.1f} % | {r['placement']} | "
            f"{r['variant']} | {100 * r['before_f1']:.2f} | {100 * r['adapted_f1']:.2f} | "
            f"{100 * r['refined_f1']:.2f} | {r['kept']} | {100 * r['shipped_f1']:.2f} | "
            f"{100 * (r['shipped_f1'] - r['before_f1']):+.2f} | {r['seconds']:.0f} |"
        )
    head = (
        "| variant | cases | mean gain shipped | worst shipped | drops > 0.5 shipped | mean gain "
        "refined always | worst refined always | refined kept | kept the best on the rest | mean "
        "gain of an oracle | mean s |"
    )
    lines += ["", head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant, summ in summary.items():
        groups = [("all", summ)] + [
            (g, sub) for key in ("model", "fraction", "placement") for g, sub in summ[f"by_{key}"].items()
        ]
        for g, x in groups:
            lines.append(
                f"| {variant}: {g} | {x['cases']} | {x['mean_gain_shipped']:+.2f} | "
                f"{x['worst_gain_shipped']:+.2f} | {x['drops_over_half_point_shipped']} | "
                f"{x['mean_gain_refined_always']:+.2f} | {x['worst_gain_refined_always']:+.2f} | "
                f"{x['refined_kept']} | {x['kept_best_on_rest']} | {x['mean_gain_oracle']:+.2f} | "
                f"{x['mean_seconds']:.0f} |"
            )
    lines += ["", "| variant | train.min_gain replayed | mean gain | worst | drops > 0.5 | refined kept |"]
    lines.append("|---|---|---|---|---|---|")
    for variant, summ in summary.items():
        for m, x in summ["min_gain_replayed"].items():
            lines.append(
                f"| {variant} | {m} | {x['mean_gain']:+.2f} | {x['worst_gain']:+.2f} | "
                f"{x['drops_over_half_point']} | {x['refined_kept']} |"
            )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", default=os.path.join(ROOT, "configs", "demo.yaml"), help="base models' training"
    )
    p.add_argument("--refine-config", default=os.path.join(ROOT, "configs", "finetune_demo.yaml"))
    p.add_argument("--models", nargs="+", help="base model bundles (default: train --seeds demo models)")
    p.add_argument("--seeds", type=int, default=3, help="base models trained with run.seed 0..N-1")
    p.add_argument("--scenes", type=int, default=0, help="the first N test scenes (0: all)")
    p.add_argument("--scene-names", nargs="+", help="only these test scenes (file stems, e.g. test_03)")
    p.add_argument("--fractions", nargs="+", type=float, default=[0.07, 0.15])
    p.add_argument(
        "--placements", nargs="+", choices=["contiguous", "suggested"], default=["contiguous", "suggested"]
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=["default"],
        metavar="NAME[:KEY=VALUE,...]",
        help="refinement recipes compared on the same cases: a name and overrides of "
        "--refine-config, e.g. default paper:train.select=last,train.patience=0 l2sp:train.l2sp=1 "
        "adapted:start=adapted (start from the parent with BatchNorm re-estimated, as --adapt-bn)",
    )
    p.add_argument("--prefix", default="bench-refine")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override of both configs")
    p.add_argument("--out", default=OUT, help="results path without suffix (.json and .md are written)")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="write one table of these results files' cases; run nothing",
    )
    args = p.parse_args()
    if args.merge:
        rows = [r for path in args.merge for r in _read_rows(path)]
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        print(write(args, rows, variants, sum(r["seconds"] for r in rows)))
        return
    start = time.perf_counter()
    init_ray()
    models = base_models(args)
    # one tiling for both placements: the suggested regions (256 px squares, scattered) hold
    # too few whole 192 px tiles
    tiling = ["data.tile_size=128", "data.stride=32", "data.split_block=128"]
    variants: dict[str, tuple[Config, bool]] = {}
    for spec in args.variants:
        name, _, sets = spec.partition(":")
        items = [x for x in sets.split(",") if x]
        adapted = "start=adapted" in items  # as finetune --adapt-bn
        items = [x for x in items if x != "start=adapted"]
        variants[name] = (load_config(args.refine_config, [*args.overrides, *tiling, *items]), adapted)
    rcfg = next(iter(variants.values()))[0]
    settings = StorageSettings.resolve(rcfg.storage)
    dataset = load_dataset(resolve_uri(load_config(args.config).train.dataset), settings)
    scenes = [(s["uri"], s["label_uri"]) for s in dataset.scenes("test")]
    scenes = scenes[: args.scenes] if args.scenes else scenes
    if args.scene_names:
        scenes = [s for s in scenes if scene_name(s[0]) in args.scene_names]
    rows: list[dict] = []
    md = ""
    with tempfile.TemporaryDirectory(prefix="resseg-bench-refine-") as tmp:
        for model, bundle_uri in models.items():
            bundle = load_bundle(bundle_uri)
            for uri, labels in scenes:
                stem = scene_name(uri)
                for fraction in args.fractions:
                    for placement in args.placements:
                        if placement == "suggested":
                            path = os.path.join(tmp, f"{model}-{stem}-{fraction}.geojson")
                            fc = suggest_regions(
                                ScenePredictor(bundle, rcfg.predict),
                                open_scene(uri, settings),
                                settings,
                                fraction,
                            )
                            with open(path, "w") as f:
                                json.dump(fc, f)
                            area = AreaSpec(polygons=path)
                        else:
                            area = AreaSpec(fraction=fraction)
                        for variant, (vcfg, adapt_bn) in variants.items():
                            case = (model, bundle_uri, uri, labels, fraction, placement, area)
                            rows.append(refine_case(args, *case, variant, vcfg, adapt_bn))
                            md = write(args, rows, list(variants), time.perf_counter() - start)
    print(md)


def write(args: argparse.Namespace, rows: list[dict], variants: list[str], seconds: float) -> str:
    """The table and summary so far (after every case: a long run stopped keeps its figures)."""
    summary = summaries(rows, variants)
    md = markdown(rows, summary, seconds)
    with open(args.out + ".md", "w") as f:
        f.write(md)
    write_results(
        args.out + ".json", {"machine": machine(), "args": vars(args), "summary": summary, "rows": rows}
    )
    return md


def _read_rows(path: str) -> list[dict]:
    with open(path) as f:
        return json.load(f)["rows"]


if __name__ == "__main__":
    main()
