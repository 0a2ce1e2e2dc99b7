"""Output names of scenes: one distinct, stable stem per scene of a run, however they are laid out."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from resseg_ray.geo.storage import normalize_uri, scene_stem

__all__ = ["unique_stems"]


def _safe_name(text: str) -> str:
    """A file-name-safe form of an id: characters other than letters, digits, ``.``, ``_`` and
    ``-`` become ``_``; at most 120 characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._")[:120] or "scene"


def unique_stems(
    uris: Sequence[str], ids: Mapping[str, tuple[str | None, str]] | None = None
) -> dict[str, str]:
    """One distinct output stem per scene (keyed by normalised URI), however the scenes are laid out.

    Each scene is named by its file name (:func:`scene_stem`) where no other scene of the run
    has it. Scenes whose file names coincide (the open-data catalogs cut one acquisition into
    ``<quadkey>/<date>/<id>-visual.tif`` folders) are named, when they come from STAC items
    (``ids``: URI -> (collection id, item id)), by item id, then by collection and item id
    where item ids repeat; other files by the parent folders that tell them apart
    (``<id>-visual_<quadkey>``); as a last resort by a hash of their URI."""
    ids = {normalize_uri(k): v for k, v in (ids or {}).items()}
    keys = [normalize_uri(u) for u in dict.fromkeys(uris)]
    names = {k: scene_stem(k) for k in keys}

    def clashes() -> list[list[str]]:
        groups: dict[str, list[str]] = {}
        for k in keys:
            groups.setdefault(names[k], []).append(k)
        return [g for g in groups.values() if len(g) > 1]

    for rename in (
        lambda k: _safe_name(ids[k][1]) if k in ids else None,
        lambda k: _safe_name(f"{ids[k][0]}_{ids[k][1]}") if k in ids and ids[k][0] else None,
    ):
        for group in clashes():
            for k in group:
                names[k] = rename(k) or names[k]
    for group in clashes():
        suffix = _telling_folders(group)
        for k in group:
            names[k] = f"{names[k]}_{suffix[k]}"
    for group in clashes():  # the folders did not tell them apart
        for k in group:
            names[k] = f"{names[k]}_{hashlib.sha256(k.encode()).hexdigest()[:8]}"
    return names


def _telling_folders(group: list[str]) -> dict[str, str]:
    """For URIs of one name: the fewest nearest parent folders that tell them apart, without
    the folders they all share (``a/q1/d/x.tif``, ``a/q2/d/x.tif`` -> ``q1``, ``q2``)."""
    parents = {k: k.rstrip("/").split("/")[:-1] for k in group}
    depth = max(len(p) for p in parents.values())
    for n in range(1, depth + 1):
        tails = {k: p[-n:] for k, p in parents.items()}
        if len({tuple(t) for t in tails.values()}) == len(group):
            shared = {i for i in range(n) if len({tuple(t[i : i + 1]) for t in tails.values()}) == 1}
            return {
                k: _safe_name("_".join(x for i, x in enumerate(t) if i not in shared))
                for k, t in tails.items()
            }
    return {k: hashlib.sha256(k.encode()).hexdigest()[:8] for k in group}
