"""The SQL of the PostgreSQL log (``eventstore.postgres``): schema, guards and statements, all fixed text.

The log's columns and meaning are SQLite's (``eventstore.sqlite``): ``data`` and ``meta`` are ``text``
holding the canonical JSON the hash covers, byte for byte (``jsonb`` would reorder keys and reformat
numbers, ``json`` would parse every row on insert for nothing); ``recorded_at`` is the fixed-width UTC text
whose byte order is time order (``COLLATE "C"`` so that the index compares bytes, as Python does).
"""

from __future__ import annotations

from functools import cache

# Bumped when the DDL below changes; an open runs the DDL only when registry_meta says otherwise: all of it on an
# empty database, only ``UPGRADES[stored]`` on an older registry (never the guards again: see ``_prepare``).
SCHEMA_VERSION = "3"

# Serialises concurrent first opens of an empty database (CREATE TABLE IF NOT EXISTS is not safe against a
# concurrent CREATE of the same table: both can pass the check and one fails on pg_type's unique index).
SCHEMA_LOCK_KEY = 0x6D6C6564676572  # "mledger"

CHANNEL = "mledger_log"  # LISTEN/NOTIFY channel: a wake-up only, the payload is the new head

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position       bigint  PRIMARY KEY,
    stream         text    NOT NULL,
    version        bigint  NOT NULL,
    type           text    NOT NULL,
    schema_version integer NOT NULL,
    data           text    NOT NULL,
    meta           text    NOT NULL,
    recorded_at    text    COLLATE "C" NOT NULL,
    hash           text    NOT NULL,
    UNIQUE (stream, version)
);
-- position_at: recorded_at never decreases with position, so the last event at or before a time is one
-- probe of this index.
CREATE INDEX IF NOT EXISTS events_recorded_at ON events (recorded_at, position);
CREATE TABLE IF NOT EXISTS registry_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key            text   PRIMARY KEY,
    fingerprint    text,
    first_position bigint NOT NULL,
    last_position  bigint NOT NULL
);
CREATE OR REPLACE FUNCTION mledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are append-only: % refused', TG_ARGV[0], TG_OP USING ERRCODE = 'restrict_violation';
END
$$;
-- A command's first statement (``COMMAND_HEAD``): the writer lock, generic plans for the transaction, the head
-- and the command's stream's version. A function, so that the lock needs no BEGIN of its own: a batched
-- command runs as the pipeline's implicit transaction, which LOCK TABLE as a statement refuses.
CREATE OR REPLACE FUNCTION mledger_command_head(command_stream text, OUT head_position bigint, OUT head_hash text,
    OUT head_recorded_at text, OUT stream_version bigint) LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE events IN EXCLUSIVE MODE;
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    SELECT position, hash, recorded_at INTO head_position, head_hash, head_recorded_at
        FROM events ORDER BY position DESC LIMIT 1;
    SELECT coalesce(max(version), 0) INTO stream_version FROM events WHERE stream = command_stream;
END
$$;
-- An optimistic command's first statement (``COMMAND_CHECK``, schema 3): the same lock and plans as
-- ``mledger_command_head``, but instead of returning the head it checks it. The client decided the command from
-- what its own last commit left (head, stream versions, catalog rows) and sent the check, the rows and the
-- Sync in one pipeline: if the head is not that commit's (another writer appended since) or the command's
-- idempotency key is already recorded, it raises serialization_failure, the pipeline aborts, nothing is
-- committed, and the client runs the command again the two-trip way.
CREATE OR REPLACE FUNCTION mledger_command_check(expected_head bigint, expected_hash text, idem_key text)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    at_position bigint;
    at_hash text;
BEGIN
    LOCK TABLE events IN EXCLUSIVE MODE;
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    SELECT position, hash INTO at_position, at_hash FROM events ORDER BY position DESC LIMIT 1;
    IF coalesce(at_position, 0) <> expected_head OR (at_position IS NOT NULL AND at_hash <> expected_hash) THEN
        RAISE EXCEPTION 'mledger: the log moved (head %, expected %)', coalesce(at_position, 0), expected_head
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF idem_key IS NOT NULL AND EXISTS (SELECT 1 FROM idempotency WHERE key = idem_key) THEN
        RAISE EXCEPTION 'mledger: idempotency key already recorded' USING ERRCODE = 'serialization_failure';
    END IF;
END
$$;
-- Statement-level, so that they also fire for a statement touching no row, for TRUNCATE (which has no
-- row triggers) and for INSERT ... ON CONFLICT DO UPDATE (which fires UPDATE statement triggers).
CREATE OR REPLACE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION mledger_refuse_change('events');
CREATE OR REPLACE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION mledger_refuse_change('events');
CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION mledger_refuse_change('events');
CREATE OR REPLACE TRIGGER idempotency_no_update BEFORE UPDATE ON idempotency
    FOR EACH STATEMENT EXECUTE FUNCTION mledger_refuse_change('idempotency keys');
CREATE OR REPLACE TRIGGER idempotency_no_delete BEFORE DELETE ON idempotency
    FOR EACH STATEMENT EXECUTE FUNCTION mledger_refuse_change('idempotency keys');
CREATE OR REPLACE TRIGGER idempotency_no_truncate BEFORE TRUNCATE ON idempotency
    FOR EACH STATEMENT EXECUTE FUNCTION mledger_refuse_change('idempotency keys');
"""

SCHEMA_PRESENT = "SELECT to_regclass('registry_meta') IS NOT NULL"
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(%s)"
META_GET = "SELECT value FROM registry_meta WHERE key = %s"
META_INIT = "INSERT INTO registry_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING"
META_SET = ("INSERT INTO registry_meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")

SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, false)"

# The writer lock. EXCLUSIVE conflicts with every writer of the table (INSERT takes ROW EXCLUSIVE) and with
# itself, and not with SELECT (ACCESS SHARE): one writer at a time, readers never wait. Taken first in the
# write transaction, so that the head read after it is the committed head and head + n is gapless and in
# commit order (as eventsourcing's LOCK TABLE; a sequence would leave gaps on rollback and hand out
# numbers in another order than commits).
BEGIN = "BEGIN"
LOCK = "LOCK TABLE events IN EXCLUSIVE MODE"
BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
DEALLOCATE_ALL = "DEALLOCATE ALL"

LAST = "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1"
HEAD = "SELECT coalesce(max(position), 0) FROM events"
# One statement: one snapshot (an export's header and the bound of its rows).
LOG_SUMMARY = ("SELECT count(*), coalesce(max(position), 0), (SELECT hash FROM events ORDER BY position DESC"
               " LIMIT 1) FROM events")
STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream = %s"
# One index probe per stream (max() over the (stream, version) index). Not "WHERE stream = ANY(...) GROUP BY
# stream": that plan reads every event of the stream, and the append slowed down as a stream grew (measured:
# 8 ms an append after a few thousand events in one stream, against 1.7 ms for a raw insert).
STREAM_VERSIONS = ("SELECT s.stream, (SELECT coalesce(max(version), 0) FROM events WHERE stream = s.stream)"
                   " FROM unnest(%s::text[]) AS s(stream)")

# A command's first read (the batched write, ``write_batched``): the writer lock, the head (NULLs in an empty
# log), the version of the command's stream, and generic plans for the rest of the transaction
# (``mledger_command_head`` in ``SCHEMA``). Why the last: the server re-planned the catalog's prefetch and the
# stream-version read at every Bind (their parameters can prune a custom plan, so PostgreSQL never settled on a
# generic one): 199 and 90 µs of a tag's server time, on the critical path, measured with
# log_min_duration_statement (the Bind's duration). A command's transaction reads by key only (the catalog's
# rows, the log's tail from a position), where a generic plan is the custom one; ``true``: the setting ends with
# the transaction.
COMMAND_HEAD = "SELECT * FROM mledger_command_head(%s)"
# An optimistic command's first statement (``mledger_command_check`` in ``SCHEMA``): the lock, and the check that
# the head is still (position, hash) and the key unrecorded; raises serialization_failure otherwise.
COMMAND_CHECK = "SELECT mledger_command_check(%s, %s, %s)"
# Whether a commit whose connection was lost landed: the hash at its last position (read under the lock).
HASH_AT = "SELECT hash FROM events WHERE position = %s"

SELECT = "SELECT position, stream, version, type, schema_version, data, meta, recorded_at, hash FROM events"
READ = SELECT + " WHERE position > %s ORDER BY position"
READ_LIMIT = READ + " LIMIT %s"
READ_STREAM = SELECT + " WHERE position > %s AND stream = %s ORDER BY position"
READ_STREAM_LIMIT = READ_STREAM + " LIMIT %s"
READ_STREAMS = SELECT + " WHERE stream >= %s AND stream < %s AND position > %s ORDER BY position LIMIT %s"
EVENT_AT = SELECT + " WHERE position = %s"
POSITION_AT = ("SELECT position FROM events WHERE recorded_at <= %s"
               " ORDER BY recorded_at DESC, position DESC LIMIT 1")

INSERT = (
    "INSERT INTO events (position, stream, version, type, schema_version, data, meta, recorded_at, hash)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
INSERT_IDEMPOTENCY = ("INSERT INTO idempotency (key, fingerprint, first_position, last_position)"
                      " VALUES (%s, %s, %s, %s)")
IDEMPOTENT_RESULT = (
    "SELECT i.fingerprint, i.first_position, i.last_position, e.position, e.stream, e.version, e.type, e.schema_version, e.data, e.meta,"
    " e.recorded_at, e.hash FROM idempotency i"
    " LEFT JOIN events e ON e.position BETWEEN i.first_position AND i.last_position"
    " WHERE i.key = %s ORDER BY e.position"
)
NOTIFY = "SELECT pg_notify('" + CHANNEL + "', %s)"

# A command's rows, its idempotency key and the wake-up in one statement (data-modifying WITH: each part runs
# once, to completion, whether or not the last reads it), instead of one per row, the key and the NOTIFY: a
# statement costs the client ~30-60 µs of psycopg's work and the server a Bind and an Execute.
APPEND_ONE_STATEMENT = 8  # rows; a longer batch (an import) goes as an executemany of INSERT


@cache
def append_statement(rows: int, keyed: bool) -> str:
    """The INSERT of ``rows`` events (parameters: each row's columns in order), the key's row when ``keyed``
    (key, fingerprint, first and last position) and the NOTIFY (the new head, as text)."""
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * rows)
    key = (", k AS (INSERT INTO idempotency (key, fingerprint, first_position, last_position)"
           " VALUES (%s, %s, %s, %s))") if keyed else ""
    return (f"WITH e AS ({INSERT.split(' VALUES ')[0]} VALUES {values}){key}"
            f" SELECT pg_notify('{CHANNEL}', %s)")
LISTEN = "LISTEN " + CHANNEL

# The guards, as PostgreSQL prints them back (``pg_get_triggerdef`` with the table unqualified): compared by
# definition, never by name, so a same-named no-op or a disabled trigger is seen (``guard_problems``).
GUARDED_TABLES = ("events", "idempotency")
GUARDS: dict[str, str] = {
    f"{table}_no_{op.lower()}": (f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} FOR EACH STATEMENT"
                                 f" EXECUTE FUNCTION mledger_refuse_change('{label}')")
    for table, label in (("events", "events"), ("idempotency", "idempotency keys"))
    for op in ("UPDATE", "DELETE", "TRUNCATE")
}
GUARD_FUNCTION = "mledger_refuse_change"
GUARD_FUNCTION_BODY = ("BEGIN RAISE EXCEPTION '% are append-only: % refused', TG_ARGV[0], TG_OP USING ERRCODE ="
                       " 'restrict_violation'; END")
GUARD_FUNCTION_CREATE = SCHEMA[SCHEMA.index("CREATE OR REPLACE FUNCTION"):SCHEMA.index("-- A command's first")]
COMMAND_HEAD_FUNCTION = "mledger_command_head"
COMMAND_HEAD_CREATE = SCHEMA[SCHEMA.index("CREATE OR REPLACE FUNCTION mledger_command_head"):
                             SCHEMA.index("-- An optimistic command's first")]
COMMAND_CHECK_FUNCTION = "mledger_command_check"
COMMAND_CHECK_CREATE = SCHEMA[SCHEMA.index("CREATE OR REPLACE FUNCTION mledger_command_check"):
                              SCHEMA.index("-- Statement-level")]
# Its body as ``prosrc`` keeps it, white space collapsed: an open uses optimistic commands only when the function
# is there and is this one (a role that could not upgrade a schema-2 registry has none: two trips, as before).
COMMAND_CHECK_BODY = " ".join(COMMAND_CHECK_CREATE.split("$$")[1].split())
# The functions the log's integrity rests on, by name: their bodies as PostgreSQL keeps them (``prosrc``), white
# space collapsed. The command head holds the writer lock: a copy without it would let two writers decide on
# the same head, so the audit checks it as it checks the guards, and ``restore_guards`` re-creates it.
CHECKED_FUNCTIONS: dict[str, tuple[str, str]] = {
    GUARD_FUNCTION: (GUARD_FUNCTION_BODY, GUARD_FUNCTION_CREATE),
    COMMAND_HEAD_FUNCTION: (" ".join(COMMAND_HEAD_CREATE.split("$$")[1].split()), COMMAND_HEAD_CREATE),
}
# Older schemas whose commands still run (the two-trip way) when the role cannot upgrade them: 2 lacks only the
# optimistic check (``mledger_command_check``).
TWO_TRIP_SCHEMAS = ("2",)
# What an open runs on a registry whose schema is the key: the DDL added since, nothing else (``_prepare``).
UPGRADES: dict[str, str] = {"1": COMMAND_HEAD_CREATE + COMMAND_CHECK_CREATE, "2": COMMAND_CHECK_CREATE}
# tgenabled 'D': ALTER TABLE ... DISABLE TRIGGER switches a guard off without touching its definition.
TRIGGERS = ("SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relname = ANY(%s) AND c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
            " ORDER BY t.tgname")
FUNCTION_BODY = ("SELECT p.prosrc FROM pg_proc p WHERE p.proname = %s"
                 " AND p.pronamespace = current_schema()::regnamespace")
KEYS_WITH_EVENTS = (
    "SELECT i.key, i.first_position, i.last_position, e.position, e.meta FROM idempotency i"
    " LEFT JOIN events e ON e.position BETWEEN i.first_position AND i.last_position"
    " ORDER BY i.key, e.position"
)
TRIGGER_TABLE = ("SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                 " WHERE t.tgname = %s AND c.relname = ANY(%s)")
KEYS = ("SELECT key, fingerprint, first_position, last_position FROM idempotency"
        " ORDER BY first_position, key")
# What a copy target already holds (``occupied``): the tables of the schema a connection uses.
TABLES_HERE = "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()"
