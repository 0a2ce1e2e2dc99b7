"""The evaluation's typed report: ``resseg evaluate --report FILE.json`` writes each scene's
metrics and confusion counts, the mean and all pixels together, equal to hand-computed
confusions; a FILE of another suffix still gets the markdown table."""

from __future__ import annotations

import json
import math

import numpy as np

from tests.evaluation.test_scenes import _pair
from tests.helpers import run_here


def test_the_json_report_holds_what_the_table_says_and_the_counts(tmp_path, capsys) -> None:
    ma, la, ca = _pair(tmp_path, "a", 0)
    mb, lb, cb = _pair(tmp_path, "b", 1)
    report = tmp_path / "scores.json"
    proc = run_here(
        "evaluate.py", "--masks", ma, mb, "--labels", la, lb, "--report", str(report), capsys=capsys
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    assert doc["format"] == "resseg-evaluation-report/1" and doc["name"] == "masks"
    assert [s["name"] for s in doc["scenes"]] == ["a", "b"]
    for scene, expected in zip(doc["scenes"], (ca, cb), strict=True):
        assert np.array_equal(np.array(scene["confusion"]), expected.counts)
        assert scene["metrics"]["f1"] == expected.metrics()["f1"]
    assert math.isclose(doc["mean"]["f1"], (ca.metrics()["f1"] + cb.metrics()["f1"]) / 2)
    assert math.isclose(doc["pooled"]["f1"], (ca + cb).metrics()["f1"])
    assert f"wrote {report}" in proc.stdout

    table = tmp_path / "table.md"  # the markdown table, as before
    proc = run_here("evaluate.py", "--masks", ma, "--labels", la, "--report", str(table), capsys=capsys)
    assert proc.returncode == 0 and "| model | a | mean |" in table.read_text()


def test_a_report_that_would_replace_an_input_is_refused_before_any_work(tmp_path, capsys) -> None:
    ma, la, _ = _pair(tmp_path, "a", 0)
    before = open(la, "rb").read()
    proc = run_here("evaluate.py", "--masks", ma, "--labels", la, "--report", la, capsys=capsys)
    assert (
        proc.returncode == 2 and proc.stderr.startswith("error: --report ") and proc.stderr.count("\n") == 1
    )
    assert open(la, "rb").read() == before
