"""Build a network from the registry and write it as a model bundle, with a reload check.

``python jobs/export_model.py [options]`` is ``resseg export-model [options]``; the job is
:mod:`resseg_ray.commands.export_model` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("export-model")
