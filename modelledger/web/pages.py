"""What each page shows, read through the SDK (``Registry``) and returned as plain data for its template.

No HTML here and no HTTP: each function takes the registry, the moment (now or a past position) and the
page's inputs, and raises the project's errors (``ValidationError``, ``NotFoundError``...) for bad input;
the routes turn those into pages with a status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from eventstore.errors import ModelLedgerError, ValidationError
from eventstore.events import StoredEvent
from eventstore.names import METRIC_KEY_RE, validate_name
from projections.diff import escape_key
from projections.records import ModelRecord, VersionRecord

from ..inputs import pairs
from ..output import event_summary_data
from ..registry import Registry
from .lineage import svg
from .timecontrol import Moment, href, version_path

MAX_ROWS = 500  # versions on a model page, flattened keys on a version page
CATALOG_PAGE = 100  # catalog rows a page (rendering is what costs: ~0.7 ms a row)
HISTORY_PAGE = 50
LOG_PAGE = 50
MAX_TEXT = 200  # a search word, file name or alias typed into a form


def download_path(v: VersionRecord, when: Moment | None = None) -> str:
    """Where the JSON API serves a version's artifact: ``GET /api/v1/artifact?ref=NAME@N`` (a file's bytes, or a
    folder's file list). The API is built beside this UI; this is the one place to change if it moves."""
    return "/api/v1/artifact?" + urlencode({"ref": v.ref, **(when.query() if when else {})})


def _text(value: str | None, what: str) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if len(value) > MAX_TEXT or "\x00" in value:
        raise ValidationError(f"{what}: at most {MAX_TEXT} characters, no NUL")
    return value


def _metric(value: str | None) -> str | None:
    value = (value or "").strip()
    if value and not METRIC_KEY_RE.fullmatch(value):
        raise ValidationError(f"sort by {value[:40]!r}: a metric name is 1-64 of A-Z a-z 0-9 _ . : -")
    return value or None


# -- the catalog ----------------------------------------------------------------------------------------------

def _latest(cat: Any, m: ModelRecord) -> VersionRecord | None:
    """The model's latest live version (None: it has none, or the model is deleted)."""
    if m.latest is None or m.deleted:
        return None
    try:
        return cat.get(f"{m.name}@{m.latest}")
    except ModelLedgerError:
        return None


def catalog(reg: Registry, when: Moment, *, q: str | None = None, tags: Sequence[str] = (),
            file: str | None = None, alias: str | None = None, sort: str | None = None,
            order: str = "desc", deleted: bool = False, start: int = 0) -> dict[str, Any]:
    """The models matching every filter; with ``sort``, ordered by each model's best value of that metric
    among its matching live versions (models without it last)."""
    if order not in ("asc", "desc"):
        raise ValidationError("order is asc or desc")
    if start < 0:
        raise ValidationError("start is 0 or more")
    q, file, alias, sort = _text(q, "search"), _text(file, "file"), _text(alias, "alias"), _metric(sort)
    wanted = pairs([t.strip() for t in tags if t.strip()], "tag")
    cat = reg.catalog(when.as_of)
    models = cat.list(search=q, tags=wanted, file=file, alias=alias, include_deleted=deleted)
    best: dict[str, VersionRecord] = {}
    if sort:
        # Ordering by a metric needs every matching version's metrics: one search, then the best per model.
        sign = 1 if order == "desc" else -1
        for v in cat.search(keyword=q, tags=wanted, file=file, alias=alias):
            if sort in v.metrics and (v.name not in best or (sign * v.metrics[sort], v.version)
                                      > (sign * best[v.name].metrics[sort], best[v.name].version)):
                best[v.name] = v
        scored = sorted((m for m in models if m.name in best), key=lambda m: best[m.name].metrics[sort],
                        reverse=(order == "desc"))
        models = scored + [m for m in models if m.name not in best]
    rows = []
    for m in models[start:start + CATALOG_PAGE]:
        # Only the rows shown read their latest version (a search of every version cost ~5x the page).
        latest = _latest(cat, m)
        # The model's own tags and its latest live version's (what a tag search matches on).
        shown_tags = {**m.tags, **(latest.tags if latest else {})}
        found = best.get(m.name)
        rows.append({"model": m, "latest": latest, "best": found, "tags": shown_tags,
                     "value": found.metrics[sort] if found is not None and sort else None})
    metric_names = sorted({k for r in rows if r["latest"] for k in r["latest"].metrics} | ({sort} if sort else set()))
    return {
        "rows": rows, "total": len(models), "metric_names": metric_names,
        "start": start, "page_size": CATALOG_PAGE,
        "form": {"q": q or "", "tags": list(tags) or [""], "file": file or "", "alias": alias or "",
                 "sort": sort or "", "order": order, "deleted": deleted},
        "filtered": bool(q or wanted or file or alias),
    }


# -- a model --------------------------------------------------------------------------------------------------

def alias_history(events: Iterable[StoredEvent]) -> dict[str, list[dict[str, Any]]]:
    """Per alias, every move in log order: where it pointed, from where, who moved it and how."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e.type not in ("AliasAssigned", "AliasRemoved"):
            continue
        d = e.data
        how = ("rollback" if d.get("rollback") else "restore" if e.meta.get("restore") or d.get("restore")
               else "removed: version deleted" if d.get("cause") == "deleted" else "")
        out.setdefault(str(d.get("alias")), []).append({
            "position": e.position, "recorded_at": e.recorded_at, "actor": e.meta.get("actor", ""),
            "removed": e.type == "AliasRemoved", "version": d.get("version"), "previous": d.get("previous"),
            "how": how,
        })
    return dict(sorted(out.items()))


def model(reg: Registry, when: Moment, name: str) -> dict[str, Any]:
    validate_name(name)
    m: ModelRecord = reg.catalog(when.as_of).model(name)
    versions = list(m.versions or ())
    shown = versions[-MAX_ROWS:]
    events = reg.history(name, as_of=when.as_of)
    graph = svg(shown, lambda v: href(version_path(v.name, v.version), when),
                title=f"Lineage of {name}: each version linked to its parent")
    return {"model": m, "versions": list(reversed(shown)), "hidden": len(versions) - len(shown),
            "aliases": alias_history(events), "lineage": graph, "events": len(events)}


# -- a version ------------------------------------------------------------------------------------------------

def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested JSON as ``(key path, leaf)`` rows, paths as ``mledger diff`` writes them (``a.b.0``)."""
    rows: list[tuple[str, Any]] = []

    def walk(x: Any, path: str) -> None:
        if len(rows) > MAX_ROWS:
            return
        if isinstance(x, Mapping) and x:
            for k, v in x.items():
                walk(v, f"{path}.{escape_key(str(k))}" if path else escape_key(str(k)))
        elif isinstance(x, list) and x and any(isinstance(i, (dict, list)) for i in x):
            for i, v in enumerate(x):
                walk(v, f"{path}.{i}" if path else str(i))
        else:
            rows.append((path or "(value)", x))

    if value in ({}, [], None):  # nothing to list (not one row saying "{}")
        return rows
    walk(value, prefix)
    return rows


def leaf(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def unsafe_reason(artifact: Mapping[str, Any]) -> str | None:
    """Why the artifact is unsafe to load (the words the CLI's ``show`` uses), or None."""
    if not artifact.get("unsafe"):
        return None
    imports = ", ".join(str(i) for i in artifact.get("imports") or ())
    if imports:
        return f"The pickle imports code outside the allow-list ({imports})"
    detail = str(artifact.get("detail") or "it could not be inspected")[:300]
    return detail[:1].upper() + detail[1:]


def version(reg: Registry, when: Moment, name: str, number: int) -> dict[str, Any]:
    validate_name(name)
    v = reg.catalog(when.as_of).get(f"{name}@{number}")
    art = v.artifact
    files = [f for f in art.get("files") or () if isinstance(f, Mapping)]
    return {
        "v": v, "params": flatten(v.params), "optimizer": flatten(v.optimizer), "structure": flatten(v.structure),
        "too_many": any(len(flatten(x)) > MAX_ROWS for x in (v.params, v.optimizer, v.structure)),
        "files": files, "file_count": art.get("file_count") or len(files), "unsafe": unsafe_reason(art),
        "download": download_path(v, when) if v.status == "ready" else None,
    }


# -- diff -----------------------------------------------------------------------------------------------------

def diff(reg: Registry, when: Moment, a: str | None, b: str | None) -> dict[str, Any]:
    a, b = _text(a, "first version"), _text(b, "second version")
    if not a or not b:
        return {"a": a or "", "b": b or "", "d": None}
    d = reg.diff(a, b, a_as_of=when.as_of, b_as_of=when.as_of)
    content = {part: d[part] for part in ("params", "structure", "optimizer")}
    same = not (d["fields"] or any(any(x.values()) for x in content.values()) or d["tags"] and any(d["tags"].values())
                or any(m.get("a") != m.get("b") for m in d["metrics"].values()) or d["artifact"].get("same") is False
                or d["aliases"]["a"] != d["aliases"]["b"])
    return {"a": a, "b": b, "d": d, "content": content, "same": same}


# -- history --------------------------------------------------------------------------------------------------

def change_rows(changes: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """What an event changed as ``(what, before, after)`` rows (None: absent on that side)."""
    rows: list[tuple[str, Any, Any]] = []
    for key, value in changes.items():
        if key in ("params", "structure", "optimizer") and isinstance(value, Mapping):
            rows += [(f"{key}.{p}", None, v) for p, v in (value.get("added") or {}).items()]
            rows += [(f"{key}.{p}", v, None) for p, v in (value.get("removed") or {}).items()]
            rows += [(f"{key}.{p}", ch.get("old"), ch.get("new")) for p, ch in (value.get("changed") or {}).items()]
        elif key == "metrics" and isinstance(value, Mapping):
            rows += [(f"metric {m}", v.get("a"), v.get("b")) for m, v in value.items()
                     if isinstance(v, Mapping) and v.get("a") != v.get("b")]
        elif key == "tags" and isinstance(value, Mapping) and not {"old", "new"} <= value.keys():
            rows += [(f"tag {k}", None, v) for k, v in (value.get("added") or {}).items()]
            rows += [(f"tag {k}", v, None) for k, v in (value.get("removed") or {}).items()]
            rows += [(f"tag {k}", ch.get("old"), ch.get("new")) for k, ch in (value.get("changed") or {}).items()]
        elif key == "aliases" and isinstance(value, Mapping) and "a" in value:
            rows.append(("aliases", ", ".join(value.get("a") or []) or None, ", ".join(value.get("b") or []) or None))
        elif key == "fields" and isinstance(value, Mapping):
            rows += [(f, ch.get("old"), ch.get("new")) for f, ch in value.items() if isinstance(ch, Mapping)]
        elif key == "artifact" and isinstance(value, Mapping):
            a, b = value.get("a") or {}, value.get("b") or {}
            if a.get("digest") != b.get("digest"):
                rows.append(("artifact", a.get("digest"), b.get("digest")))
        elif isinstance(value, Mapping) and "old" in value and "new" in value:
            rows.append((key, value["old"], value["new"]))
    return rows


def history(reg: Registry, when: Moment, ref: str, *, before: int | None = None) -> dict[str, Any]:
    """A model's or a version's events, newest first, a page at a time (``before``: older than that position)."""
    events = reg.history(ref, as_of=when.as_of)
    if before is not None:
        events = [e for e in events if e.position < before]
    page = list(reversed(events[-HISTORY_PAGE:]))
    entries = reg.changes(page)
    items = [{"e": e, "summary": event_summary_data(e.data, e.type), "rows": change_rows(x["changes"])}
             for e, x in zip(page, entries, strict=True)]
    older = page[-1].position if len(events) > HISTORY_PAGE and page else None
    return {"ref": ref, "items": items, "older": older}


def log(reg: Registry, when: Moment, *, before: int | None = None) -> dict[str, Any]:
    """The whole registry's recent events, newest first (who did what when, across models)."""
    end = when.shown if before is None else min(before - 1, when.shown)
    start = max(0, end - LOG_PAGE)
    events = list(reg.log(since=start, limit=end - start)) if end > 0 else []
    items = [{"e": e, "summary": event_summary_data(e.data, e.type)} for e in reversed(events)]
    return {"items": items, "older": start + 1 if start > 0 else None}


# -- audit ----------------------------------------------------------------------------------------------------

def audit(reg: Registry) -> dict[str, Any]:
    report = reg.audit()
    return {"report": report.to_json()}
