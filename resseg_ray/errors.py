"""The project's one family of user-facing errors.

Every error a user can cause (a bad file, a wrong band count, an unknown
architecture) is raised as a :class:`ResSegError` subclass whose message names the
file or field at fault and what to do about it. Jobs print such errors without a
traceback and exit non-zero (see :func:`resseg_ray.cli.run_job`).
"""

from __future__ import annotations

import re
import sys


class ResSegError(Exception):
    """Base class of every error a user can cause and fix."""


class ConfigError(ResSegError, ValueError):
    """A configuration field or argument has a value that cannot be used."""


class BundleError(ResSegError):
    """A model bundle is missing, damaged or does not match what was expected."""


class InputDataError(ResSegError):
    """An input file (scene, labels, weights) cannot be used as given."""


_TRACEBACK_LINE = re.compile(r"resseg_ray\.errors\.(\w+): (.+)")


def user_error(exc: BaseException) -> ResSegError | None:
    """The :class:`ResSegError` behind ``exc``, also when it was raised in a Ray task, a
    Ray Data / dask-on-Ray worker or a Ray Train worker (Ray wraps it; ``cause``,
    ``worker_failures`` or ``controller_failure`` hold the original)."""
    seen: set[int] = set()
    seen_errors: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        seen_errors.append(e)
        cause = getattr(e, "cause", None)
        if isinstance(cause, ResSegError):
            return cause
        if isinstance(e, ResSegError) and not hasattr(e, "cause"):
            return e
        todo += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
        # Ray Train: WorkerGroupError.worker_failures (rank -> exception), ControllerError
        todo += list(getattr(e, "worker_failures", {}).values())
        todo.append(getattr(e, "controller_failure", None))
    # Some wrappers (Ray Data's UserCodeException inside a Ray Train worker) keep only the
    # original's traceback text: rebuild the error from its "resseg_ray.errors.X: msg" line.
    for e in seen_errors:
        match = _TRACEBACK_LINE.search(str(e))
        if match:
            cls = getattr(sys.modules[__name__], match.group(1), None)
            if isinstance(cls, type) and issubclass(cls, ResSegError):
                return cls(match.group(2).strip())
    return None


def failure_message(exc: BaseException) -> str:
    """The one line a user is shown for an exception that ended a unit of work (a scene, a
    part of one): the message of the :class:`ResSegError` behind it (see :func:`user_error`);
    for an ``OSError``, the file and the system's reason; otherwise the exception's type and
    text, marked as an internal error."""
    err = user_error(exc)
    if err is not None:
        return str(err)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            where = f"{seen.filename}: " if getattr(seen, "filename", None) else ""
            return f"{where}{seen.strerror or seen}; check the path, the free space and the permissions"
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else seen.__cause__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"internal error ({type(exc).__name__}: {first}); please report it with the job's log"
