"""Write a model bundle as a portable ONNX model: for QGIS's Deepness plugin, ONNX Runtime or
any tool that reads ONNX. Checked in ONNX Runtime against PyTorch before it is written.

``python jobs/export_onnx.py [options]`` is ``resseg export-onnx [options]``; the job is
:mod:`resseg_ray.commands.export_onnx` (``--help`` lists its options).
"""

from resseg_ray.commands import run_command

if __name__ == "__main__":
    run_command("export-onnx")
