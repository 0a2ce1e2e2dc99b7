"""Accuracy of the inference runtimes: F1 and accuracy on a prepared dataset's test scenes and
the share of mask pixels equal to fp32 PyTorch's, per runtime x precision, same run.

    python -m bench.runtime_accuracy                     # the demo's model and test scenes
    python -m bench.runtime_accuracy --model m.resseg.safetensors --dataset data/prepared \\
        --engines torch:fp32 openvino:bf16 auto:auto

Goal of issue 20: ``auto`` within 0.2 points of fp32 PyTorch in F1 and accuracy, masks equal on
>= 99.5 % of pixels. Prints a table and writes JSON (default bench/results/runtime_accuracy.json).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import numpy as np

from bench.results_io import machine, write_results
from resseg_ray.config import PredictSection
from resseg_ray.data.prepare import load_dataset
from resseg_ray.evaluation.scenes import evaluate_scene
from resseg_ray.geo.scene import SceneInfo
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.predictor import ScenePredictor, Strip
from resseg_ray.models.bundle import load_bundle

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MaskKeeping:
    """A predictor for :func:`evaluate_scene` that keeps the class mask (argmax; no-data 255) of
    the scene it scores, so each scene is segmented once for both the scores and the masks."""

    def __init__(self, predictor: ScenePredictor) -> None:
        self.predictor, self.info = predictor, predictor.info
        self.mask = np.zeros((0, 0), np.uint8)

    def strips(self, scene: SceneInfo, settings: StorageSettings) -> Iterator[Strip]:
        self.mask = np.full((scene.height, scene.width), 255, np.uint8)
        for strip in self.predictor.strips(scene, settings):
            m = strip.probs.argmax(0).astype(np.uint8)
            m[~strip.valid] = 255
            self.mask[strip.row : strip.row + m.shape[0]] = m
            yield strip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT_DIR, "runs/demo-prop18/model.resseg.safetensors"))
    p.add_argument("--dataset", default=os.path.join(ROOT_DIR, "data/demo"))
    p.add_argument("--engines", nargs="+", default=["torch:fp32", "openvino:fp32", "torch:bf16", "auto:auto"])
    p.add_argument("--out", default=os.path.join(ROOT_DIR, "bench", "results", "runtime_accuracy.json"))
    args = p.parse_args()
    settings = StorageSettings()
    bundle = load_bundle(args.model)
    scenes = [(s["uri"], s["label_uri"]) for s in load_dataset(args.dataset, settings).scenes("test")]
    engines = ["torch:fp32"] + [e for e in args.engines if e != "torch:fp32"]
    rows, reference = [], {}
    for asked in engines:
        runtime, _, precision = asked.partition(":")
        predictor = ScenePredictor(bundle, PredictSection(runtime=runtime, precision=precision or "auto"))
        t = time.perf_counter()
        keeping = MaskKeeping(predictor)
        for uri, label in scenes:
            score = evaluate_scene(keeping, uri, label, settings)  # duck-typed: info and strips
            mask = keeping.mask
            if asked == "torch:fp32":
                reference[uri] = mask
            m = score.confusion.metrics()
            rows.append(
                {
                    "asked": asked,
                    "engine": predictor.engine.describe(),
                    "scene": score.name,
                    "f1": 100 * m["f1"],
                    "accuracy": 100 * m["accuracy"],
                    "mask_agreement_with_torch_fp32": float((mask == reference[uri]).mean()),
                }
            )
        print(f"{asked}: {time.perf_counter() - t:.1f} s", flush=True)
    base = {r["scene"]: r for r in rows if r["asked"] == "torch:fp32"}
    print(
        f"\n{'asked':<14} {'ran':<16} {'scene':<10} {'F1':>7} {'dF1':>6} {'acc':>7} {'dacc':>6} "
        f"{'mask agree':>10}"
    )
    for r in rows:
        b = base[r["scene"]]
        r["f1_minus_torch_fp32"] = r["f1"] - b["f1"]
        r["accuracy_minus_torch_fp32"] = r["accuracy"] - b["accuracy"]
        ran = f"{r['engine']['runtime']} {r['engine']['precision']}"
        print(
            f"{r['asked']:<14} {ran:<16} {r['scene']:<10} {r['f1']:>7.2f} {r['f1_minus_torch_fp32']:>+6.2f} "
            f"{r['accuracy']:>7.2f} {r['accuracy_minus_torch_fp32']:>+6.2f} "
            f"{100 * r['mask_agreement_with_torch_fp32']:>9.3f}%"
        )
    write_results(
        args.out, {"machine": machine(), "model": args.model, "dataset": args.dataset, "rows": rows}
    )


if __name__ == "__main__":
    main()
