"""The service's bounded caches: least recently used first out, reads refresh."""

from __future__ import annotations

import pytest

from resseg_ray.serving.lru import LRU


def test_the_least_recently_used_entry_goes_first_and_a_read_keeps_one() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert "b" not in cache and cache.get("b") is None
    assert cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2
    cache.put("a", 10)  # a write refreshes too
    cache.put("d", 4)
    assert "c" not in cache and cache.get("a") == 10 and cache.pop("a") == 10 and len(cache) == 1
    assert cache.pop("missing") is None


def test_a_cache_holds_at_most_its_size_whatever_is_asked() -> None:
    cache: LRU[tuple[str, float, int], bytes] = LRU(64)
    for i in range(10_000):  # a client varying a suggestion's fraction and region
        cache.put(("scene_0", i / 10_000, 256), b"{}")
    assert len(cache) == 64
    with pytest.raises(ValueError, match="at least 1"):
        LRU(0)
