"""Shared plumbing of the jobs in ``jobs/``: user errors become one line and exit 2."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from resseg_ray.errors import ResSegError


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run_job(main: Callable[[], object]) -> None:
    """Run a job's ``main``; a :class:`ResSegError` prints ``error: ...`` and exits 2.

    Warnings print as one ``warning: ...`` line each.
    """
    warnings.formatwarning = _format_warning
    try:
        main()
    except ResSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
