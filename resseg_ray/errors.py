"""The project's one family of user-facing errors.

Every error a user can cause (a bad file, a wrong band count, an unknown
architecture) is raised as a :class:`ResSegError` subclass whose message names the
file or field at fault and what to do about it. Jobs print such errors without a
traceback and exit non-zero (see :func:`resseg_ray.cli.run_job`).
"""

from __future__ import annotations


class ResSegError(Exception):
    """Base class of every error a user can cause and fix."""


class ConfigError(ResSegError, ValueError):
    """A configuration field or argument has a value that cannot be used."""


class BundleError(ResSegError):
    """A model bundle is missing, damaged or does not match what was expected."""


class InputDataError(ResSegError):
    """An input file (scene, labels, weights) cannot be used as given."""
