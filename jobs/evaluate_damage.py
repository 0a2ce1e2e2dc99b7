"""Score damage maps as the xView2 challenge does: localization F1, damage F1, score.

``python jobs/evaluate_damage.py [options]`` is ``resseg evaluate-damage [options]``; the job is
:mod:`resseg_ray.commands.evaluate_damage` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("evaluate-damage")
