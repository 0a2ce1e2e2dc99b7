"""Segment whole scenes with a trained model: mask and probability COGs per scene.

``python jobs/predict.py [options]`` is ``resseg predict [options]``; the job is
:mod:`resseg_ray.commands.predict` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("predict")
