"""Evaluate building maps against labels: per scene and mean, like the paper's Table II.

``python jobs/evaluate.py [options]`` is ``resseg evaluate [options]``; the job is
:mod:`resseg_ray.commands.evaluate` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("evaluate")
