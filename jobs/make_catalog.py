"""Write a static STAC catalog of GeoTIFF scenes, shaped as the open-data event catalogs.

``python jobs/make_catalog.py [options]`` is ``resseg catalog [options]``; the job is
:mod:`resseg_ray.commands.catalog` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("catalog")
