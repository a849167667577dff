"""The SDK over HTTP: ``RemoteRegistry`` talks to a ``mledger serve`` (``MLEDGER_URL`` + ``MLEDGER_TOKEN``)
with the method names, arguments and results of ``Registry``, so the CLI runs unchanged on either.

Records come back as the same frozen records (``VersionRecord``, ``ModelRecord``, ``StoredEvent``) rebuilt
from the API's JSON; refusals come back as the same error types (the server's ``error`` kind, read through
the table of ``modelledger.server.errors``), so exit codes match. Artifacts: local files and folders are
uploaded (only the blobs the server lacks), URLs are handed to the server (which fetches them only under its
``MLEDGER_SOURCES``); a pull downloads into a private temporary store and writes the destination from there
with the local pull's own checks, every digest verified.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from eventstore.access import TokenState
from eventstore.errors import ArtifactError, ModelLedgerError, PurgedError, StoreError, ValidationError
from eventstore.events import STREAM_PREFIX, StoredEvent
from projections.records import ModelRecord, VersionRecord

from .jsonhttp import INLINE_MAX, HTTPError, Unreachable, Wire, check_url, error_of
from .server.errors import STATUSES

if TYPE_CHECKING:
    import httpx

    from projections.audit import AuditReport

API = "/api/v1"
DEFAULT_TIMEOUT = 3600.0
TOKEN_FILE_MAX = 4096
RECONNECT_MAX = 5.0  # seconds between attempts to reach a server that cut a followed stream
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _error(exc: HTTPError) -> ModelLedgerError:
    for kind, _status, name in STATUSES:
        if name == exc.kind:
            return kind(exc.message)
    return StoreError(f"the server answered {exc.status}: {exc.message}")


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The access token kept in ``path`` (one line; surrounding whitespace dropped). A token on a command
    line is seen by ``ps`` and kept in shell history; a file readable by its owner only is not."""
    shown = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ValidationError(f"cannot read the token file {shown}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValidationError(f"the token file {shown} is not a regular file")
        raw = os.read(fd, TOKEN_FILE_MAX + 1)
    finally:
        os.close(fd)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if len(raw) > TOKEN_FILE_MAX or not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ValidationError(f"the token file {shown} must hold one token (mlt_...) on one line")
    return token


def version_from_json(d: Mapping[str, Any]) -> VersionRecord:
    art = dict(d.get("artifact") or {})
    # ``file_details`` (path, digest, size) is what the record holds; ``files`` (the paths) is the same list.
    details = art.pop("file_details", None)
    art["files"] = details if details is not None else [{"path": p} if isinstance(p, str) else p
                                                        for p in art.get("files") or ()]
    return VersionRecord(d["name"], d["version"], d.get("parent"), d["status"], d["deleted"], d.get("description", ""),
                         d.get("params", {}), d.get("structure", {}), d.get("optimizer", {}), d.get("tags", {}),
                         tuple(d.get("aliases", ())), d.get("metrics", {}), art, d.get("created_at", ""),
                         d.get("created_by", ""))


def model_from_json(d: Mapping[str, Any]) -> ModelRecord:
    versions = d.get("versions")
    return ModelRecord(d["name"], d.get("description", ""), d.get("tags", {}), d.get("aliases", {}), d.get("latest"),
                       d["deleted"], d.get("created_at", ""), d.get("created_by", ""), d.get("updated_at", ""),
                       d.get("versions_count", 0),
                       None if versions is None else tuple(version_from_json(v) for v in versions))


def event_from_json(d: Mapping[str, Any]) -> StoredEvent:
    return StoredEvent(d["position"], d["stream"], d["version"], d["type"], d["schema_version"], d["data"], d["meta"],
                       d["recorded_at"], d["hash"])


def token_from_json(d: Mapping[str, Any]) -> TokenState:
    return TokenState(d["name"], d["role"], d["prefix"], d.get("expires_at"), "", d.get("granted_at", ""),
                      d.get("granted_by", ""), d.get("revoked_at"), d.get("revoked_by"))


def audit_from_json(d: Mapping[str, Any]) -> AuditReport:
    from projections.audit import AuditReport, Check  # the audit's module is large; only `audit` needs it

    first = d.get("first_failure")
    return AuditReport(d["ok"], tuple(Check(**c) for c in d.get("checks", ())), d.get("events_checked", 0),
                       d.get("last_hash", ""), Check(**first) if first else None)


def _inline(path: str) -> dict[str, Any] | None:
    """A small file's ``artifact`` with its bytes in it (``content_base64``, at most ``INLINE_MAX``): the
    register then costs one request and the server one commit. None for a folder or a larger file, which go
    by ``PUT /blobs`` (resumable, parallel, never read whole)."""
    if not os.path.isfile(path) or os.path.getsize(path) > INLINE_MAX:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(INLINE_MAX + 1)
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact source {path}: {exc.strerror or exc}") from None
    if len(data) > INLINE_MAX:  # it grew since the stat
        return None
    return {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data),
            "filename": os.path.basename(os.path.abspath(path)),
            "content_base64": base64.b64encode(data).decode("ascii")}


def _as_of(value: str | int | None) -> str | None:
    if value is None:
        return None
    return f"#{value}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _grace(seconds: float) -> str:
    return f"{seconds!r}s" if seconds != int(seconds) else f"{int(seconds)}s"


class RemoteCatalog:
    """The reads of ``Catalog`` (and, with ``as_of``, of ``PastCatalog``) over HTTP."""

    def __init__(self, registry: RemoteRegistry, as_of: str | None) -> None:
        self._reg = registry
        self._as_of = as_of

    def _q(self, **params: Any) -> dict[str, Any]:
        out = {k: v for k, v in params.items() if v is not None}
        if self._as_of is not None:
            out["as_of"] = self._as_of
        return out

    def get(self, ref: str) -> VersionRecord:
        text = str(ref)  # a bare NAME is its latest live version, as locally
        return version_from_json(self._reg._get("show", self._q(ref=text if "@" in text else f"{text}@latest")))

    def model(self, name: str, **_: Any) -> ModelRecord:
        return model_from_json(self._reg._get("show", self._q(ref=name)))

    def exists(self, name: str) -> bool:
        try:
            self.model(name)
        except ModelLedgerError:
            return False
        return True

    def list(self, *, search: str | None = None, tags: Mapping[str, str] | None = None, file: str | None = None,
             alias: str | None = None, include_deleted: bool = False, limit: int | None = None) -> list[ModelRecord]:
        found = self._reg._get("list", self._q(search=search, tag=[f"{k}={v}" for k, v in (tags or {}).items()],
                                               file=file, alias=alias, deleted=include_deleted, limit=limit))
        return [model_from_json(m) for m in found["models"]]

    def search(self, *, keyword: str | None = None, name: str | None = None, tags: Mapping[str, str] | None = None,
               file: str | None = None, alias: str | None = None, limit: int | None = None) -> list[VersionRecord]:
        found = self._reg._get("search", self._q(keyword=keyword, name=name, file=file, alias=alias, limit=limit,
                                                 tag=[f"{k}={v}" for k, v in (tags or {}).items()]))
        return [version_from_json(v) for v in found["versions"]]

    def best(self, name: str, metric: str, *, minimize: bool = False,
             tags: Mapping[str, str] | None = None) -> VersionRecord:
        return version_from_json(self._reg._get("best", self._q(name=name, metric=metric, min=minimize,
                                                                tag=[f"{k}={v}" for k, v in (tags or {}).items()])))


class RemoteRegistry:
    """``RemoteRegistry.open()``: the server at ``MLEDGER_URL``, as the holder of ``MLEDGER_TOKEN`` (or of the
    token in ``MLEDGER_TOKEN_FILE``)."""

    def __init__(self, url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wire = Wire(url, token, timeout=timeout)
        self.url = self.wire.url
        self._token = token
        self._timeout = timeout
        self._http: httpx.Client | None = None
        self._changes: dict[tuple[int, ...], list[dict[str, Any]]] = {}

    @classmethod
    def open(cls, url: str | None = None, token: str | None = None) -> RemoteRegistry:
        url = url or os.environ.get("MLEDGER_URL", "")
        check_url(url)  # a wrong URL is named before a token file is read
        if token is None:
            token = os.environ.get("MLEDGER_TOKEN") or None
        if token is None and os.environ.get("MLEDGER_TOKEN_FILE"):
            token = read_token_file(os.environ["MLEDGER_TOKEN_FILE"])
        return cls(url, token)

    @property
    def http(self) -> httpx.Client:
        """An httpx client, made on first use: uploads and downloads stream files through it."""
        if self._http is None:
            import httpx

            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self._timeout)
        return self._http

    def close(self) -> None:
        self.wire.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> RemoteRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------------------------
    def _unreachable(self, exc: BaseException) -> StoreError:
        return StoreError(f"cannot reach the server at {self.url}: {exc}")

    def _call(self, method: str, path: str, params: Mapping[str, Any] | None = None,
              body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> bytes:
        try:
            status, data = self.wire.request(method, f"{API}/{path}", params, body, headers)
        except Unreachable as exc:
            raise self._unreachable(exc) from None
        if status >= 400:
            raise _error(error_of(status, data))
        return data

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return json.loads(self._call("GET", path, params=params))

    def _post(self, path: str, body: Mapping[str, Any], key: str | None = None) -> Any:
        headers = {"Idempotency-Key": key} if key is not None else {}
        return json.loads(self._call("POST", path, body=dict(body), headers=headers))

    def _events(self, path: str, body: Mapping[str, Any], key: str | None) -> list[StoredEvent]:
        return [event_from_json(e) for e in self._post(path, body, key)["events"]]

    def _artifact(self, artifact: str) -> dict[str, Any]:
        text = str(artifact)
        if _URL_RE.match(text) and not text.lower().startswith("file://"):
            return {"source": text}
        path = text[len("file://"):] if text.lower().startswith("file://") else text
        if not os.path.exists(path):
            raise ArtifactError(f"artifact source not found: {text}")
        inline = _inline(path)
        if inline is not None:
            return inline
        import httpx

        from .server.client import upload_artifact

        try:
            spec, _sent = upload_artifact(self.http, path)
        except HTTPError as exc:
            raise _error(exc) from None
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return spec

    # -- writes -------------------------------------------------------------------------------------------
    def register(self, name: str, artifact: str, *, description: str = "", tags: Mapping[str, str] | None = None,
                 params: Mapping[str, Any] | None = None, structure: Mapping[str, Any] | None = None,
                 optimizer: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
                 run_id: str | None = None, wait: bool = True, timeout: float | None = None,
                 progress: Callable[[int], None] | None = None) -> VersionRecord:
        from eventstore import commands as c
        from eventstore.decider import precheck

        # The checks that need no state, before any byte is sent: a refused register uploads nothing (as a
        # local one copies nothing), and its error is the local one.
        precheck(c.Register(name, {"source": str(artifact)}, description, dict(tags or {}), dict(params or {}),
                            dict(structure or {}), dict(optimizer or {})))
        body = {"name": name, "artifact": self._artifact(artifact), "description": description,
                "tags": dict(tags or {}), "params": dict(params or {}), "structure": dict(structure or {}),
                "optimizer": dict(optimizer or {})}
        return version_from_json(self._post("register", body, idempotency_key))

    def update(self, ref: Any, *, params: Mapping[str, Any] | None = None, structure: Mapping[str, Any] | None = None,
               optimizer: Mapping[str, Any] | None = None, artifact: str | None = None, description: str | None = None,
               structure_patch: bool = False, optimizer_patch: bool = False, idempotency_key: str | None = None,
               run_id: str | None = None, wait: bool = True, timeout: float | None = None,
               progress: Callable[[int], None] | None = None) -> VersionRecord:
        from eventstore import commands as c
        from eventstore.decider import precheck

        precheck(c.Update(str(ref), None if params is None else dict(params),
                          None if structure is None else dict(structure),
                          None if optimizer is None else dict(optimizer), structure_patch, optimizer_patch,
                          None if artifact is None else {"source": str(artifact)}, description))
        body: dict[str, Any] = {"ref": str(ref), "structure_patch": structure_patch, "optimizer_patch": optimizer_patch}
        for key, value in (("params", params), ("structure", structure), ("optimizer", optimizer),
                           ("description", description)):
            if value is not None:
                body[key] = dict(value) if isinstance(value, Mapping) else value
        if artifact is not None:
            body["artifact"] = self._artifact(artifact)
        return version_from_json(self._post("update", body, idempotency_key))

    def tag(self, ref: Any, tags: Mapping[str, str] | None = None, *, idempotency_key: str | None = None,
            **more: str) -> list[StoredEvent]:
        return self._events("tag", {"ref": str(ref), "tags": {**dict(tags or {}), **more}}, idempotency_key)

    def untag(self, ref: Any, *keys: str, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self._events("untag", {"ref": str(ref), "keys": list(keys)}, idempotency_key)

    def metrics(self, ref: Any, metrics: Mapping[str, float] | None = None, *, idempotency_key: str | None = None,
                **more: float) -> list[StoredEvent]:
        return self._events("metrics", {"ref": str(ref), "metrics": {**dict(metrics or {}), **more}}, idempotency_key)

    def alias(self, ref: Any, alias: str, *, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self._events("alias", {"ref": str(ref), "alias": alias}, idempotency_key)

    def unalias(self, name: str, alias: str, *, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self._events("unalias", {"name": name, "alias": alias}, idempotency_key)

    def rollback(self, name: str, alias: str, *, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self._events("rollback", {"name": name, "alias": alias}, idempotency_key)

    def delete(self, ref: Any, reason: str = "", *, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self._events("delete", {"ref": str(ref), "reason": reason}, idempotency_key)

    def undelete(self, ref: Any, *, wait: bool = True, timeout: float | None = None,
                 idempotency_key: str | None = None) -> list[StoredEvent]:
        return self._events("undelete", {"ref": str(ref)}, idempotency_key)

    def retry(self, ref: Any, *, wait: bool = True, timeout: float | None = None,
              idempotency_key: str | None = None) -> VersionRecord:
        return version_from_json(self._post("retry", {"ref": str(ref)}, idempotency_key))

    def restore(self, name: str | None = None, *, as_of: str | int, dry_run: bool = False, wait: bool = True,
                timeout: float | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        return self._post("restore", {"name": name, "as_of": as_of, "dry_run": dry_run}, idempotency_key)

    def gc(self, grace_seconds: float = 7 * 86400, *, dry_run: bool = False,
           idempotency_key: str | None = None) -> dict[str, Any]:
        if grace_seconds < 0:
            raise ValidationError("the grace period cannot be negative")
        return self._post("gc", {"grace": _grace(grace_seconds), "dry_run": dry_run}, idempotency_key)

    def create_token(self, name: str, role: str, *, prefix: str = "", expires_in: float | None = None,
                     idempotency_key: str | None = None) -> tuple[TokenState, str | None]:
        body = {"name": name, "role": role, "prefix": prefix,
                "expires": None if expires_in is None else _grace(expires_in)}
        answer = self._post("tokens", body, idempotency_key)
        return token_from_json(answer), answer.get("secret")

    def revoke_token(self, name: str, reason: str = "", *, idempotency_key: str | None = None) -> list[StoredEvent]:
        return self._events("tokens/revoke", {"name": name, "reason": reason}, idempotency_key)

    def tokens(self) -> list[TokenState]:
        return [token_from_json(t) for t in self._get("tokens")["tokens"]]

    # -- reads --------------------------------------------------------------------------------------------
    def catalog(self, as_of: str | int | None = None) -> RemoteCatalog:
        return RemoteCatalog(self, _as_of(as_of))

    def get(self, ref: Any) -> VersionRecord:
        return self.catalog().get(str(ref))

    def model(self, name: str) -> ModelRecord:
        return self.catalog().model(name)

    def models(self, **filters: Any) -> list[ModelRecord]:
        return self.catalog().list(**filters)

    def search(self, **filters: Any) -> list[VersionRecord]:
        return self.catalog().search(**filters)

    def history(self, ref: Any, *, as_of: str | int | None = None) -> list[StoredEvent]:
        params = {"ref": str(ref)} | ({"as_of": _as_of(as_of)} if as_of is not None else {})
        answer = self._get("history", params)
        events = [event_from_json(e) for e in answer["events"]]
        self._changes[tuple(e.position for e in events)] = answer["changes"]
        return events

    def changes(self, events: list[StoredEvent]) -> list[dict[str, Any]]:
        """What each event of the last ``history`` changed (the server computed it with the history)."""
        known = self._changes.get(tuple(e.position for e in events))
        if known is None:
            raise ValidationError("over HTTP, changes() describes the events history() returned")
        return [{"event": e.to_json(), "changes": c} for e, c in zip(events, known, strict=True)]

    def diff(self, a: Any, b: Any, *, a_as_of: str | int | None = None,
             b_as_of: str | int | None = None) -> dict[str, Any]:
        params = {"a": str(a), "b": str(b), "a_as_of": _as_of(a_as_of), "b_as_of": _as_of(b_as_of)}
        return self._get("diff", {k: v for k, v in params.items() if v is not None})

    def log(self, since: int = 0, limit: int | None = None) -> Iterator[StoredEvent]:
        params = {"since": since} | ({"limit": limit} if limit is not None else {})
        for line in self._call("GET", "log", params=params).splitlines():
            if line:
                yield event_from_json(json.loads(line))

    def follow(self, since: int = 0, *, until: float | None = None) -> Iterator[StoredEvent]:
        """The events after ``since`` and then each new one as it is appended, from the server's event
        stream (``/log/stream``): for ever, or until the ``time.monotonic()`` deadline ``until``
        (``TimeoutError``). A cut connection or a restarted server is followed by a reconnection with
        ``Last-Event-ID`` set to the last position given, so nothing is missed and nothing is given twice.
        The first connection must succeed (``StoreError`` otherwise); a refusal (a revoked token) ends it."""
        position = since
        connected = False
        delay = 1.0
        while True:
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"no end of the wait after #{position}")
            # The server sends a comment at least every 15 s: a longer silence is a dead connection.
            read_timeout = 30.0 if left is None else max(0.05, min(left, 30.0))
            headers = {"Last-Event-ID": str(position)} if position else {}
            try:
                for event in self.wire.stream(f"{API}/log/stream", {"since": position}, headers,
                                              timeout=read_timeout):
                    connected = True
                    delay = 1.0
                    if event.id is None:
                        continue
                    stored = event_from_json(json.loads(event.data))
                    if stored.position <= position:
                        continue  # already given (a server that resent from an older position)
                    position = stored.position
                    yield stored
            except HTTPError as exc:
                raise _error(exc) from None
            except Unreachable as exc:
                left = None if until is None else until - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no end of the wait after #{position}") from None
                if not connected:
                    raise self._unreachable(exc) from None
            left = None if until is None else until - time.monotonic()
            time.sleep(delay if left is None else max(0.0, min(delay, left)))
            delay = min(delay * 2, RECONNECT_MAX)

    def head(self) -> int:
        return int(self._get("health")["head"])

    def audit(self, *, deep: bool = False, expected_hash: str | None = None, expect: Any = ()) -> AuditReport:
        if expected_hash is not None or expect:
            raise ValidationError("--expected-hash and --expect are checked against a local registry or an export")
        return audit_from_json(self._get("audit", {"deep": deep}))

    def wait(self, ref: Any, timeout: float | None = None) -> VersionRecord:
        """Until the version is stored (or failed): read it, then follow the server's event stream and read
        it again only when its model's stream gains an event, instead of polling."""
        limit = DEFAULT_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + limit
        since = self.head()  # before the read: an outcome appended in between is still seen on the stream
        version = self.get(ref)
        stream = STREAM_PREFIX + version.name
        pinned = f"{version.name}@{version.version}"  # an alias may move meanwhile; the version waited on not
        events: Iterator[StoredEvent] | None = None
        try:
            while True:
                if version.status == "failed":
                    raise ArtifactError(f"{version.ref}: the artifact could not be stored: "
                                        f"{version.artifact.get('error', 'unknown reason')}")
                if version.status != "pending":
                    return version
                if events is None:
                    events = self.follow(since, until=deadline)
                try:
                    event = next(events)
                except TimeoutError:
                    raise ArtifactError(f"{version.ref} is still pending after {limit:g} s (is a worker running "
                                        f"beside the server? `mledger retry {version.ref}` fetches it again)") from None
                if event.stream == stream:
                    version = self.get(pinned)
        finally:
            if events is not None:
                events.close()  # type: ignore[attr-defined]

    def pull(self, ref: Any, dest: str, *, overwrite: bool = False,
             progress: Callable[[int], None] | None = None) -> VersionRecord:
        """Download the artifact into a private temporary store, then write ``dest`` from it with the local
        pull's checks (destination rules, every digest verified); on failure nothing is left at ``dest``."""
        import httpx

        from workers.store import BlobStore

        from .server.client import download_blob

        version = self.get(ref)
        if version.status == "purged":
            raise PurgedError(f"{version.ref}: its artifact was purged by gc; the record remains")
        if version.status != "ready" or not version.artifact.get("digest"):
            raise ArtifactError(f"{version.ref} has no stored artifact (status {version.status})")
        kind = version.artifact.get("kind", "file")
        digests = [version.artifact["digest"]]
        if kind == "directory":
            listing = self._get("artifact", {"ref": version.ref})
            digests += sorted({f["digest"] for f in listing["files"]})
        with tempfile.TemporaryDirectory(prefix="mledger-pull-") as tmp:
            store = BlobStore(os.path.join(tmp, "store"))
            for digest in digests:
                part = os.path.join(tmp, "blob")
                try:
                    download_blob(self.http, digest, part)
                except httpx.HTTPError as exc:
                    raise self._unreachable(exc) from None
                except HTTPError as exc:
                    raise _error(exc) from None
                except ValueError as exc:
                    raise ArtifactError(str(exc)) from None
                store.put_file(part)
                os.unlink(part)
            store.pull(digests[0], kind, dest, overwrite=overwrite, progress=progress)
        return version

    # -- what only a registry's own machine does ----------------------------------------------------------
    def _local_only(self, what: str) -> ModelLedgerError:
        return ValidationError(f"{what} runs where the registry's database is, not over HTTP (MLEDGER_URL is set)")

    def export_log(self, *_: Any, **__: Any) -> Any:
        raise self._local_only("audit --export")

    def anchor(self) -> Any:
        raise self._local_only("audit --anchor")

    def restore_guards(self) -> Any:
        raise self._local_only("audit --restore-guards")

    def rebuild_projections(self) -> int:
        raise self._local_only("projections rebuild")
