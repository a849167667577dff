"""Human output: aligned tables and one-line summaries. (``--json`` bypasses all of this.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from eventstore.events import StoredEvent
from eventstore.names import UNSAFE_CHARS_RE
from projections.records import ModelRecord, VersionRecord


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: Any) -> str:
    """Text safe to print on a terminal: controls (ESC, CR, newline, C1), bidi overrides and other invisible
    format characters are shown as ``\\x1b``/``\\u202e`` escapes. Whatever a description, a file name, an
    actor or a tag holds, it cannot hide a line (the pickle WARNING), move the cursor or forge a new line.
    Every human output goes through it; ``--json`` output does not (JSON escapes what it must)."""
    text = "" if value is None else str(value)
    return UNSAFE_CHARS_RE.sub(_escape, text) if UNSAFE_CHARS_RE.search(text) else text


def plain_data(value: Any) -> Any:
    """``plain`` for every string (and key) inside a JSON-like value, for formatters that print parts of it."""
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, dict):
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    return value


def plain_lines(text: str) -> str:
    """``plain`` for each line of an already composed block (its own newlines kept)."""
    return "\n".join(plain(line) for line in text.split("\n"))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    text_rows = [[("" if v is None else plain(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in text_rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return "\n".join(lines)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def short_digest(digest: str | None) -> str:
    if not digest:
        return "-"
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def kv(mapping: dict[str, Any], limit: int = 60) -> str:
    text = ", ".join(f"{plain(k)}={plain(v)}" for k, v in mapping.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact(value: Any, limit: int = 80) -> str:
    text = plain(json.dumps(value, sort_keys=True, ensure_ascii=False))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(ts: str) -> str:
    return ts[:19].replace("T", " ") if ts else ""


def version_line(v: VersionRecord) -> str:
    art = v.artifact
    bits = [v.ref, v.status]
    if v.deleted:
        bits.append("deleted")
    bits.append(short_digest(art.get("digest")))
    bits.append(human_size(art.get("size")))
    if art.get("format"):
        bits.append(str(art["format"]))
    if art.get("unsafe"):
        bits.append("UNSAFE pickle")
    return plain("  ".join(bits))


STRUCTURE_TENSOR_LINES = 200


def structure_detail(structure: dict[str, Any]) -> str:
    """A structure for reading: its scalars, then what a model declares (config, inputs/outputs, sums per
    dtype), then its tensors one per line (the first ``STRUCTURE_TENSOR_LINES``; ``--json`` has them all)."""
    if not structure:
        return "no structure (none given, and none read from the artifact's bytes)"
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for key, value in structure.items():
        if key == "tensors":
            continue
        if isinstance(value, (dict, list)):
            nested.append((key, value))
        else:
            lines.append(f"{plain(key):<18} {plain(value)}")
    for key, value in nested:
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            lines.append(f"{plain(key)}:")
            lines.extend(f"  {compact(x, 200)}" for x in value[:STRUCTURE_TENSOR_LINES])
        else:
            lines.append(f"{plain(key):<18} {compact(value, 400)}")
    tensors = structure.get("tensors")
    if isinstance(tensors, dict) and tensors:
        lines.append(f"tensors ({len(tensors)} listed):")
        width = min(60, max(len(str(n)) for n in tensors))
        for name, t in list(tensors.items())[:STRUCTURE_TENSOR_LINES]:
            t = t if isinstance(t, dict) else {}
            lines.append(f"  {plain(name):<{width}}  {plain(t.get('dtype', '?')):<9} {compact(t.get('shape'), 80)}")
        if len(tensors) > STRUCTURE_TENSOR_LINES:
            lines.append(f"  ... {len(tensors) - STRUCTURE_TENSOR_LINES} more (--json lists them)")
    return "\n".join(lines)


def version_detail(v: VersionRecord) -> str:
    art = v.artifact
    lines = [
        f"{v.ref}" + ("  (deleted)" if v.deleted else ""),
        f"  status       {v.status}",
        f"  parent       {v.name + '@' + str(v.parent) if v.parent else '-'}",
        f"  aliases      {', '.join(v.aliases) or '-'}",
        f"  tags         {kv(v.tags, 200) or '-'}",
        f"  metrics      {kv(v.metrics, 200) or '-'}",
        f"  params       {compact(v.params, 200)}",
        f"  structure    {compact(v.structure, 200)}",
        f"  optimizer    {compact(v.optimizer, 200)}",
        f"  description  {v.description or '-'}",
        f"  artifact     {art.get('source', '-')}",
        f"    digest     {art.get('digest') or '-'}",
        f"    size       {human_size(art.get('size'))}",
        f"    format     {art.get('format') or '-'}",
        f"    files      {', '.join(f.get('path', '') for f in art.get('files') or ()) or '-'}",
        f"  created      {when(v.created_at)} by {v.created_by}",
    ]
    if art.get("unsafe"):
        # What made it unsafe: the recorded imports are only those outside the allow-list; with none, the
        # reason is what could not be inspected (the detail).
        imports = ", ".join(art.get("imports") or ())
        why = (f"pickle imports code outside the allow-list ({imports})" if imports
               else str(art.get("detail") or "not inspected")[:300])
        lines.insert(12, f"    WARNING    {why}; load it only if you trust its author")
    if art.get("error"):
        lines.append(f"  error        {art['error']}")
    return "\n".join(plain(line) for line in lines)  # each line holds user text: escape it, line by line


def model_detail(m: ModelRecord, max_versions: int = 50) -> str:
    head = [
        f"{m.name}" + ("  (deleted)" if m.deleted else ""),
        f"  description  {m.description or '-'}",
        f"  tags         {kv(m.tags, 200) or '-'}",
        f"  aliases      {kv(m.aliases, 200) or '-'}",
        f"  latest       {m.latest if m.latest is not None else '-'}",
        f"  versions     {m.version_count}",
        "",
    ]
    versions = list(m.versions or ())
    shown = versions[-max_versions:]
    rows = [
        (v.version, v.parent or "-", v.status + (" deleted" if v.deleted else ""), ",".join(v.aliases) or "-",
         kv(v.tags, 40) or "-", kv(v.metrics, 40) or "-", short_digest(v.artifact.get("digest")),
         when(v.created_at), v.created_by)
        for v in shown
    ]
    body = table(["VERSION", "PARENT", "STATUS", "ALIASES", "TAGS", "METRICS", "DIGEST", "CREATED", "BY"], rows)
    if len(versions) > len(shown):
        body = f"(showing the last {len(shown)} of {len(versions)} versions; --json has all)\n" + body
    return "\n".join(plain(line) for line in head) + body


def models_table(models: Sequence[ModelRecord]) -> str:
    if not models:
        return "(no models)"
    rows = [
        (m.name + (" (deleted)" if m.deleted else ""), m.latest if m.latest is not None else "-", m.version_count,
         kv(m.aliases, 40) or "-", kv(m.tags, 40) or "-", when(m.updated_at))
        for m in models
    ]
    return table(["NAME", "LATEST", "VERSIONS", "ALIASES", "TAGS", "UPDATED"], rows)


def event_summary(e: StoredEvent) -> str:
    return event_summary_data(e.data, e.type)


def event_summary_data(d: dict[str, Any], t: str = "") -> str:
    target = d.get("name", "")
    if d.get("version") is not None:
        target += f"@{d['version']}"
    if t in ("VersionRegistered", "ParamsUpdated", "StructureUpdated", "OptimizerUpdated"):
        parent = f" from @{d['parent']}" if d.get("parent") else ""
        patch = f" {compact(d['patch'], 60)}" if d.get("patch") else ""
        return f"{target}{parent}{patch}"
    if t == "TokenGranted":  # never the hash: it has no business on a screen
        scope = f" under {d.get('prefix')}" if d.get("prefix") else ""
        return f"token {d.get('token')} {d.get('role')}{scope}" + (f" until {d['expires_at']}" if d.get("expires_at") else "")
    if t == "TokenRevoked":
        return f"token {d.get('token')}" + (f" ({d['reason']})" if d.get("reason") else "")
    if t == "Tagged":
        return f"{target} {kv(d.get('tags', {}))}"
    if t == "Described":
        return f"{target} {compact(d.get('description', ''), 60)}"
    if t == "Untagged":
        return f"{target} -{', -'.join(d.get('keys', []))}"
    if t == "MetricsRecorded":
        return f"{target} {kv(d.get('metrics', {}))}"
    if t == "AliasAssigned":
        prev = f" (was @{d['previous']})" if d.get("previous") else ""
        how = " rollback" if d.get("rollback") else ""
        return f"{d.get('name')}@{d.get('alias')} -> {d.get('version')}{prev}{how}"
    if t == "AliasRemoved":
        return f"{d.get('name')}@{d.get('alias')} (was @{d.get('version')})"
    if t == "ArtifactStored":
        return f"{target} {short_digest(d.get('digest'))} {human_size(d.get('size'))} {d.get('format') or ''}".rstrip()
    if t in ("ArtifactFailed",):
        return f"{target} {d.get('reason', '')}"
    if t in ("VersionDeleted", "ModelDeleted") and d.get("reason"):
        return f"{target} ({d['reason']})"
    return target


def events_table(events: Sequence[StoredEvent]) -> str:
    if not events:
        return "(no events)"
    rows = [(f"#{e.position}", when(e.recorded_at), e.meta.get("actor", ""), e.type, event_summary(e))
            for e in events]
    return table(["POS", "RECORDED", "ACTOR", "TYPE", "WHAT"], rows)


def event_line(e: StoredEvent) -> str:
    return plain(f"#{e.position}  {when(e.recorded_at)}  {e.meta.get('actor', '')}  {e.type}  {event_summary(e)}")


def _change_text(changes: dict[str, Any]) -> str:
    parts = []
    for key, value in changes.items():
        if key in ("params", "structure", "optimizer") and isinstance(value, dict):
            for kind, sign in (("added", "+"), ("removed", "-")):
                for path, v in (value.get(kind) or {}).items():
                    parts.append(f"{sign}{key}.{path}={compact(v, 30)}")
            for path, ch in (value.get("changed") or {}).items():
                parts.append(f"{key}.{path}: {compact(ch.get('old'), 20)} -> {compact(ch.get('new'), 20)}")
        elif key == "metrics" and isinstance(value, dict):
            parts += [f"{m}: {v.get('a')} -> {v.get('b')}" for m, v in value.items()
                      if isinstance(v, dict) and v.get("a") != v.get("b")]
        elif key == "tags" and isinstance(value, dict):
            for kind, sign in (("added", "+"), ("removed", "-")):
                parts += [f"{sign}tag {k}={v}" for k, v in (value.get(kind) or {}).items()]
            parts += [f"tag {k}: {ch.get('old')} -> {ch.get('new')}" for k, ch in (value.get("changed") or {}).items()]
        elif key == "aliases" and isinstance(value, dict):
            parts.append(f"aliases: {','.join(value.get('a') or []) or '-'} -> {','.join(value.get('b') or []) or '-'}")
        elif isinstance(value, dict) and "old" in value and "new" in value:
            parts.append(f"{key}: {compact(value['old'], 30)} -> {compact(value['new'], 30)}")
        elif key == "fields" and isinstance(value, dict):
            parts += [f"{f}: {compact(ch.get('old'), 20)} -> {compact(ch.get('new'), 20)}" for f, ch in value.items()]
    return "; ".join(parts)


def history_table(entries: Sequence[dict[str, Any]]) -> str:
    """Events with what each changed (before -> after)."""
    if not entries:
        return "(no events)"
    rows = []
    for entry in entries:
        e = entry["event"]
        rows.append((f"#{e['position']}", when(e["recorded_at"]), e["meta"].get("actor", ""), e["type"],
                     event_summary_data(e["data"], e["type"]), _change_text(entry["changes"])))
    return table(["POS", "RECORDED", "ACTOR", "TYPE", "WHAT", "CHANGED"], rows)
