"""Comparing two versions: what changed in params / structure / optimizer, metrics side by side, tags,
aliases, the artifact (down to the files of a folder) and, for two versions of one model, their lineage.

``diff_versions`` returns plain JSON-able data (the shape of ``mledger diff --json``); ``format_diff`` renders
it for people, one change per line: ``+`` added, ``-`` removed, ``~`` changed.

Key paths: nested keys are joined with ``.``, list items by their index (``layers.0.units``). A ``.`` or a
``\\`` inside a key is escaped with a backslash (``{"a.b": 1}`` → ``a\\.b``), so a path names exactly one
place. Lists are compared item by item at the same index (an inserted item shows as changes after it plus
one addition at the end). A subtree that exists on one side only is reported once, whole, at its path; a
value whose JSON type changes (a dict becoming a list, 1 becoming "1", 1 becoming 1.0) is a change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .records import VersionRecord

ParentOf = Callable[[str, int], "int | None"]
CONTENT = ("params", "structure", "optimizer")
FIELDS = ("parent", "status", "deleted", "description")
MAX_LINEAGE = 100_000  # a guard against a cycle in corrupted data


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: 1 and 1.0 and True are three different values."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def escape_key(key: str) -> str:
    return key.replace("\\", "\\\\").replace(".", "\\.")


def _join(prefix: str, key: str | int) -> str:
    part = str(key) if isinstance(key, int) else escape_key(key)
    return f"{prefix}.{part}" if prefix else part


def diff_values(a: Any, b: Any) -> dict[str, dict[str, Any]]:
    """``{"added": {path: new}, "removed": {path: old}, "changed": {path: {"old", "new"}}}`` between two JSON
    values (paths in document order of ``a`` then ``b``)."""
    out: dict[str, dict[str, Any]] = {"added": {}, "removed": {}, "changed": {}}

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            for k in x:
                if k in y:
                    walk(x[k], y[k], _join(path, k))
                else:
                    out["removed"][_join(path, k)] = x[k]
            for k in y:
                if k not in x:
                    out["added"][_join(path, k)] = y[k]
        elif isinstance(x, list) and isinstance(y, list):
            for i in range(min(len(x), len(y))):
                walk(x[i], y[i], _join(path, i))
            for i in range(len(y), len(x)):
                out["removed"][_join(path, i)] = x[i]
            for i in range(len(x), len(y)):
                out["added"][_join(path, i)] = y[i]
        elif not _same(x, y):
            out["changed"][path] = {"old": x, "new": y}

    walk(a, b, "")
    return out


def _flat_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Like ``diff_values`` but one level only, keys as they are (tags: keys may contain dots)."""
    return {
        "added": {k: b[k] for k in b if k not in a},
        "removed": {k: a[k] for k in a if k not in b},
        "changed": {k: {"old": a[k], "new": b[k]} for k in a if k in b and not _same(a[k], b[k])},
    }


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def diff_metrics(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every metric of either side: ``{"a": value|None, "b": value|None, "delta": b - a|None}`` (the delta is
    rounded to 12 decimal places so that 0.93 - 0.9 reads 0.03)."""
    out = {}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        delta = round(vb - va, 12) if _number(va) and _number(vb) else None
        out[key] = {"a": va, "b": vb, "delta": delta}
    return out


def _files(artifact: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in artifact.get("files") or () if isinstance(f, Mapping) and "path" in f}


def diff_artifacts(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Digests, kinds and sizes of both sides; ``same`` is None while either digest is unknown (pending).
    For a folder on either side, ``files`` lists the paths added / removed and those whose digest changed."""
    da, db = a.get("digest"), b.get("digest")
    out: dict[str, Any] = {
        "same": (da == db) if da and db else None,
        "a": {"digest": da, "kind": a.get("kind"), "size": a.get("size"), "format": a.get("format")},
        "b": {"digest": db, "kind": b.get("kind"), "size": b.get("size"), "format": b.get("format")},
        "files": None,
    }
    if "directory" in (a.get("kind"), b.get("kind")):
        fa, fb = _files(a), _files(b)
        out["files"] = {
            "added": sorted(p for p in fb if p not in fa),
            "removed": sorted(p for p in fa if p not in fb),
            "changed": [
                {"path": p, "a": {"digest": fa[p].get("digest"), "size": fa[p].get("size")},
                 "b": {"digest": fb[p].get("digest"), "size": fb[p].get("size")}}
                for p in sorted(fa) if p in fb and fa[p].get("digest") != fb[p].get("digest")
            ],
        }
    return out


def _ancestry(name: str, number: int, parent_of: ParentOf) -> list[int]:
    chain, seen = [number], {number}
    while len(chain) < MAX_LINEAGE:
        parent = parent_of(name, chain[-1])
        if parent is None or parent in seen:
            break
        chain.append(parent)
        seen.add(parent)
    return chain


def lineage(name: str, a: int, b: int, parent_of: ParentOf) -> dict[str, Any]:
    """The nearest common ancestor of versions ``a`` and ``b`` of ``name`` and the chain of versions from
    ``a`` up to it and down to ``b`` (``[3, 2, 1, 4]`` for 1→2→3 and 1→4). Both None when they share no
    ancestor (two separately registered roots)."""
    up_a = _ancestry(name, a, parent_of)
    up_b = _ancestry(name, b, parent_of)
    index_b = {n: i for i, n in enumerate(up_b)}
    for i, n in enumerate(up_a):
        if n in index_b:
            chain = up_a[: i + 1] + list(reversed(up_b[: index_b[n]]))
            return {"common_ancestor": n, "chain": chain}
    return {"common_ancestor": None, "chain": None}


def diff_versions(a: VersionRecord, b: VersionRecord, *, lineage: ParentOf | None = None) -> dict[str, Any]:
    """Everything that differs from ``a`` to ``b``, as JSON-able data. ``lineage``: ``parent_of(name, n)``,
    the parent version number of ``name@n`` (None for a root); used when both are versions of one model."""
    fields = {f: {"old": getattr(a, f), "new": getattr(b, f)} for f in FIELDS if not _same(getattr(a, f), getattr(b, f))}
    out: dict[str, Any] = {"a": a.ref, "b": b.ref, "fields": fields}
    for part in CONTENT:
        out[part] = diff_values(getattr(a, part), getattr(b, part))
    out["metrics"] = diff_metrics(a.metrics, b.metrics)
    out["tags"] = _flat_diff(a.tags, b.tags)
    out["aliases"] = {"a": list(a.aliases), "b": list(b.aliases)}
    out["artifact"] = diff_artifacts(a.artifact, b.artifact)
    out["lineage"] = _lineage_of(a, b, lineage)
    return out


def _lineage_of(a: VersionRecord, b: VersionRecord, parent_of: ParentOf | None) -> dict[str, Any] | None:
    if parent_of is None or a.name != b.name:
        return None
    return lineage(a.name, a.version, b.version, parent_of)


# -- for people ----------------------------------------------------------------------------------------------

def _show(value: Any, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def _rows(changes: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    rows = [("+", path, _show(v)) for path, v in changes.get("added", {}).items()]
    rows += [("-", path, _show(v)) for path, v in changes.get("removed", {}).items()]
    rows += [("~", path, f"{_show(c['old'])} → {_show(c['new'])}") for path, c in changes.get("changed", {}).items()]
    return rows


def _section(title: str, rows: list[tuple[str, str, str]]) -> list[str]:
    if not rows:
        return []
    width = max(len(path) for _, path, _ in rows)
    return [f"{title}:"] + [f"  {mark} {path.ljust(width)}  {text}".rstrip() for mark, path, text in rows]


def _num(x: Any) -> str:
    return "—" if x is None else _show(x, 20)


def format_diff(d: Mapping[str, Any]) -> str:
    """The diff for a terminal: a title, then one section per part that changed, columns aligned."""
    lines = [f"{d['a']} → {d['b']}"]
    lin = d.get("lineage")
    if lin:
        if lin["common_ancestor"] is None:
            lines.append("lineage: no common ancestor")
        else:
            lines.append(f"lineage: common ancestor @{lin['common_ancestor']}: "
                         + " → ".join(f"@{n}" for n in lin["chain"]))
    field_rows = [("~", f, f"{_show(c['old'])} → {_show(c['new'])}") for f, c in d.get("fields", {}).items()]
    lines += _section("fields", field_rows)
    for part in CONTENT:
        lines += _section(part, _rows(d.get(part, {})))
    metrics = d.get("metrics", {})
    if metrics:
        width = max(len(k) for k in metrics)
        cells = {k: (_num(m["a"]), _num(m["b"])) for k, m in metrics.items()}
        wa = max(len(a) for a, _ in cells.values())
        wb = max(len(b) for _, b in cells.values())
        lines.append("metrics:")
        for key, m in metrics.items():
            a, b = cells[key]
            if m["a"] is None:
                mark = "+"
            elif m["b"] is None:
                mark = "-"
            else:
                mark = "~" if not _same(m["a"], m["b"]) else " "
            delta = f"  ({m['delta']:+g})" if m["delta"] is not None and m["delta"] != 0 else ""
            lines.append(f"  {mark} {key.ljust(width)}  {a.rjust(wa)}  {b.rjust(wb)}{delta}".rstrip())
    lines += _section("tags", _rows(d.get("tags", {})))
    aliases = d.get("aliases", {})
    if aliases and aliases.get("a") != aliases.get("b"):
        lines.append(f"aliases: {', '.join(aliases['a']) or '—'} → {', '.join(aliases['b']) or '—'}")
    art = d.get("artifact")
    if art:
        if art["same"] is True:
            lines.append(f"artifact: same ({art['a']['digest']})")
        elif art["same"] is None:
            lines.append(f"artifact: unknown (digest {art['a']['digest'] or 'pending'} vs {art['b']['digest'] or 'pending'})")
        else:
            lines.append(f"artifact: {art['a']['digest']} → {art['b']['digest']}")
        files = art.get("files")
        if files:
            rows = [("+", p, "") for p in files["added"]] + [("-", p, "") for p in files["removed"]]
            rows += [("~", c["path"], f"{c['a']['size']} → {c['b']['size']} bytes") for c in files["changed"]]
            lines += ["  " + line for line in _section("files", rows)]
    return "\n".join(lines)
