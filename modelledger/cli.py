"""``mledger``: the command line. Parses arguments, calls the ``Registry``, prints tables or JSON.

Every failure the registry raises on purpose is a ``ModelLedgerError``: it is printed as one line on
stderr and the process exits with the error's code (2 bad input, 3 not found, 4 conflict, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from eventstore.errors import ModelLedgerError, ValidationError
from eventstore.events import StoredEvent
from projections.diff import format_diff

from . import __version__, output
from .inputs import check_search, json_arg, metric_pairs, pairs, parse_count, parse_duration, parse_interval
from .progress import Progress
from .purged import purged_live

if TYPE_CHECKING:
    from projections.audit import AuditReport

    from .registry import Registry


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other refusal (argparse would print the whole usage first).
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


# -- argument helpers (the parsing itself lives in inputs.py) -----------------------------------------

def count_arg(text: str) -> int:
    """A whole number from 0 that SQLite can hold, ASCII digits only (argparse type)."""
    try:
        return parse_count(text, "value")
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, sort_keys=False))
    else:
        print(output.plain_lines(human))  # the parts already escaped their fields; this catches the rest


def emit_events(args: argparse.Namespace, events: list[StoredEvent], what: str) -> None:
    if args.json:
        print(json.dumps({"events": [e.to_json() for e in events]}, ensure_ascii=False))
    elif not events:
        print(f"{what}: nothing to change")
    else:
        print("\n".join(output.event_line(e) for e in events))


# -- commands ------------------------------------------------------------------------------------------

def _bar(args: argparse.Namespace, label: str) -> Progress:
    return Progress(label, enabled=False if args.json else None)


def cmd_register(reg: Registry, args: argparse.Namespace) -> int:
    bar = _bar(args, f"ingest {args.artifact}")
    try:
        v = reg.register(
            args.name, args.artifact, description=args.description or "", tags=pairs(args.tag, "tag"),
            params=json_arg(args.params, "params"), structure=json_arg(args.structure, "structure"),
            optimizer=json_arg(args.optimizer, "optimizer"), idempotency_key=args.idempotency_key,
            wait=not args.no_wait, timeout=args.timeout, progress=bar,
        )
    finally:
        bar.close()
    emit(args, v.to_json(), f"registered {output.version_line(v)}")
    return 0


def cmd_update(reg: Registry, args: argparse.Namespace) -> int:
    bar = _bar(args, f"ingest {args.artifact}")
    try:
        v = reg.update(
            args.ref, params=json_arg(args.params, "params"), structure=json_arg(args.structure, "structure"),
            optimizer=json_arg(args.optimizer, "optimizer"), artifact=args.artifact, description=args.description,
            structure_patch=args.structure_patch, optimizer_patch=args.optimizer_patch,
            idempotency_key=args.idempotency_key, wait=not args.no_wait, timeout=args.timeout, progress=bar,
        )
    finally:
        bar.close()
    emit(args, v.to_json(), f"derived {output.version_line(v)} from {v.name}@{v.parent}")
    return 0


def cmd_retry(reg: Registry, args: argparse.Namespace) -> int:
    v = reg.retry(args.ref, wait=not args.no_wait, timeout=args.timeout, idempotency_key=args.idempotency_key)
    emit(args, v.to_json(), f"retried {output.version_line(v)}")
    return 0


def cmd_wait(reg: Registry, args: argparse.Namespace) -> int:
    v = reg.wait(args.ref, args.timeout)
    emit(args, v.to_json(), output.version_line(v))
    return 0


def cmd_pull(reg: Registry, args: argparse.Namespace) -> int:
    bar = _bar(args, f"pull {args.ref}")
    try:
        v = reg.pull(args.ref, args.dest, overwrite=args.force, progress=bar)
    finally:
        bar.close()
    data = {"version": v.to_json(), "dest": args.dest, "digest": v.artifact.get("digest"),
            "size": v.artifact.get("size"), "verified": True}
    emit(args, data, f"pulled {v.ref} -> {output.plain(args.dest)} ({output.human_size(v.artifact.get('size'))}, "
                     "every digest verified)")
    return 0


def cmd_gc(reg: Registry, args: argparse.Namespace) -> int:
    report = reg.gc(parse_duration(args.grace), dry_run=args.dry_run, idempotency_key=args.idempotency_key)
    verb = "would free" if args.dry_run else "freed"
    human = (f"{verb} {output.human_size(report['bytes'])} in {report['blobs']} blob(s)"
             f" ({report['orphan_blobs']} unreferenced); purged versions: {', '.join(report['versions']) or '-'}")
    emit(args, report, human)
    return 0


def cmd_worker(reg_factory: Any, args: argparse.Namespace) -> int:
    from .config import Config
    from .worker import run

    config = Config.load(args.home, artifacts=args.artifacts, broker=args.broker, actor=args.actor,
                         database=args.database)
    return run(config, processes=args.processes, threads=args.threads, sweep_interval=args.sweep_interval)


def cmd_tag(reg: Registry, args: argparse.Namespace) -> int:
    emit_events(args, reg.tag(args.ref, pairs(args.pairs, "tag"), idempotency_key=args.idempotency_key), "tag")
    return 0


def cmd_untag(reg: Registry, args: argparse.Namespace) -> int:
    emit_events(args, reg.untag(args.ref, *args.keys, idempotency_key=args.idempotency_key), "untag")
    return 0


def cmd_metrics(reg: Registry, args: argparse.Namespace) -> int:
    emit_events(args, reg.metrics(args.ref, metric_pairs(args.pairs), idempotency_key=args.idempotency_key),
                "metrics")
    return 0


def cmd_alias(reg: Registry, args: argparse.Namespace) -> int:
    emit_events(args, reg.alias(args.ref, args.alias, idempotency_key=args.idempotency_key), "alias")
    return 0


def cmd_unalias(reg: Registry, args: argparse.Namespace) -> int:
    emit_events(args, reg.unalias(args.name, args.alias, idempotency_key=args.idempotency_key), "unalias")
    return 0


def cmd_rollback(reg: Registry, args: argparse.Namespace) -> int:
    emit_events(args, reg.rollback(args.name, args.alias, idempotency_key=args.idempotency_key), "rollback")
    return 0


def cmd_delete(reg: Registry, args: argparse.Namespace) -> int:
    emit_events(args, reg.delete(args.ref, args.reason or "", idempotency_key=args.idempotency_key), "delete")
    return 0


def cmd_undelete(reg: Registry, args: argparse.Namespace) -> int:
    events = reg.undelete(args.ref, timeout=args.timeout, idempotency_key=args.idempotency_key)
    # Versions back without their bytes (gc purged them, their source cannot be read again): as `restore`
    # reports them, and exit 1, the same run locally and through a server.
    missing = purged_live(reg, args.ref)
    if args.json:
        print(json.dumps({"events": [e.to_json() for e in events], "missing": missing}, ensure_ascii=False))
    else:
        emit_events(args, events, "undelete")
        if missing:
            print(f"MISSING (purged, source unreadable): {', '.join(missing)}: `mledger retry REF` where the "
                  "source can be read, or register the artifact again")
    return 1 if missing else 0


def cmd_list(reg: Registry, args: argparse.Namespace) -> int:
    models = reg.catalog(args.as_of).list(search=check_search(args.search), tags=pairs(args.tag, "tag"), file=args.file,
                                alias=args.alias, include_deleted=args.deleted, limit=args.limit)
    emit(args, {"models": [m.to_json() for m in models]}, output.models_table(models))
    return 0


def cmd_show(reg: Registry, args: argparse.Namespace) -> int:
    catalog = reg.catalog(args.as_of)
    if args.structure:
        if "@" not in args.ref:
            raise ValidationError("--structure shows a version's structure: give NAME@N or NAME@alias")
        v = catalog.get(args.ref)
        emit(args, v.structure, output.structure_detail(v.structure))
        return 0
    if "@" in args.ref:
        v = catalog.get(args.ref)
        emit(args, v.to_json(), output.version_detail(v))
    else:
        m = catalog.model(args.ref)
        emit(args, m.to_json(), output.model_detail(m))
    return 0


def cmd_best(reg: Registry, args: argparse.Namespace) -> int:
    v = reg.catalog(args.as_of).best(args.name, args.metric, minimize=args.min, tags=pairs(args.tag, "tag"))
    emit(args, v.to_json(), f"{output.version_line(v)}  {args.metric}={v.metrics.get(args.metric)}")
    return 0


def cmd_history(reg: Registry, args: argparse.Namespace) -> int:
    events = reg.history(args.ref, as_of=args.as_of)
    entries = reg.changes(events)
    data = {"events": [e.to_json() for e in events], "changes": [x["changes"] for x in entries]}
    emit(args, data, output.history_table(entries))
    return 0


def cmd_diff(reg: Registry, args: argparse.Namespace) -> int:
    d = reg.diff(args.a, args.b, a_as_of=args.a_as_of or args.as_of, b_as_of=args.b_as_of or args.as_of)
    emit(args, d, format_diff(output.plain_data(d)))  # file names and values may hold newlines: escape them first
    return 0


def cmd_restore(reg: Registry, args: argparse.Namespace) -> int:
    report = reg.restore(args.name, as_of=args.as_of, dry_run=args.dry_run, timeout=args.timeout,
                         idempotency_key=args.idempotency_key)
    what = "would append" if args.dry_run else "appended"
    lines = [f"restore to #{report['as_of']}: {what} {len(report['events'])} event(s)"
             + (f" for {', '.join(report['models'])}" if report["models"] else " (already equal)")]
    if args.dry_run:
        lines += [f"  {e['type']:<18} {output.event_summary_data(e['data'], e['type'])}" for e in report["events"]]
    else:
        lines += ["  " + output.event_line(StoredEvent(**e)) for e in report["events"]]
    if report["reingest"]:
        lines.append(f"re-ingested from their sources: {', '.join(report['reingest'])}")
    if report["missing"]:
        lines.append(f"MISSING (purged, source unreadable): {', '.join(report['missing'])}")
    emit(args, report, "\n".join(lines))
    return 0 if not report["missing"] else 1


def _audit_lines(report: AuditReport) -> str:
    lines = [f"{'ok ' if c.ok else 'FAIL'}  {c.name:<12} {c.detail}" for c in report.checks]
    lines.append(f"{report.events_checked} events checked; last hash {report.last_hash}")
    return "\n".join(lines)


def cmd_audit(reg_factory: Any, args: argparse.Namespace) -> int:
    checks = args.expect or args.expected_hash is not None
    if args.verify_export and (args.deep or args.export or args.anchor or args.restore_guards):
        raise ValidationError("--verify-export checks a file: with it, only --expected-hash and --expect apply")
    if (args.anchor or args.export) and (checks or args.deep or args.restore_guards or args.anchor and args.export):
        raise ValidationError("--anchor and --export only write: check anchors with `mledger audit --expect`")
    if args.verify_export is not None:
        from .registry import Registry

        report = Registry.verify_export(args.verify_export, expected_final_hash=args.expected_hash,
                                        expect=args.expect)
    else:
        with _open(args) as reg:
            if args.export is not None:
                summary = reg.export_log(args.export, overwrite=args.force)
                emit(args, summary.to_json(), f"exported {summary.events} events to {output.plain(summary.path)}; "
                                              f"final hash {summary.final_hash}")
                return 0
            if args.anchor:
                anchor = reg.anchor()
                emit(args, anchor.to_json(), str(anchor))
                return 0
            if args.restore_guards:
                restored = reg.restore_guards()
                sys.stderr.write(f"restored guards: {'; '.join(map(str, restored))}\n" if restored
                                 else "guards were as the schema defines them\n")
            report = reg.audit(deep=args.deep, expected_hash=args.expected_hash, expect=args.expect)
    emit(args, report.to_json(), _audit_lines(report))
    if not report.ok:
        first = report.first_failure
        at = f" at #{first.position}" if first and first.position is not None else ""
        detail = output.plain(first.detail) if first else ""
        sys.stderr.write(f"mledger: audit failed: {first.name if first else '?'}{at}: {detail}\n")
        return 6
    return 0


def _server(args: argparse.Namespace) -> tuple[str, str | None] | None:
    """The team server this run talks to, ``(url, token)``, from ``--url``/``--token``/``--token-file`` or
    ``MLEDGER_URL``/``MLEDGER_TOKEN``/``MLEDGER_TOKEN_FILE`` (an option wins over the environment); None for
    a local registry. A token option without a server, or two tokens, is refused rather than ignored."""
    url_opt = getattr(args, "server_url", None)
    token_opt = getattr(args, "token", None)
    token_file = getattr(args, "token_file", None)
    if token_opt is not None and token_file is not None:
        raise ValidationError("give the token once: --token or --token-file, not both")
    if url_opt is not None and (args.database is not None or args.home is not None):
        raise ValidationError("--url names a server; --home and --database name a local registry: give one")
    url = url_opt if url_opt is not None else os.environ.get("MLEDGER_URL") or None
    if url is None:
        if token_opt is not None or token_file is not None:
            raise ValidationError("--token and --token-file go with --url (or MLEDGER_URL): no server was named")
        return None
    from .remote import read_token_file

    if token_file is not None:
        return url, read_token_file(token_file)
    return url, token_opt  # None: RemoteRegistry.open reads MLEDGER_TOKEN / MLEDGER_TOKEN_FILE


# Commands that need the registry's database itself: refused over HTTP at once, rather than half run.
_LOCAL_ONLY = {"copy": "copy", "projections": "projections rebuild", "webhook": "webhook"}


def _open(args: argparse.Namespace) -> Registry:
    server = _server(args)
    if server is not None and args.command in _LOCAL_ONLY:
        raise ValidationError(f"{_LOCAL_ONLY[args.command]} runs where the registry's database is, not over HTTP "
                              "(MLEDGER_URL or --url is set)")
    if server is not None:
        # A team server: the same commands over HTTP (modelledger/remote.py).
        from .remote import RemoteRegistry

        return RemoteRegistry.open(*server)  # type: ignore[return-value]
    # Imported here, not at the top: a command over HTTP needs none of the local registry (its imports
    # were most of a remote `mledger show`'s cold start).
    from .registry import Registry

    return Registry.open(args.home, artifacts=args.artifacts, broker=args.broker, actor=args.actor, client="cli",
                         database=args.database)


def cmd_log(reg: Registry, args: argparse.Namespace) -> int:
    since = args.since
    if since < 0:
        raise ValidationError("--since takes a position (0 or more)")
    interval = parse_interval(args.interval, "--interval") if args.follow else 0.0
    follow = getattr(reg, "follow", None) if args.follow else None
    if follow is not None:
        # Over HTTP: the server's event stream, resumed after a cut from the last position printed.
        for e in follow(since):
            print(json.dumps(e.to_json(), ensure_ascii=False) if args.json else output.event_line(e), flush=True)
        return 0
    while True:
        batch = list(reg.log(since=since, limit=1000))
        for e in batch:
            print(json.dumps(e.to_json(), ensure_ascii=False) if args.json else output.event_line(e), flush=True)
        if batch:
            since = batch[-1].position
            continue
        if not args.follow:
            return 0
        time.sleep(interval)


def cmd_copy(reg: Registry, args: argparse.Namespace) -> int:
    from .copy import copy_registry

    report = copy_registry(reg, args.to, progress=None if args.json else sys.stderr)
    emit(args, report.to_json(), report.summary())
    return 0 if report.audit_ok else 6


def cmd_projections(reg: Registry, args: argparse.Namespace) -> int:
    before = reg.catalog().digest()
    position = reg.rebuild_projections()
    after = reg.catalog().digest()
    data = {"rebuilt": True, "position": position, "digest": after, "identical": before == after}
    emit(args, data, f"catalog rebuilt from {position} events; identical to before: {before == after}")
    return 0


def cmd_import(reg: Registry, args: argparse.Namespace) -> int:
    from .mlflow_import import import_mlflow

    def say(line: str) -> None:
        if not args.json:
            sys.stderr.write(output.plain(line) + "\n")

    report = import_mlflow(reg, args.tracking_uri, registry_uri=args.registry_uri, models=args.model,
                           dry_run=args.dry_run, progress=say)
    lines = [f"{'would import' if args.dry_run else 'imported'} from {report.source}: {report.events} event(s)"
             f" over {len(report.models)} model(s)"]
    for m in report.models:
        lines += [f"  {m.name}: " + (", ".join(f"{n} {t}" for t, n in sorted(m.event_types.items())) or "no change")]
        lines += [f"    failed: {f}" for f in m.failed] + [f"    skipped: {s}" for s in m.skipped]
    emit(args, report.to_json(), "\n".join(lines))
    # Something MLflow holds that could not be brought over is a problem to see, not a success.
    return ValidationError.exit_code if report.skipped else 0


def cmd_serve(reg_factory: Any, args: argparse.Namespace) -> int:
    from .config import Config
    from .server.run import serve

    config = Config.load(args.home, artifacts=args.artifacts, broker=args.broker, actor=args.actor)
    return serve(config, host=args.host, port=args.port, workers=args.workers,
                 allow_anonymous_read=args.allow_anonymous_read, access_log=args.access_log)


def cmd_token(reg: Registry, args: argparse.Namespace) -> int:
    if args.action == "create":
        if not args.name or args.role is None:
            raise ValidationError("token create NAME --role reader|writer|admin")
        expires = None if args.expires is None else parse_duration(args.expires)
        state, secret = reg.create_token(args.name, args.role, prefix=args.prefix or "", expires_in=expires,
                                         idempotency_key=args.idempotency_key)
        data = {**state.to_json(), "secret": secret}
        shown = secret if secret is not None else "(already created under this idempotency key: not shown again)"
        emit(args, data, f"token {output.plain(state.token)} ({state.role}"
                         f"{', models under ' + output.plain(state.prefix) if state.prefix else ''}"
                         f"{', expires ' + state.expires_at if state.expires_at else ''}):\n{shown}\n"
                         "keep it now: it is shown only once")
        return 0
    if args.action == "revoke":
        if not args.name:
            raise ValidationError("token revoke NAME")
        emit_events(args, reg.revoke_token(args.name, args.reason or "", idempotency_key=args.idempotency_key),
                    "revoke")
        return 0
    tokens = reg.tokens()
    lines = [f"{t.token:<24} {t.role:<7} {t.prefix or '*':<16} "
             f"{'revoked ' + (t.revoked_at or '') if t.revoked else 'expires ' + t.expires_at if t.expires_at else 'active'}"
             f"  granted by {t.granted_by} at {t.granted_at}" for t in tokens]
    emit(args, {"tokens": [t.to_json() for t in tokens]}, output.plain_lines("\n".join(lines)) if lines else "no tokens")
    return 0


def cmd_webhook(reg: Registry, args: argparse.Namespace) -> int:
    from eventstore.webhooks import DeleteWebhook, Replay, UpdateWebhook

    key = args.idempotency_key
    if args.action == "create":
        if not args.ref or not args.url or not args.event:
            raise ValidationError("webhook create NAME --url URL --event EVENT [--event ...]")
        state, secret = reg.create_webhook(args.ref, args.url, args.event, description=args.description or "",
                                           idempotency_key=key)
        emit(args, {**state.to_json(), "secret": secret},
             f"webhook {output.plain(state.name)} ({state.webhook_id}) -> {output.plain(state.url)}: "
             f"{', '.join(state.events)}\nsigning secret (X-MLflow-Signature): {secret}")
        return 0
    if args.action == "list":
        hooks = reg.webhooks()
        lines = [f"{w.webhook_id}  {w.name:<20} {w.status:<8} {w.url}  {','.join(w.events)}  through #{w.cursor}"
                 for w in hooks]
        emit(args, {"webhooks": [w.to_json() for w in hooks]}, output.plain_lines("\n".join(lines)) if lines else "no webhooks")
        return 0
    if args.action == "deliver":
        counts = reg.deliver_webhooks(args.ref)
        emit(args, {"delivered": counts}, "\n".join(f"{n}: {c} event(s) delivered" for n, c in counts.items())
             or "no webhooks")
        return 0
    if not args.ref:
        raise ValidationError(f"webhook {args.action} NAME|ID")
    hook = reg.webhook(args.ref)
    if args.action == "secret":
        from eventstore.webhooks import secret_for

        secret = secret_for(hook.webhook_id)  # derived from MLEDGER_WEBHOOK_KEY: only an operator has it
        emit(args, {"id": hook.webhook_id, "secret": secret}, secret)
        return 0
    if args.action == "delete":
        command: Any = DeleteWebhook(hook.webhook_id)
    elif args.action in ("enable", "disable"):
        command = UpdateWebhook(hook.webhook_id, status="ACTIVE" if args.action == "enable" else "DISABLED")
    else:  # replay
        if args.since is None:
            raise ValidationError("webhook replay NAME --from N: deliver again every matching event after #N")
        command = Replay(hook.webhook_id, args.since)
    emit_events(args, reg.change_webhook(command, idempotency_key=key), f"webhook {args.action}")
    return 0


def cmd_demo(reg_factory: Any, args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(home=args.home, as_json=args.json)


# -- parser --------------------------------------------------------------------------------------------

REMOTE_HELP = """\
a team server (docs/http.md): every command but serve, worker, webhook, copy, projections and demo
runs against a `mledger serve` with --url URL (env MLEDGER_URL) and its access token from --token-file FILE
(env MLEDGER_TOKEN_FILE) or env MLEDGER_TOKEN; --token SECRET works too, but a command line is
seen by `ps` and kept in shell history. `mledger COMMAND --help` lists each command's options."""


class _NotBuilt:
    """Stands for the parser of a command this run does not run: its options are not built. Building all
    25 parsers took more time than a `mledger show` spends reading (argparse looks up gettext catalogs
    for every parser and option: ~80 lookups, 7-25 ms on the project's machine)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command`` (the first argument of a run), that command's only —
    the top level and its usage are the same (``mledger --help`` and an unknown command get them all)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine output: one JSON object (log: JSON Lines)")
    common.add_argument("--home", help="registry folder (env MLEDGER_HOME, default ~/.mledger)")
    common.add_argument("--artifacts", help="artifact store URL (env MLEDGER_ARTIFACTS)")
    common.add_argument("--broker", help="'embedded' or redis://... (env MLEDGER_BROKER)")
    common.add_argument("--actor", help="who is acting (env MLEDGER_ACTOR, default user@host)")
    common.add_argument("--database", metavar="URL|FILE",
                        help="postgresql://... or a SQLite file (env MLEDGER_DATABASE, default $MLEDGER_HOME/registry.db)")

    # Over HTTP (docs/http.md). Not on the commands that need the database itself (`_LOCAL_ONLY`, `serve`,
    # `worker`, `demo`); `webhook`'s own --url is where a hook posts.
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", dest="server_url", metavar="URL",
                        help="a `mledger serve` to talk to instead of a database (env MLEDGER_URL)")
    remote.add_argument("--token", metavar="SECRET",
                        help="the server's access token (env MLEDGER_TOKEN); a command line is seen by `ps` and "
                             "kept in shell history: prefer --token-file or the environment")
    remote.add_argument("--token-file", metavar="FILE",
                        help="read the access token from FILE (env MLEDGER_TOKEN_FILE)")

    parser = _Parser(prog="mledger", description="An event-sourced registry for machine-learning models.",
                     epilog=REMOTE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mledger {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    built: list[str] = []

    def add(name: str, fn: Any, help: str) -> argparse.ArgumentParser | _NotBuilt:
        if command is not None and name != command:
            return _NotBuilt()
        local_only = name in ("webhook", "serve", "worker", "demo", "copy", "projections")
        p = sub.add_parser(name, parents=[common] if local_only else [common, remote], help=help, description=help)
        p.set_defaults(fn=fn)
        built.append(name)
        return p

    def as_of(p: argparse.ArgumentParser | _NotBuilt) -> None:
        p.add_argument("--as-of", metavar="T", help="as it was at T: an ISO-8601 timestamp or #N (a position)")

    def content_options(p: argparse.ArgumentParser | _NotBuilt) -> None:
        p.add_argument("--params", metavar="JSON|@FILE", help="hyper-parameters (a JSON object)")
        p.add_argument("--structure", metavar="JSON|@FILE", help="architecture description (a JSON object)")
        p.add_argument("--optimizer", metavar="JSON|@FILE", help="optimizer settings (a JSON object)")
        p.add_argument("--description")
        p.add_argument("--idempotency-key", help="a retry with the same key appends nothing and returns the first result")
        p.add_argument("--no-wait", action="store_true", help="return before the artifact is stored (Redis broker)")
        p.add_argument("--timeout", type=float, metavar="SECONDS", help="how long to wait for the artifact (default 3600)")

    p = add("register", cmd_register, "register a new version of a model (the model is created on first use)")
    p.add_argument("name")
    p.add_argument("--artifact", required=True, metavar="PATH|URL", help="a file or a folder, local or any fsspec URL")
    p.add_argument("--tag", action="append", default=[], metavar="K=V")
    content_options(p)

    p = add("update", cmd_update, "derive a new version from REF with new params / structure / optimizer / artifact")
    p.add_argument("ref")
    p.add_argument("--artifact", metavar="PATH|URL")
    p.add_argument("--structure-patch", action="store_true", help="merge --structure into the parent's (RFC 7386)")
    p.add_argument("--optimizer-patch", action="store_true", help="merge --optimizer into the parent's (RFC 7386)")
    content_options(p)

    def keyed(p: argparse.ArgumentParser | _NotBuilt) -> argparse.ArgumentParser | _NotBuilt:
        p.add_argument("--idempotency-key", metavar="K",
                       help="a retry with the same key appends nothing and returns the first result")
        return p

    p = keyed(add("tag", cmd_tag, "set tags on a model (NAME) or a version (NAME@N, NAME@alias)"))
    p.add_argument("ref")
    p.add_argument("pairs", nargs="+", metavar="K=V")
    p = keyed(add("untag", cmd_untag, "remove tags from a model or a version"))
    p.add_argument("ref")
    p.add_argument("keys", nargs="+", metavar="K")
    p = keyed(add("metrics", cmd_metrics, "record metrics of a version"))
    p.add_argument("ref")
    p.add_argument("pairs", nargs="+", metavar="K=V")
    p = keyed(add("alias", cmd_alias, "point an alias (e.g. production) at a version"))
    p.add_argument("ref")
    p.add_argument("alias")
    p = keyed(add("unalias", cmd_unalias, "remove an alias"))
    p.add_argument("name")
    p.add_argument("alias")
    p = keyed(add("rollback", cmd_rollback, "move an alias back to the version it pointed to before"))
    p.add_argument("name")
    p.add_argument("alias")
    p = keyed(add("delete", cmd_delete, "delete a version (NAME@N) or a model (NAME); logical, bytes stay until gc"))
    p.add_argument("ref")
    p.add_argument("--reason")
    p = keyed(add("undelete", cmd_undelete, "bring back a deleted version (with its artifact) or model"))
    p.add_argument("ref")
    p.add_argument("--timeout", type=float, metavar="SECONDS")

    p = add("list", cmd_list, "list models, optionally filtered")
    p.add_argument("--search", metavar="WORDS", help="words in names, descriptions, tags (prefix match)")
    p.add_argument("--tag", action="append", default=[], metavar="K=V")
    p.add_argument("--file", metavar="NAME", help="models with an artifact file of this name or path")
    p.add_argument("--alias", metavar="ALIAS")
    p.add_argument("--deleted", action="store_true", help="include deleted models")
    p.add_argument("--limit", type=count_arg)
    as_of(p)
    p = add("show", cmd_show, "show a model (NAME) or a version (NAME@N, NAME@alias)")
    p.add_argument("ref")
    p.add_argument("--structure", action="store_true",
                   help="print the version's whole structure (given, or read from the artifact's bytes)")
    as_of(p)
    p = add("best", cmd_best, "the live version with the best value of a metric")
    p.add_argument("name")
    p.add_argument("--metric", required=True)
    p.add_argument("--min", action="store_true", help="lower is better")
    p.add_argument("--tag", action="append", default=[], metavar="K=V")
    as_of(p)
    p = add("history", cmd_history, "who did what when, for a model or a version, with before and after values")
    p.add_argument("ref")
    as_of(p)
    p = add("diff", cmd_diff, "what differs between two versions (content, metrics, tags, artifact, lineage)")
    p.add_argument("a", metavar="REF")
    p.add_argument("b", metavar="REF")
    as_of(p)
    p.add_argument("--a-as-of", metavar="T", help="read the first REF as of T (the second is read now)")
    p.add_argument("--b-as-of", metavar="T", help="read the second REF as of T")
    p = keyed(add("restore", cmd_restore, "append the compensating events that make the catalog what it was at T"))
    p.add_argument("name", nargs="?", help="one model (default: the whole registry)")
    p.add_argument("--as-of", required=True, metavar="T", help="an ISO-8601 timestamp or #N (a position)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, append nothing")
    p.add_argument("--timeout", type=float, metavar="SECONDS")
    p = add("audit", cmd_audit, "verify the log and the catalog (exit 0 only when everything holds)")
    p.add_argument("--deep", action="store_true", help="also rehash every stored blob")
    p.add_argument("--export", metavar="FILE", help="write the evidence bundle (JSON Lines + final hash)")
    p.add_argument("--force", action="store_true", help="with --export: replace FILE if it is a regular file")
    p.add_argument("--verify-export", metavar="FILE", help="verify a bundle, without any registry")
    p.add_argument("--expected-hash", metavar="H", help="the hash the log (or the export) must end at")
    p.add_argument("--anchor", action="store_true", help="print the head as #N:HASH, to keep outside the registry")
    p.add_argument("--expect", action="append", default=[], metavar="#N:HASH",
                   help="an anchor that must still hold (position N still has that hash); repeatable")
    p.add_argument("--restore-guards", action="store_true",
                   help="re-create the append-only guards as the schema defines them, then audit")
    p = add("log", cmd_log, "the event log (JSON Lines with --json)")
    p.add_argument("--since", type=count_arg, default=0, metavar="N", help="events after position N")
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)

    p = keyed(add("retry", cmd_retry, "ingest a failed or pending version's artifact from its source, with your rights"))
    p.add_argument("ref")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--timeout", type=float, metavar="SECONDS")
    p = add("wait", cmd_wait, "wait until a version's artifact is stored")
    p.add_argument("ref")
    p.add_argument("--timeout", type=float, metavar="SECONDS")
    p = add("pull", cmd_pull, "write a version's artifact to DEST (a path or URL), verifying every digest")
    p.add_argument("ref")
    p.add_argument("dest")
    p.add_argument("--force", action="store_true",
                   help="replace DEST if it is a regular file or a folder an earlier pull wrote")
    p = keyed(add("gc", cmd_gc, "free the bytes no live version needs (after a grace period); appends ArtifactPurged"))
    p.add_argument("--grace", default="7d", help="keep bytes whose last reference ended less than this ago (7d)")
    p.add_argument("--dry-run", action="store_true", help="say what would be freed, change nothing")
    p = add("worker", cmd_worker, "run dramatiq workers for the Redis broker, and the sweep")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--sweep-interval", type=float, default=30.0, metavar="SECONDS")

    p = add("copy", cmd_copy, "copy this registry's log to another (empty) database, then build and audit its catalog")
    p.add_argument("--to", required=True, metavar="DATABASE", help="postgresql://... or a SQLite file")
    p = add("serve", cmd_serve, "run the HTTP server (JSON API under /api/v1; tokens: `mledger token`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes (default 1)")
    p.add_argument("--allow-anonymous-read", action="store_true",
                   help="reads need no token (a trusted network); writes always do")
    p.add_argument("--access-log", action="store_true", help="a line per request on stdout (default: off)")
    p = keyed(add("token", cmd_token, "create, list or revoke the HTTP server's access tokens"))
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=["reader", "writer", "admin"])
    p.add_argument("--prefix", metavar="P", help="a writer changes only models whose names start with P (team-a/)")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 30d, 12h (default: never)")
    p.add_argument("--reason", help="with revoke: why (recorded in the log)")

    p = add("projections", cmd_projections, "maintain the read side")
    p.add_argument("action", choices=["rebuild"])

    p = add("import", cmd_import, "bring models over from another registry, and again incrementally (mlflow)")
    p.add_argument("system", choices=["mlflow"])
    p.add_argument("--tracking-uri", required=True, metavar="URI", help="sqlite:///..., postgresql://..., http(s)://...")
    p.add_argument("--registry-uri", metavar="URI", help="MLflow's registry URI when it differs")
    p.add_argument("--model", action="append", default=[], metavar="NAME", help="only this model (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="say what would be imported, append and copy nothing")

    p = add("webhook", cmd_webhook, "webhooks with a cursor on the log: create, list, delete, enable, disable, "
            "replay, deliver")
    p.add_argument("action", choices=["create", "list", "delete", "enable", "disable", "replay", "deliver", "secret"])
    p.add_argument("ref", nargs="?", metavar="NAME|ID")
    p.add_argument("--url", help="with create: where to POST (under MLEDGER_WEBHOOK_URLS)")
    p.add_argument("--event", action="append", default=[], metavar="EVENT",
                   help="with create: model_version.created, model_version_tag.set, ... (repeatable)")
    p.add_argument("--description")
    p.add_argument("--from", dest="since", type=count_arg, metavar="N", help="with replay: events after #N")
    p.add_argument("--idempotency-key", help="a retry with the same key appends nothing")

    p = add("demo", cmd_demo, "a guided tour on a fresh temporary registry (trains small scikit-learn models)")
    if command is not None and not built:
        return build_parser()  # not a command: the full parser says so, with the list of commands
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and not argv[0].startswith("-") else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.fn in (cmd_demo, cmd_worker, cmd_audit, cmd_serve):
            return args.fn(None, args)
        with _open(args) as reg:
            return args.fn(reg, args)
    except ModelLedgerError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"mledger: error: {output.plain(message)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `mledger log | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
