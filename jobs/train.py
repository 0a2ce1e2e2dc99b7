"""Train a segmentation network on Ray Train (DDP), tracked in MLflow.

``python jobs/train.py [options]`` is ``resseg train [options]``; the job is
:mod:`resseg_ray.commands.train` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("train")
