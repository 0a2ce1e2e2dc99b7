"""JSON documents: those from users and clients parsed with bounds (one error type, never a
traceback), and the reports the commands write (:func:`dump_json`).

``json.loads`` of a document nested thousands of levels deep raises RecursionError, and code
walking a parsed document recursively could too; :func:`load_json` refuses such documents,
and anything that is not JSON, as an :class:`~resseg_ray.errors.InputDataError` naming ``what``.
"""

from __future__ import annotations

from typing import Any

from resseg_ray.errors import InputDataError

__all__ = ["MAX_NESTING", "dump_json", "load_json"]

MAX_NESTING = 64
"""Deepest nesting of arrays and objects accepted (GeoJSON MultiPolygons need 4)."""


def _too_deep(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests lists/dicts deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def load_json(text: str | bytes, what: str) -> Any:
    """Parse a JSON document; not JSON, or nested deeper than :data:`MAX_NESTING`, is an
    InputDataError that names ``what`` (e.g. ``the annotations``, a file name)."""
    import json

    deep = f"{what} nests arrays or objects more than {MAX_NESTING} levels deep; not read"
    try:
        doc = json.loads(text)
    except RecursionError:
        raise InputDataError(deep) from None
    except ValueError as exc:
        raise InputDataError(f"{what} is not valid JSON ({str(exc)[:120]})") from None
    if _too_deep(doc, MAX_NESTING):
        raise InputDataError(deep)
    return doc


def finite(value: Any) -> Any:
    """``value`` with every float that is not finite (no best epoch yet, a score of nothing)
    replaced by None, through dicts and lists; tuples become lists."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dump_json(doc: Any) -> str:
    """A report as JSON text: indented, values that are not finite as null (strict JSON, which
    ``json.loads`` of any language reads), one final newline."""
    import json

    return json.dumps(finite(doc), indent=2, allow_nan=False) + "\n"
