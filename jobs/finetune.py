"""Refine a trained model on a hand-annotated part of a new scene (the paper's Table III).

``python jobs/finetune.py [options]`` is ``resseg finetune [options]``; the job is
:mod:`resseg_ray.commands.finetune` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("finetune")
