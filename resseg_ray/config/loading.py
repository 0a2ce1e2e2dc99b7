"""Configuration files: YAML with ``extends``, and ``section.field=value`` overrides."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from resseg_ray.config.base import from_dict
from resseg_ray.config.root import Config
from resseg_ray.errors import ConfigError


def load_config(path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML configuration (or the defaults when ``path`` is None) and apply overrides.

    A file may start from another with ``extends: other.yaml`` (relative to the file);
    its sections are merged field by field under the file's own. ``overrides`` are
    ``dotted.key=value`` strings; values are parsed as YAML scalars or lists
    (``data.bands=[3,2,1]``).
    """
    raw: dict[str, Any] = _read_yaml(Path(path), ()) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return from_dict(Config, raw)


def _read_yaml(p: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    try:
        text = p.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"configuration {p} is a folder; give a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration {p} is not YAML text (binary data); give a .yaml file") from None
    if "\0" in text:
        raise ConfigError(f"configuration {p} is not YAML text (it holds NUL bytes); give a .yaml file")
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        raise ConfigError(f"configuration {p} is not valid YAML{at}: {problem}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"configuration {p} must be a mapping of sections, got {type(loaded).__name__}")
    base = loaded.pop("extends", None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"configuration {p}: 'extends' must be a file name, got {base!r}")
    base_path = (p.parent / base).resolve()
    if base_path in chain or base_path == p.resolve():
        raise ConfigError(f"configuration {p}: 'extends: {base}' forms a cycle")
    merged = _read_yaml(base_path, (*chain, p.resolve()))
    _merge(merged, loaded)
    return merged


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``raw[a][b] = value`` for an override ``a.b=value`` (in place)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.field=value, e.g. data.stride=100")
    import yaml

    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value
