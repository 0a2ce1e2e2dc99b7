"""Suggest where to annotate a scene first: the regions where the model is least certain.

``python jobs/suggest_annotation.py [options]`` is ``resseg suggest [options]``; the job is
:mod:`resseg_ray.commands.suggest` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("suggest")
