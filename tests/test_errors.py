"""One conversion from an exception to what the user is told: user errors found behind Ray's
wrappers, OS errors with their file, anything else marked internal."""

from __future__ import annotations

import pytest

from resseg_ray.errors import BundleError, InputDataError, failure_message, user_error


def test_user_errors_raised_in_ray_tasks_are_unwrapped(ray_session) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def fails() -> None:
        raise InputDataError("scene x.tif is bad")

    with pytest.raises(Exception) as info:
        ray.get(fails.remote())
    err = user_error(info.value)
    assert type(err) is InputDataError and str(err) == "scene x.tif is bad"
    assert user_error(RuntimeError("other")) is None


def test_failure_messages_say_what_and_where() -> None:
    assert failure_message(BundleError("model.x is damaged")) == "model.x is damaged"
    try:
        open("/nonexistent/folder/scene.tif")
    except OSError as exc:
        msg = failure_message(exc)
    assert msg.startswith("/nonexistent/folder/scene.tif: No such file or directory")
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = InputDataError("scene y.tif has 3 bands")
    assert failure_message(wrapped) == "scene y.tif has 3 bands"
    assert failure_message(KeyError("band")).startswith("internal error (KeyError:")
