"""The segmentation service: ``serve run serve_app:app``.

Environment: ``RESSEG_MODEL`` (bundle path, s3:// bundle or models:/NAME@ALIAS; default the
model ``make demo`` trains, ``runs/demo-prop18/model.resseg.safetensors``) and
``RESSEG_CONFIG`` (a YAML configuration whose ``serve`` section sets limits, batching and
autoscaling; see docs/serving.md). API docs at ``http://127.0.0.1:8000/docs``.
"""

from resseg_ray.serving.app import app_from_environment

app = app_from_environment()
