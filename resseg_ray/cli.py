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
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def user_error(exc: BaseException) -> ResSegError | None:
    """The :class:`ResSegError` behind ``exc``, also when it was raised in a Ray task or
    a Ray Data / dask-on-Ray worker (Ray wraps it; ``cause`` holds the original)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, ResSegError):
            return cause
        if isinstance(e, ResSegError) and not hasattr(e, "cause"):
            return e
        todo += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return None


def init_ray() -> None:
    """Connect to the Ray cluster of ``RAY_ADDRESS`` (set by ``ray job submit``) or a running
    local one; start a local instance when there is none."""
    import os

    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        try:
            ray.init(address="auto", log_to_driver=True)
            return
        except (ConnectionError, RuntimeError):
            pass
    ray.init(address=address or None, log_to_driver=True)
