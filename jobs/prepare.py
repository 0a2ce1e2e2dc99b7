"""Prepare scenes for training: label rasters, normalisation statistics, tiles and manifest.

``python jobs/prepare.py [options]`` is ``resseg prepare [options]``; the job is
:mod:`resseg_ray.commands.prepare` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("prepare")
