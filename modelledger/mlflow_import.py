"""``mledger import mlflow``: bring a live MLflow model registry over, and again, incrementally.

MLflow is read through its own client (``MlflowClient``: a ``sqlite:///``, ``postgresql://`` or ``http(s)://``
tracking/registry URI) and its artifact repositories (``mlflow.artifacts.download_artifacts``), so whatever
MLflow can read, this can. Each model becomes one ``MirrorModel`` command (``eventstore.mirror``), decided
against this registry under the write lock: only the differences are appended, in one atomic batch per
model, under an idempotency key derived from the MLflow snapshot. So a second import of an unchanged
registry appends nothing, and one after changes in MLflow appends exactly those changes.

Artifacts are copied only for versions whose bytes are not here yet (new versions, and versions that were
still pending or failed in MLflow at the last import), deduplicated by content like any artifact. A version
MLflow marks FAILED_REGISTRATION, or whose artifacts cannot be downloaded, is imported as failed with the
reason. What cannot be represented here (a model name, tag or alias that this registry's rules refuse) is
reported, never dropped silently. MLflow is an optional extra (``modelledger[mlflow]``).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventstore.canonical import canonical_bytes
from eventstore.errors import ModelLedgerError, StoreError, ValidationError
from eventstore.mirror import MirroredVersion, MirrorModel
from eventstore.names import validate_alias, validate_name, validate_tag_key, validate_tags

from .registry import Registry

PAGE = 200


@dataclass
class ModelReport:
    name: str
    events: int = 0
    event_types: dict[str, int] = field(default_factory=dict)
    copied: int = 0  # artifacts copied into the store
    failed: list[str] = field(default_factory=list)  # versions imported as failed, with the reason
    skipped: list[str] = field(default_factory=list)  # what could not be represented here, and why

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "events": self.events, "event_types": self.event_types,
                "artifacts_copied": self.copied, "failed": self.failed, "skipped": self.skipped}


@dataclass
class ImportReport:
    source: str
    dry_run: bool
    models: list[ModelReport] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(m.events for m in self.models)

    @property
    def skipped(self) -> list[str]:
        return [s for m in self.models for s in m.skipped]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "dry_run": self.dry_run, "events": self.events,
                "models": [m.to_json() for m in self.models]}


def _client(tracking_uri: str, registry_uri: str | None) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ValidationError("importing from MLflow needs the mlflow extra: pip install 'modelledger[mlflow]'") from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)


def _paged(search: Callable[..., Any], **kwargs: Any) -> Iterator[Any]:
    token = None
    while True:
        page = search(max_results=PAGE, page_token=token, **kwargs)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _time(ms: Any) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _filter_string(name: str) -> str:
    # MLflow's filter grammar quotes with single quotes; a name valid here has none (eventstore.names).
    return f"name='{name}'"


def _keep_tags(tags: dict[str, str], where: str, report: ModelReport) -> dict[str, str]:
    kept = {}
    for key, value in sorted((tags or {}).items()):
        try:
            validate_tag_key(key)
            validate_tags({key: value})
        except ValidationError as exc:
            report.skipped.append(f"{where} tag {key!r}: {exc}")
            continue
        kept[key] = value
    return kept


def _origin(uri: str, **fields: Any) -> dict[str, Any]:
    return {"system": "mlflow", "uri": uri, **{k: str(v) for k, v in fields.items() if v not in (None, "")}}


def _download(client: Any, tracking_uri: str, name: str, version: str, into: str) -> str:
    import mlflow.artifacts

    uri = client.get_model_version_download_uri(name, version)
    return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=into, tracking_uri=tracking_uri)


def _mask(uri: str) -> str:
    """A URI as shown and recorded: without a password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def import_mlflow(
    reg: Registry,
    tracking_uri: str,
    *,
    registry_uri: str | None = None,
    models: Iterable[str] = (),
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    shown = _mask(registry_uri or tracking_uri)
    report = ImportReport(shown, dry_run)
    wanted = list(models)
    for uri in {tracking_uri, registry_uri or tracking_uri}:
        # MLflow's SQLite store creates an empty registry (and its folders) for a file that is not there: a
        # mistyped path would import nothing and leave a stray database behind.
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise StoreError(f"cannot read the MLflow registry at {_mask(uri)}: no such database file")
    try:
        client = _client(tracking_uri, registry_uri)
        if wanted:
            found = [client.get_registered_model(n) for n in wanted]
        else:
            found = list(_paged(client.search_registered_models))
    except ModelLedgerError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's errors (MlflowException, SQLAlchemy, HTTP) in one place
        raise StoreError(_one_line(f"cannot read the MLflow registry at {shown}: {type(exc).__name__}: {exc}")) from None
    say = progress or (lambda _line: None)
    for index, rm in enumerate(sorted(found, key=lambda m: m.name), 1):
        mr = ModelReport(rm.name)
        report.models.append(mr)
        try:
            validate_name(rm.name)
        except ValidationError as exc:
            mr.skipped.append(f"model {rm.name!r}: {exc}")
            say(f"[{index}/{len(found)}] {rm.name}: skipped ({exc})")
            continue
        try:
            _import_model(reg, client, tracking_uri, shown, rm, mr, dry_run)
        except ModelLedgerError as exc:
            mr.skipped.append(f"model {rm.name!r}: {exc}")
        say(f"[{index}/{len(found)}] {rm.name}: {mr.events} event(s), {mr.copied} artifact(s) copied"
            + (f", {len(mr.failed)} failed" if mr.failed else "") + (f", {len(mr.skipped)} skipped" if mr.skipped else ""))
    return report


def _import_model(reg: Registry, client: Any, tracking_uri: str, shown: str, rm: Any, mr: ModelReport,
                  dry_run: bool) -> None:
    name = rm.name
    here = reg.catalog().model(name) if reg.catalog().exists(name) else None
    have = {v.version: v for v in (here.versions or ())} if here is not None else {}
    mlflow_versions = sorted(_paged(client.search_model_versions, filter_string=_filter_string(name)),
                             key=lambda mv: int(mv.version))
    scratch = tempfile.mkdtemp(prefix="mledger-mlflow-")
    try:
        versions = []
        for mv in mlflow_versions:
            number = int(mv.version)
            status = str(mv.status or "READY")
            origin = _origin(shown, created_at=_time(mv.creation_timestamp), updated_at=_time(mv.last_updated_timestamp),
                             user=mv.user_id, run_id=mv.run_id, source=mv.source, status=status,
                             stage=mv.current_stage)
            known = have.get(number)
            artifact, failure = None, None
            needs_bytes = known is None or known.status in ("failed", "pending")
            if status == "FAILED_REGISTRATION":
                failure = _one_line(f"FAILED_REGISTRATION in MLflow: {mv.status_message or 'no message'}")
            elif status == "PENDING_REGISTRATION":
                failure = "PENDING_REGISTRATION in MLflow at the import (imported again once READY)"
            elif needs_bytes and dry_run:
                artifact = {"source": mv.source, "digest": "sha256:" + "0" * 64}  # what would be copied
            elif needs_bytes:
                artifact, failure = _copy(reg, client, tracking_uri, name, mv, scratch)
                if artifact is not None:
                    mr.copied += 1
            if failure and known is None:
                mr.failed.append(f"{name}@{number}: {failure}")
            versions.append(MirroredVersion(number, mv.description or "",
                                            _keep_tags(dict(mv.tags or {}), f"{name}@{number}", mr),
                                            str(mv.source or ""), artifact, failure, origin))
        aliases = {}
        for alias, version in sorted((getattr(rm, "aliases", None) or {}).items()):
            try:
                aliases[validate_alias(alias)] = int(version)
            except ValidationError as exc:
                mr.skipped.append(f"{name} alias {alias!r}: {exc}")
        command = MirrorModel(
            name, rm.description or "", _keep_tags(dict(rm.tags or {}), name, mr), aliases, tuple(versions),
            _origin(shown, created_at=_time(rm.creation_timestamp), updated_at=_time(rm.last_updated_timestamp)),
        )
        if dry_run:
            planned = reg.preview(command)
            _count(mr, [t for t, _ in planned.events])
            return
        key = "mlflow:" + hashlib.sha256(canonical_bytes({"uri": shown, "model": _snapshot(command)})).hexdigest()
        outcome = reg.mirror(command, idempotency_key=key)
        if not outcome.replayed:
            _count(mr, [e.type for e in outcome.events])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _snapshot(command: MirrorModel) -> dict[str, Any]:
    """What the idempotency key covers: the MLflow side as read (not where our copy of the bytes went)."""
    return {
        "name": command.name, "description": command.description, "tags": command.tags, "aliases": command.aliases,
        "versions": [{"version": v.version, "description": v.description, "tags": v.tags, "source": v.source,
                      "digest": (v.artifact or {}).get("digest"), "failure": v.failure, "origin": v.origin}
                     for v in command.versions],
    }


def _one_line(text: str, limit: int = 900) -> str:
    """A reason as the log keeps it: MLflow's messages span lines ("##### File gone #####")."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(mr: ModelReport, types: list[str]) -> None:
    mr.events += len(types)
    for t in types:
        mr.event_types[t] = mr.event_types.get(t, 0) + 1


def _copy(reg: Registry, client: Any, tracking_uri: str, name: str, mv: Any,
          scratch: str) -> tuple[dict[str, Any] | None, str | None]:
    """Download a version's artifacts and ingest them; (facts, None) or (None, why not)."""
    from workers import ingest

    into = tempfile.mkdtemp(dir=scratch)
    try:
        local = _download(client, tracking_uri, name, mv.version, into)
    except Exception as exc:  # noqa: BLE001 - any MLflow/artifact-repository error: the bytes are gone
        return None, _one_line(f"its artifacts could not be downloaded from MLflow: {type(exc).__name__}: {exc}")
    try:
        facts = ingest.ingest_artifact(reg.store(), local)
    except ModelLedgerError as exc:
        return None, _one_line(f"its artifacts could not be stored: {exc}")
    finally:
        shutil.rmtree(into, ignore_errors=True)
    facts["source"] = str(mv.source or "")
    return facts, None
