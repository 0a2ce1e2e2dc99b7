"""Map which buildings are damaged, and how badly, from pre- and post-event scenes.

``python jobs/damage.py [options]`` is ``resseg damage [options]``; the job is
:mod:`resseg_ray.commands.damage` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("damage")
