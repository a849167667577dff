"""Reading and writing the rows a page of events touches (``projections.projector.Fold``), in PostgreSQL:
a few ``= ANY(...)`` reads up front, then one ``executemany`` per table, all sent in one pipeline (so a
page costs a handful of round trips, whatever its length)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from functools import cache
from typing import Any

from projections.projector import (
    CHECKPOINT,
    MODEL_FIELDS,
    MODEL_MUTABLE,
    VERSION_FIELDS,
    VERSION_LOADED,
    VERSION_MUTABLE,
    Changes,
)

from .text import json_param, text_param

_LOAD_MODELS = (f"SELECT {', '.join(MODEL_FIELDS)} FROM models WHERE name = ANY(%s::text[])")  # noqa: S608
_LOAD_VERSIONS = (f"SELECT {', '.join(VERSION_LOADED)} FROM versions"  # noqa: S608
                  " WHERE (name, version) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))")
def _unnest(columns: list[tuple[str, str]]) -> str:
    """``unnest`` of one array parameter per column, as ``u(columns)``: a whole page of rows is one statement."""
    # %b: binary parameters. psycopg's text form of an array quotes every element through a regex, which cost
    # more than the whole fold (measured with cProfile on a rebuild).
    arrays = ", ".join(f"%b::{'text' if kind in ('jsonb', 'json') else kind}[]" for _, kind in columns)
    return f"unnest({arrays}) AS u({', '.join(name for name, _ in columns)})"


def _few_rows(columns: list[tuple[str, str]], count: int) -> str:
    """The same ``u(columns)`` for ``count`` rows, a scalar parameter per value: a command's inline fold writes one
    to a few rows per table, and an array parameter costs psycopg more to make than a scalar (a tag's fold had 32
    of them: ``array.dump`` and its helpers were the largest part of the client's time after the statements;
    an array of 2 values ~4.8 µs against ~0.3 µs a scalar, ``timeit`` of ``PostgresQuery.dump``)."""
    row = "(" + ", ".join(f"%s::{'text' if kind in ('jsonb', 'json') else kind}" for _, kind in columns) + ")"
    return f"(VALUES {', '.join([row] * count)}) AS u({', '.join(name for name, _ in columns)})"


# A table's rows up to this many go as scalar parameters (``_few_rows``), more as one array per column: a
# register's two events write two rows to each state table (14 arrays a register), a page of a catch-up
# hundreds. Past ~15 rows the arrays cost less; 4 keeps the statements' shapes (and psycopg's prepared
# statements) few and every run of them under ``_CACHED_PARAMS``.
FEW_ROWS = 4


def _value(column: str, kind: str) -> str:
    if kind == "jsonb":
        return f"u.{column}::jsonb"
    if column == "deleted":
        return "(u.deleted <> 0)"  # the fold keeps flags as 0/1 (as its states do); the column is boolean
    return f"u.{column}"


# the SQL for any number of rows (a parameter per column: an array of its values), the kind of each column,
# and the SQL for a few rows (a parameter per value), by their count
Statement = tuple[str, tuple[str, ...], Callable[[int], str]]


def _statement(make: Callable[[str], str], columns: list[tuple[str, str]]) -> Statement:
    """``make(source)`` with the rows' source as arrays, and as a few rows' values."""
    return make(_unnest(columns)), tuple(kind for _, kind in columns), lambda count: make(_few_rows(columns, count))


def _insert(table: str, columns: list[tuple[str, str]], conflict: str = "") -> Statement:
    names = ", ".join(c for c, _ in columns)
    values = ", ".join(_value(c, k) for c, k in columns)
    return _statement(lambda rows: f"INSERT INTO {table} ({names}) SELECT {values} FROM {rows}{conflict}",  # noqa: S608
                      columns)


def _update(table: str, columns: list[tuple[str, str]], key: tuple[str, ...]) -> Statement:
    sets = ", ".join(f"{c} = {_value(c, k)}" for c, k in columns if c not in key)
    match = " AND ".join(f"{table}.{c} = u.{c}" for c in key)
    return _statement(lambda rows: f"UPDATE {table} SET {sets} FROM {rows} WHERE {match}", columns)  # noqa: S608


def _delete(table: str, columns: list[tuple[str, str]], last: str = "=") -> Statement:
    *keys, final = [c for c, _ in columns]
    match = " AND ".join([*(f"t.{c} = u.{c}" for c in keys), f"t.{final} {last} u.{final}"])
    return _statement(lambda rows: f"DELETE FROM {table} t USING {rows} WHERE {match}", columns)  # noqa: S608


_TYPES = {"name": "text", "stream_version": "bigint", "description": "text", "tags": "jsonb", "deleted": "int",
          "latest": "bigint", "last_version": "bigint", "created_at": "text", "created_by": "text",
          "updated_at": "text", "version_count": "bigint", "deleted_at": "text", "version": "bigint",
          "parent": "bigint", "status": "text", "params": "jsonb", "structure": "jsonb", "optimizer": "jsonb",
          "metrics": "jsonb", "artifact": "jsonb", "position": "bigint", "requested_at": "bigint",
          "key": "text", "value": "text", "path": "text", "basename": "text", "digest": "text", "size": "bigint",
          "alias": "text", "seq": "bigint", "state": "json", "words": "text"}
# "json": JSON kept as text (the temporal states: ``projections.postgres.schema``), NULs replaced as for jsonb.


def _cols(*names: str, **kinds: str) -> list[tuple[str, str]]:
    return [(n, kinds.get(n, _TYPES[n])) for n in names]


_NAME_VERSION = ("name", "version")


def _words_upsert(table: str, key: tuple[str, ...]) -> Statement:
    columns = _cols(*key, "words")
    keys = ", ".join(key)
    values = ", ".join(f"u.{k}" for k in key)
    return _statement(lambda rows: f"INSERT INTO {table} ({keys}, words)"  # noqa: S608
                      f" SELECT {values}, array_to_tsvector(string_to_array(u.words, ' '))"
                      f" FROM {rows} ON CONFLICT ({keys}) DO UPDATE SET words = EXCLUDED.words", columns)


# (the Changes field, the table it writes, its one statement for the whole page), in the order they run
_STATEMENTS: tuple[tuple[str, str, Statement], ...] = (
    ("models_new", "models", _insert("models", _cols(*MODEL_FIELDS))),
    ("models_changed", "models", _update("models", _cols(*MODEL_MUTABLE, "name"), ("name",))),
    ("versions_new", "versions", _insert("versions", _cols(*VERSION_FIELDS))),
    ("versions_changed", "versions", _update("versions", _cols(*VERSION_MUTABLE, *_NAME_VERSION), _NAME_VERSION)),
    ("tags_removed", "tags", _delete("tags", _cols("name", "version", "key"))),
    ("tags_set", "tags", _insert("tags", _cols("name", "version", "key", "value"),
                         " ON CONFLICT (name, version, key) DO UPDATE SET value = EXCLUDED.value")),
    ("metrics_removed", "metrics", _delete("metrics", _cols("name", "version", "key"))),
    ("metrics_set", "metrics", _insert("metrics", _cols("name", "version", "key", "value", value="float8"),
                            " ON CONFLICT (name, version, key) DO UPDATE SET value = EXCLUDED.value")),
    ("files_cleared", "files", _delete("files", _cols(*_NAME_VERSION))),
    ("files_cleared", "blob_refs", _delete("blob_refs", _cols(*_NAME_VERSION))),
    ("files", "files", _insert("files", _cols("name", "version", "path", "basename"))),
    ("blob_refs", "blob_refs", _insert("blob_refs", _cols("digest", "name", "version", "size"))),
    ("aliases_removed", "aliases", _delete("aliases", _cols("name", "alias"))),
    ("aliases_set", "aliases", _insert("aliases", _cols("name", "alias", "version"),
                            " ON CONFLICT (name, alias) DO UPDATE SET version = EXCLUDED.version")),
    ("alias_history_cut", "alias_history", _delete("alias_history", _cols("name", "alias", "seq"), last=">")),
    ("alias_history", "alias_history", _insert("alias_history", _cols("name", "alias", "seq", "version"))),
    ("model_states", "model_states", _insert("model_states", _cols("name", "position", "state"))),
    ("version_states", "version_states", _insert("version_states", _cols("name", "version", "position", "state"))),
    ("artifact_states", "artifact_states", _insert("artifact_states", _cols("name", "version", "position", "artifact",
                                                                       artifact="json"))),
    # tokens never hold a space (``projections.search``): a page's token lists travel as space-joined text
    ("model_words", "model_search", _words_upsert("model_search", ("name",))),
    ("version_words", "version_search", _words_upsert("version_search", _NAME_VERSION)),
)

# The checkpoint's name is the fold's constant, written into the text rather than sent: one parameter fewer
# kept a register's fold (49 parameters for its tables) and the checkpoint one statement under psycopg's
# 50-parameter cache limit (``_CACHED_PARAMS``): 10 -> 9 statements a register (``scripts/profile_pg.py``).
# ``CHECKPOINT`` is the projector's constant ("catalog"), never input.
_CHECKPOINT = (f"INSERT INTO projection_checkpoint (name, position) VALUES ('{CHECKPOINT}', %s)"  # noqa: S608
               " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position")


def storable(values: list[Any], kind: str) -> list[Any]:
    """A column of text (or JSON text) as PostgreSQL can hold it: no NUL (``projections.postgres.text``).
    Checked on the whole column at once: a NUL is rare, the check runs on every page."""
    joined = "".join(filter(None, values))  # in C: a list comprehension here was ~7 % of a rebuild's write
    if kind in ("jsonb", "json"):
        return [json_param(v) if v else v for v in values] if "\\u0000" in joined else values
    return [text_param(v) if v else v for v in values] if "\x00" in joined else values


class FoldStore:
    """``projections.projector``'s access to the catalog tables on one psycopg connection (in its transaction)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def checkpoint(self) -> int:
        row = self.conn.execute("SELECT position FROM projection_checkpoint WHERE name = %s", (CHECKPOINT,)).fetchone()
        return row[0] if row else 0

    def load_models(self, names: Iterable[str]) -> list[list[Any]]:
        out = []
        for row in self.conn.execute(_LOAD_MODELS, (sorted(names),)):
            values = list(row)
            values[4] = int(values[4])  # deleted: 0/1 in the fold and its states, on every dialect
            out.append(values)
        return out

    def load_versions(self, keys: Iterable[tuple[str, int]]) -> list[list[Any]]:
        keys = sorted(keys)
        if not keys:
            return []
        out = []
        for row in self.conn.execute(_LOAD_VERSIONS, ([k[0] for k in keys], [k[1] for k in keys])):
            values = list(row)
            values[3] = int(values[3])
            out.append(values)
        return out

    def load_aliases(self, names: Iterable[str]) -> list[tuple[str, str, int]]:
        return self.conn.execute("SELECT name, alias, version FROM aliases WHERE name = ANY(%s::text[])",
                                 (sorted(names),)).fetchall()

    def load_alias_tops(self, stacks: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        keys = sorted(stacks)
        tops = dict.fromkeys(keys, 0)
        if keys:
            for name, alias, top in self.conn.execute(
                    "SELECT name, alias, max(seq) FROM alias_history WHERE (name, alias) IN"
                    " (SELECT * FROM unnest(%s::text[], %s::text[])) GROUP BY name, alias",
                    ([k[0] for k in keys], [k[1] for k in keys])):
                tops[(name, alias)] = top
        return tops

    def live_versions(self, name: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT version FROM versions WHERE name = %s AND NOT deleted",
                                                (name,))]

    def alias_seq_of(self, name: str, alias: str, version: int, below: int | None) -> int | None:
        row = self.conn.execute(
            "SELECT max(seq) FROM alias_history WHERE name = %s AND alias = %s AND version = %s AND seq <= %s",
            (name, alias, version, below if below is not None else 2**63 - 1)).fetchone()
        return row[0]

    def write(self, changes: Changes) -> None:
        """Every table's rows of the page (as arrays), in as few statements as the order allows: statements on
        different tables go out as one statement (``_grouped_shape``), so a command's inline fold is one statement
        where it was one per table (a tag: 7 -> 1)."""
        conn = self.conn
        # (index in ``_STATEMENTS``, the count of a few rows or 0 for arrays), in order
        shape: list[tuple[int, int]] = []
        params: list[list[Any]] = []
        copies: list[tuple[int, list[tuple]]] = []  # (index in ``_STATEMENTS``, rows), after the statements
        can_copy = not conn.pgconn.pipeline_status  # COPY cannot run in a pipeline (a command's batched one)
        for index, (name, _, _) in enumerate(_STATEMENTS):
            rows = getattr(changes, name)
            if not rows:
                continue
            if can_copy and len(rows) >= COPY_AT and index in _COPY:
                copies.append((index, rows))
                continue
            if name in _WORDS:
                rows = [(*key[:-1], " ".join(key[-1])) for key in rows]
            if len(rows) <= FEW_ROWS:
                # a command's inline fold: a row or a few per table, their values as scalar parameters
                converted = _CONVERTED[index]
                values = []
                for row in rows:
                    row = list(row)
                    for i, kind in converted:
                        row[i] = _storable_value(row[i], kind)
                    values += row
                shape.append((index, len(rows)))
                params.append(values)
            else:
                columns = [list(column) for column in zip(*rows, strict=True)]
                for i, kind in _CONVERTED[index]:
                    if kind == "float8":
                        columns[i] = [_storable_value(v, kind) for v in columns[i]]
                    else:
                        columns[i] = storable(columns[i], kind)
                shape.append((index, 0))
                params.append(columns)
        params.append([changes.position])
        # A command's inline fold runs in its batched transaction (``PostgresRecorder.write_batched``), already
        # a pipeline: its writes then ride it and go out with the COMMIT (a nested pipeline would cost a
        # round trip on entering and one on leaving).
        with nullcontext() if conn.pgconn.pipeline_status else conn.pipeline():
            for statement, first, last in _grouped_shape(tuple(shape)):
                conn.execute(statement, [p for part in params[first:last] for p in part])
        for index, rows in copies:
            _copy(conn, index, rows)


# A long page's plain inserts (a rebuild's, a catch-up's) go in by ``COPY ... FROM STDIN`` instead of an
# ``INSERT ... SELECT FROM unnest(arrays)``: psycopg built each array in Python (``ListBinaryDumper``: ~21 % of
# a 20,000-event rebuild's client samples, py-spy), where ``Copy.write_row`` formats a row in C, and the server
# reads the rows without the arrays and the casts. Only tables that no later statement of the page writes or
# reads by these rows' keys: ``models_new`` and ``versions_new`` are rows the page's UPDATEs do not name (a
# row is new or changed), ``files``, ``blob_refs`` and ``alias_history`` go in after their DELETEs (as
# before), the states are inserts only. So running them after the other statements, in the same transaction,
# leaves the same rows. (Text format: ``deleted`` 0/1 is boolean input, JSON text is jsonb input.)
COPY_AT = 1_000
_COPY_COLUMNS: dict[str, tuple[str, ...]] = {  # the columns of each one's statement in ``_STATEMENTS``, in order
    "models_new": MODEL_FIELDS, "versions_new": VERSION_FIELDS, "files": ("name", "version", "path", "basename"),
    "blob_refs": ("digest", "name", "version", "size"), "alias_history": ("name", "alias", "seq", "version"),
    "model_states": ("name", "position", "state"), "version_states": ("name", "version", "position", "state"),
    "artifact_states": ("name", "version", "position", "artifact")}
_COPY = {index: f"COPY {table} ({', '.join(_COPY_COLUMNS[name])}) FROM STDIN"  # noqa: S608 - names from constants
         for index, (name, table, _) in enumerate(_STATEMENTS) if name in _COPY_COLUMNS}
assert all(len(_COPY_COLUMNS[_STATEMENTS[i][0]]) == len(_STATEMENTS[i][2][1]) for i in _COPY)  # noqa: S101


def _copy(conn: Any, index: int, rows: list[tuple]) -> None:
    """``rows`` into the table of ``_STATEMENTS[index]`` by ``COPY``, as one text: psycopg's ``write_row``
    (a dumper per value) cost as much as the arrays it replaced (~1.3 µs a state row, process time); a column
    at a time, the text is C string work. Text and JSON made storable as for the statements (no NUL)."""
    kinds = _STATEMENTS[index][2][1]
    columns = [_copy_column(column, kind) for column, kind in zip(zip(*rows, strict=True), kinds, strict=True)]
    with conn.cursor().copy(_COPY[index]) as copy:
        copy.write("\n".join(map("\t".join, zip(*columns, strict=True))) + "\n")


def _copy_column(column: tuple[Any, ...], kind: str) -> list[str]:
    """One column's values as COPY's text format has them."""
    if kind not in ("text", "jsonb", "json"):  # whole numbers (bigint, int): their str is their text
        return [_NULL if v is None else str(v) for v in column] if None in column else list(map(str, column))
    values = storable(list(column), kind)
    nulls = None in values
    texts = ["" if v is None else v for v in values] if nulls else values
    # Escaped all at once: storable text holds no NUL, so NUL can part the values for one translate and a split.
    joined = "\x00".join(texts)
    if any(c in joined for c, _ in _ESCAPES):
        for c, escape in _ESCAPES:  # the backslash first; str.replace, not translate: a C scan per character
            joined = joined.replace(c, escape)
        escaped = joined.split("\x00")
        texts = escaped if len(escaped) == len(texts) else [_escaped(t) for t in texts]
    return [_NULL if v is None else t for v, t in zip(values, texts, strict=True)] if nulls else texts


# COPY's text format: a backslash, tab, newline or carriage return in a value is written escaped, NULL as \N
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_NULL = "\\N"


def _escaped(text: str) -> str:
    for c, escape in _ESCAPES:
        text = text.replace(c, escape)
    return text


_WORDS = ("model_words", "version_words")

# per statement of ``_STATEMENTS``: the columns whose values are converted before they are sent, with their kind
_CONVERTED: tuple[tuple[tuple[int, str], ...], ...] = tuple(
    tuple((i, kind) for i, kind in enumerate(kinds) if kind in ("text", "jsonb", "json", "float8"))
    for _, _, (_, kinds, _) in _STATEMENTS)


def _storable_value(value: Any, kind: str) -> Any:
    """One value as ``storable`` makes a column's."""
    if kind == "float8":
        # metrics mix ints and floats (acc=1, loss=0.5): psycopg cannot dump a mixed list
        return None if value is None else float(value)
    if not value:
        return value
    return json_param(value) if kind != "text" else text_param(value)


@cache
def _grouped_shape(shape: tuple[tuple[int, int], ...]) -> tuple[tuple[str, int, int], ...]:
    """The statements of a page of this shape ((statement, the count of a few rows or 0 for arrays) per part, the
    checkpoint last), each with the range of parts whose parameters it takes: a run of statements on distinct
    tables is one statement, each but the last a data-modifying ``WITH`` of the last (``WITH w0 AS (INSERT ...),
    w1 AS (UPDATE ...) INSERT ...``).

    The same writes as one statement each: the parts of one statement run on one snapshot in no set order, so
    only statements on different tables share one (a statement here reads and writes its own table only: no
    trigger, no foreign key among the catalog's tables); a second statement on a table already in the run (a
    page that clears a version's files and writes new ones, say) starts the next statement, which sees the
    first's rows, as the separate statements did. Placeholders are positional: the parameters follow the
    parts' order. Why: psycopg's own work per statement (~30-60 µs: convert, send, a flush, its result) was
    most of a command's client CPU (``scripts/profile_pg.py --cprofile``), and the fold's writes were 7 of a
    tag's 15 statements, 9 of a register's 24.

    A command's fold has a handful of shapes (a tag's, an alias move's, ...): its statements are built once,
    not at every command (building them was ~10 % of a tag's client CPU, profiled with a CPU-time
    cProfile)."""
    parts = []
    for index, rows in shape:
        _, table, (many, kinds, few) = _STATEMENTS[index]
        # a part's parameter count: one per column (an array of its values), or one per value of a few rows
        parts.append((table, few(rows) if rows else many, [None] * (len(kinds) * max(rows, 1))))
    parts.append(("projection_checkpoint", _CHECKPOINT, [None]))
    out, first = [], 0
    for run in _runs(parts):
        out.append((_joined(run)[0], first, first + len(run)))
        first += len(run)
    return tuple(out)


def _runs(parts: list[tuple[str, str, list[Any]]]) -> list[list[tuple[str, str, list[Any]]]]:
    """``parts`` ((table, statement, parameters)) cut into the runs ``_grouped_shape`` makes one statement of
    each: a run ends before a table it already writes, or before psycopg's cache limits."""
    runs: list[list[tuple[str, str, list[Any]]]] = [[]]
    for part in parts:
        run = runs[-1]
        if run and (any(table == part[0] for table, _, _ in run)
                    or sum(len(params) for _, _, params in run) + len(part[2]) > _CACHED_PARAMS
                    or sum(len(statement) + 12 for _, statement, _ in run) + len(part[1]) > _CACHED_LENGTH):
            runs.append(run := [])
        run.append(part)
    return [run for run in runs if run]


def _joined(run: list[tuple[str, str, list[Any]]]) -> tuple[str, list[Any]]:
    if len(run) == 1:
        return run[0][1], run[0][2]
    heads = ", ".join(f"w{i} AS ({statement})" for i, (_, statement, _) in enumerate(run[:-1]))
    return f"WITH {heads} {run[-1][1]}", [p for _, _, params in run for p in params]


# psycopg parses a query's placeholders once and caches the result only for a query of at most 4,096 characters
# and 50 parameters (``psycopg._queries``): a longer one was parsed again at every call (its regex split was
# ~100 µs of a register's client time, profiled, when a register's fold writes went as one statement of 60
# parameters). A run stops short of either limit.
_CACHED_PARAMS = 50
_CACHED_LENGTH = 4_000
