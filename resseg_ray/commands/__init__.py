"""Every job as a command: ``resseg <command> [options]`` (the console script of the
package), and ``python jobs/<script>.py`` (the scripts ``ray job submit`` runs), which call the
same code.

Each command is a module here with ``main(argv, prog)``. Only the chosen command's module is
imported, so ``resseg --help`` and a mistyped command answer at once; a command that uses Ray
is started again first as the child of a launcher that watches its cluster
(:mod:`resseg_ray.launcher`), before the job's heavy imports.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from dataclasses import dataclass

__all__ = ["COMMANDS", "Command", "main", "run_command"]


@dataclass(frozen=True)
class Command:
    """One command: its module under :mod:`resseg_ray.commands`, its script under ``jobs/``,
    what it does, in one line, and whether it runs under the launcher (it uses Ray)."""

    module: str
    script: str
    summary: str
    launched: bool = False


COMMANDS: dict[str, Command] = {
    "prepare": Command(
        "prepare",
        "prepare.py",
        "Prepare scenes for training: label rasters, statistics, tiles, manifest.",
        launched=True,
    ),
    "train": Command(
        "train", "train.py", "Train a network on Ray Train (DDP), tracked in MLflow.", launched=True
    ),
    "compare-depths": Command(
        "compare_depths",
        "compare_depths.py",
        "Train and evaluate architectures side by side (Table II).",
        launched=True,
    ),
    "predict": Command(
        "predict", "predict.py", "Segment whole scenes: mask, probability, polygons, JOSM.", launched=True
    ),
    "damage": Command(
        "damage", "damage.py", "Map which buildings are damaged, and how badly, from pre/post scenes."
    ),
    "evaluate": Command("evaluate", "evaluate.py", "Score building maps against labels, per scene and mean."),
    "evaluate-damage": Command(
        "evaluate_damage",
        "evaluate_damage.py",
        "Score damage maps as xView2 does: localization, damage, score.",
    ),
    "finetune": Command(
        "finetune",
        "finetune.py",
        "Refine a model on an annotated part of a new scene (Table III).",
        launched=True,
    ),
    "suggest": Command(
        "suggest", "suggest_annotation.py", "Suggest where to annotate first: the least certain regions."
    ),
    "catalog": Command("catalog", "make_catalog.py", "Write a static STAC catalog of GeoTIFF scenes."),
    "export-model": Command(
        "export_model", "export_model.py", "Build a network from the registry and write it as a bundle."
    ),
    "export-onnx": Command(
        "export_onnx", "export_onnx.py", "Write a bundle as an ONNX model (QGIS Deepness)."
    ),
}
"""The commands, by name, in the order of the mapper's and the ML engineer's path."""


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    return (
        "usage: resseg <command> [options]\n\n"
        "buildings, and the damage to them, from satellite scenes, on Ray\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`resseg <command> --help` shows a command's options."
    )


def run_command(name: str, argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run command ``name`` on ``argv`` (default the process's arguments) as a job: one
    ``error:`` line and exit 2 for a user's mistake (:func:`~resseg_ray.cli.run_job`). On the
    process's own arguments, a command that uses Ray runs under the launcher."""
    _run(name, argv, prog, launch=argv is None)


def _run(name: str, argv: list[str] | None, prog: str | None, launch: bool) -> None:
    command = COMMANDS[name]
    launch = launch and command.launched
    if launch:
        from resseg_ray import launcher

        launcher.supervise()  # returns in the job, before its heavy imports
    from resseg_ray.cli import run_job

    module = importlib.import_module(f"{__name__}.{command.module}")
    run_job(lambda: module.main(argv, prog), supervise=launch)


def main(argv: list[str] | None = None) -> None:
    """The ``resseg`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        raise SystemExit(0 if args else 2)
    name = args[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"error: {name!r} is not a resseg command{hint} (resseg --help lists them)", file=sys.stderr)
        raise SystemExit(2)
    _run(name, args[1:], f"resseg {name}", launch=argv is None)
