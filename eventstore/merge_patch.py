"""RFC 7386 JSON merge patch: how ``update --params`` derives a version's params from its parent's.

Iterative, not recursive: a parent's params may be nested as deeply as JSON parsing allowed when they were
registered (hundreds of levels), and a recursive merge or ``copy.deepcopy`` of them ended in RecursionError.
"""

from __future__ import annotations

from typing import Any


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts and lists are new; scalars are immutable), with an explicit stack."""
    if not isinstance(value, dict | list):
        return value
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for key, item in items:
            if isinstance(item, dict | list):
                new: Any = {} if isinstance(item, dict) else []
                stack.append((item, new))
            else:
                new = item
            if isinstance(dst, dict):
                dst[key] = new
            else:
                dst.append(new)
    return root


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return _copy(patch)
    result = _copy(target) if isinstance(target, dict) else {}
    # Each step merges one patch object into one (already copied) result object.
    stack: list[tuple[dict[str, Any], dict[str, Any]]] = [(result, patch)]
    while stack:
        into, changes = stack.pop()
        for key, value in changes.items():
            if value is None:
                into.pop(key, None)
            elif isinstance(value, dict):
                child = into.get(key)
                if not isinstance(child, dict):
                    child = {}
                into[key] = child
                stack.append((child, value))
            else:
                into[key] = _copy(value)
    return result
