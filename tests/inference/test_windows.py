"""The window grid covers a scene and the blending weights stay positive."""

from __future__ import annotations

import pytest

from resseg_ray.inference.windows import blend_weights, window_starts


def test_windows_cover_and_weights_are_positive() -> None:
    assert window_starts(10, 64, 20) == [0]
    assert window_starts(64, 64, 20) == [0]
    assert window_starts(200, 64, 20) == [0, 44, 88, 132, 136]
    for mode in ("flat", "linear", "cosine"):
        w = blend_weights(64, 64, 20, mode)
        assert w.min() > 0 and w.max() == pytest.approx(1.0)
