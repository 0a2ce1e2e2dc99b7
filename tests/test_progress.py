"""What a long job prints when its output is not a terminal (logs, CI, ``ray job submit``):
one line per step with the count, the step's text, its time and an ETA, and a line per tenth
of a scene's rows while its windows are segmented."""

from __future__ import annotations

import io

from resseg_ray.progress import Progress, tenths


def test_plain_lines_count_steps_and_estimate_the_rest() -> None:
    out = io.StringIO()
    with Progress("epoch", 3, stream=out, start=1) as bar:
        bar.step("loss 0.41")
        bar.step("loss 0.30")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("epoch 2/3: loss 0.41, ") and "ETA " in lines[0]
    assert lines[1].startswith("epoch 3/3: loss 0.30, ") and "ETA" not in lines[1]  # the last step


def test_unknown_totals_have_no_eta() -> None:
    out = io.StringIO()
    Progress("scene", None, stream=out).step("D12.tif")
    assert out.getvalue().startswith("scene 1: D12.tif, ") and "ETA" not in out.getvalue()


def test_tenths_print_a_line_per_tenth_of_the_scene_and_none_at_the_end() -> None:
    out = io.StringIO()
    report = tenths("D12.tif", stream=out)
    for done in (0.02, 0.05, 0.11, 0.15, 0.24, 0.55, 0.97, 1.0):
        report(done)
    assert out.getvalue().splitlines() == [
        "  D12.tif: 11 %",
        "  D12.tif: 24 %",
        "  D12.tif: 55 %",
        "  D12.tif: 97 %",
    ]


def test_library_announcements_are_dropped_and_other_lines_kept(capsys, monkeypatch) -> None:
    import sys

    from resseg_ray.progress import VERBOSE_ENV, without_lines

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with without_lines("Successfully registered model"):
        print("Successfully registered model 'x'.", file=sys.stderr)
        print("warning: something the user must see", file=sys.stderr)
    assert capsys.readouterr().err == "warning: something the user must see\n"
    monkeypatch.setenv(VERBOSE_ENV, "1")  # --verbose shows everything
    with without_lines("Successfully registered model"):
        print("Successfully registered model 'x'.", file=sys.stderr)
    assert capsys.readouterr().err == "Successfully registered model 'x'.\n"


def test_only_rays_notice_that_token_auth_is_on_is_dropped(monkeypatch) -> None:
    import logging

    from resseg_ray.progress import VERBOSE_ENV, quiet_libraries

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    quiet_libraries()
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    log.addHandler(handler)
    try:
        log.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=...")
        log.warning("Token authentication is disabled for this Ray cluster. Anyone with ...")
    finally:
        log.removeHandler(handler)
    assert seen == ["Token authentication is disabled for this Ray cluster. Anyone with ..."]
