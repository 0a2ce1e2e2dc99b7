"""Compare architectures like the paper's Table II: train each, evaluate on the test scenes.

``python jobs/compare_depths.py [options]`` is ``resseg compare-depths [options]``; the job is
:mod:`resseg_ray.commands.compare_depths` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("compare-depths")
