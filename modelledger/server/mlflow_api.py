"""MLflow's Model Registry REST API on ``mledger serve``, so MLflow code talks to modelledger unchanged.

``MlflowClient(registry_uri="http://our-server")`` (token from ``MLFLOW_TRACKING_TOKEN``, sent as
``Authorization: Bearer``) calls the routes below with MLflow's JSON shapes; each call is a modelledger
command or read, so everything that arrives this way is an ordinary event (history, as-of, diff, audit,
restore, the web UI). Errors have MLflow's shape and codes (``{"error_code": "RESOURCE_DOES_NOT_EXIST",
"message": ...}``). What differs from MLflow, and why, is in ``docs/mlflow.md``:

- stages (deprecated in MLflow) are aliases named after them (``staging``, ``production``, ``archived``);
- renaming a model is refused (a name is a stream here); a description change is a ``Described`` event;
- a created version's ``source`` is ingested like any artifact, from a path or URL under the operator's
  ``MLEDGER_SOURCES`` only; ``get-download-uri`` answers a URL this server serves through MLflow's artifact
  list/get contract (``/api/2.0/mlflow-artifacts/artifacts``);
- MLflow's client re-sends a POST that timed out (up to 7 times, with no idempotency key): a create of a
  version is keyed by the caller and the request, so a re-sent create within ``RETRY_WINDOW`` returns the
  version the first one made instead of making another.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from eventstore.canonical import canonical_bytes
from eventstore.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ModelLedgerError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from eventstore.mirror import MirrorModel
from modelledger.registry import Registry
from projections.records import ModelRecord, VersionRecord
from workers.ingest import describe

from .auth import Principal
from .fetch import fetch_small
from .mlflow_run_ids import run_ids
from .routes import acting, caller, registry
from .uploads import allowed_source

MLFLOW = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
RETRY_WINDOW = 600.0  # seconds: MLflow's 7 retries with back-off span about 4 minutes
STAGES = {"none": "None", "staging": "Staging", "production": "Production", "archived": "Archived"}
STAGE_ALIASES = ("staging", "production", "archived")
# MLflow's own limits: models 100 by default, at most 1,000 a page; versions 10,000 by default, at most 200,000.
MODELS_PAGE = (100, 1_000)
VERSIONS_PAGE = (10_000, 200_000)

router = APIRouter(tags=["mlflow"])


class MlflowError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def error_response(exc: Exception) -> JSONResponse:
    """MLflow's error body for one of ours (MLflow's client raises ``MlflowException`` with the code)."""
    if isinstance(exc, MlflowError):
        code, status, message = exc.code, exc.status, exc.message
    elif isinstance(exc, AlreadyExistsError):
        code, status, message = "RESOURCE_ALREADY_EXISTS", 400, str(exc)
    elif isinstance(exc, NotFoundError):
        code, status, message = "RESOURCE_DOES_NOT_EXIST", 404, str(exc)
    elif isinstance(exc, AuthenticationError):
        code, status, message = "UNAUTHENTICATED", 401, str(exc)
    elif isinstance(exc, PermissionDeniedError):
        code, status, message = "PERMISSION_DENIED", 403, str(exc)
    elif isinstance(exc, ValidationError):
        code, status, message = "INVALID_PARAMETER_VALUE", 400, str(exc)
    elif isinstance(exc, ModelLedgerError):
        status = 409 if exc.exit_code == 4 else 500
        code = "INVALID_STATE" if status == 409 else "INTERNAL_ERROR"
        message = str(exc)
    else:
        code, status, message = "INTERNAL_ERROR", 500, f"{type(exc).__name__}"
    return JSONResponse({"error_code": code, "message": message.splitlines()[0] if message else code},
                        status_code=status)


# -- shapes --------------------------------------------------------------------------------------------

def _ms(stamp: str | None) -> int | None:
    if not stamp:
        return None
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _kv(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def _stage(v: VersionRecord) -> str:
    if not v.aliases:
        return "None"
    for alias in STAGE_ALIASES:
        if alias in v.aliases:
            return STAGES[alias]
    return "None"


_STATUS = {"ready": "READY", "pending": "PENDING_REGISTRATION", "failed": "FAILED_REGISTRATION",
           "purged": "READY"}


def _run_id(reg: Registry, v: VersionRecord) -> str:
    return run_ids(reg.registry_id).of(reg.recorder, (v.position,))[0]


def model_version(reg: Registry, v: VersionRecord, *, aliases: bool = True, run_id: str | None = None) -> dict[str, Any]:
    """MLflow's shape of a version: an empty field is left out, except the description and run id, which
    MLflow's server sends even when empty (``""``). Built field by field (no dict filtered afterwards): a search
    shapes 100 of these per answer."""
    out: dict[str, Any] = {"name": v.name, "version": str(v.version)}
    created = _ms(v.created_at)
    if created is not None:
        out["creation_timestamp"] = out["last_updated_timestamp"] = created
    if v.created_by:
        out["user_id"] = v.created_by
    out["current_stage"] = _stage(v)
    out["description"] = v.description
    source = v.artifact.get("source")
    if source:
        out["source"] = source
    out["run_id"] = _run_id(reg, v) if run_id is None else run_id
    out["status"] = _STATUS.get(v.status, "READY")
    if v.tags:
        out["tags"] = _kv(v.tags)
    if aliases and v.aliases:
        out["aliases"] = sorted(v.aliases)
    if v.status == "failed" and v.artifact.get("error"):
        out["status_message"] = v.artifact["error"]
    return out


def _latest_per_stage(reg: Registry, m: ModelRecord, stages: list[str] | None = None) -> list[VersionRecord]:
    """MLflow's latest version per stage. A stage is an alias here (``staging``...), so its latest is the version
    that alias names; the latest of "None" is the newest live version no stage alias names. Read from the
    model's row (``m``, without its versions) and the few versions it names: building the record of every
    version took 14.5 ms per call for a model of 1,000 versions (in-process, CPU), and MlflowClient's
    ``set_model_version_tag`` asks for the model first on every call. If an alias moved between the reads, the
    model's versions are read whole in one snapshot instead."""
    wanted = {STAGES.get(s.lower(), s) for s in stages} if stages else None
    staged: dict[int, str] = {}
    for alias in STAGE_ALIASES:  # named by two stage aliases: the first one's stage, as ``_stage``
        number = m.aliases.get(alias)
        if number is not None:
            staged.setdefault(number, STAGES[alias])

    def live(number: int) -> VersionRecord | None:
        try:
            v = reg.get(f"{m.name}@{number}")
        except NotFoundError:
            return None
        return None if v.deleted else v

    found: list[VersionRecord] = []
    for number, stage in staged.items():
        v = live(number) if wanted is None or stage in wanted else None
        if v is not None:
            found.append(v)
    if wanted is None or "None" in wanted:
        number = m.latest or 0
        while number > 0:
            v = live(number) if number not in staged else None
            if v is not None:
                found.append(v)
                break
            number -= 1
    if any(_stage(v) != staged.get(v.version, "None") for v in found):
        return _latest_of(reg.model(m.name), wanted)
    return sorted(found, key=lambda v: v.version)


def _latest_of(m: ModelRecord, wanted: set[str] | None) -> list[VersionRecord]:
    """``_latest_per_stage`` over a model read with all its versions."""
    latest: dict[str, VersionRecord] = {}
    for v in m.versions or ():
        stage = _stage(v)
        if v.deleted or (wanted is not None and stage not in wanted):
            continue
        if stage not in latest or v.version > latest[stage].version:
            latest[stage] = v
    return sorted(latest.values(), key=lambda v: v.version)


def registered_model(reg: Registry, m: ModelRecord) -> dict[str, Any]:
    """MLflow's shape of a model, from its row (``catalog().model(name, versions=False)``)."""
    out: dict[str, Any] = {
        "name": m.name, "creation_timestamp": _ms(m.created_at), "last_updated_timestamp": _ms(m.updated_at),
        "description": m.description, "tags": _kv(m.tags),
        "aliases": [{"alias": a, "version": str(n)} for a, n in sorted(m.aliases.items())],
        "latest_versions": [model_version(reg, v) for v in _latest_per_stage(reg, m)],
    }
    return {k: val for k, val in out.items() if val not in ("", None, [])}


# -- the filter grammar ------------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"\s*(?P<key>name|run_id|source_path|tags?\.(?:`[^`]+`|[\w.:-]+))\s*"
    r"(?P<op>=|!=|LIKE|ILIKE|IN)\s*"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\((?:\s*'(?:[^'\\]|\\.)*'\s*,?)+\))\s*",
    re.IGNORECASE,
)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse_filter(text: str | None) -> list[tuple[str, str, Any]]:
    """MLflow's search filter (``name='x' AND tags.k='v'``...) → (key, op, value) clauses; anything else is
    MLflow's INVALID_PARAMETER_VALUE."""
    if not text or not text.strip():
        return []
    clauses = []
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE):
        m = _CLAUSE.fullmatch(part)
        if m is None:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid filter '{text}': cannot parse {part.strip()!r}")
        key, op, raw = m.group("key"), m.group("op").upper(), m.group("value")
        if key.lower().startswith("tag"):
            key = "tags." + key.split(".", 1)[1].strip("`")
        else:
            key = key.lower()
        value: Any = [_unquote(v.strip()) for v in re.findall(r"'(?:[^'\\]|\\.)*'", raw)] if op == "IN" else _unquote(raw)
        if op == "IN" and key != "run_id":
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid filter '{text}': IN is for run_id")
        clauses.append((key, op, value))
    return clauses


def _like(pattern: str, text: str, insensitive: bool) -> bool:
    glob = "".join("*" if c == "%" else "?" if c == "_" else "[" + c + "]" if c in "[]*?" else c for c in pattern)
    return fnmatch.fnmatchcase(text.lower(), glob.lower()) if insensitive else fnmatch.fnmatchcase(text, glob)


def _matches(clauses: list[tuple[str, str, Any]], name: str, tags: dict[str, str], run_id: str = "",
             source: str = "") -> bool:
    for key, op, value in clauses:
        subject = {"name": name, "run_id": run_id, "source_path": source}.get(key)
        if key.startswith("tags."):
            subject = tags.get(key[5:])
            if subject is None:
                if op == "!=":
                    continue  # MLflow: a model without the tag is not 'tag = v' (its prompt filter relies on it)
                return False
        if op == "=" and subject != value or op == "!=" and subject == value:
            return False
        if op in ("LIKE", "ILIKE") and not _like(value, subject or "", op == "ILIKE"):
            return False
        if op == "IN" and subject not in value:
            return False
    return True


def _page(items: list[Any], max_results: Any, token: str | None,
          limits: tuple[int, int]) -> tuple[list[Any], str | None]:
    default, most = limits
    try:
        limit = int(max_results) if max_results not in (None, "") else default
        start = int(token) if token else 0
    except ValueError:
        raise MlflowError("INVALID_PARAMETER_VALUE", "max_results and page_token must be numbers") from None
    if not 1 <= limit <= most or start < 0:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"max_results must be 1 to {most}")
    page = items[start:start + limit]
    return page, str(start + limit) if start + limit < len(items) else None


# -- helpers ------------------------------------------------------------------------------------------

def _who(request: Request) -> Principal:
    return caller(request, request.headers.get("authorization"))


def _field(body: dict[str, Any], key: str, *, required: bool = True) -> Any:
    value = body.get(key)
    if required and (value is None or value == ""):
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Missing value for required parameter '{key}'.")
    return value


def _number(value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Model version must be an integer, got '{value}'") from None
    if number < 1:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Model version must be positive, got '{value}'")
    return number


async def _body(request: Request) -> dict[str, Any]:
    return parse_body(request, b"" if request.method == "GET" else await request.body())


def parse_body(request: Request, raw: bytes) -> dict[str, Any]:
    """A call's parameters: the query of a GET (or of a call sent without a body), else its JSON object."""
    if request.method == "GET" or not raw.strip():
        return dict(request.query_params)  # MLflow sends some calls (delete, test) without a body
    try:
        data = json.loads(raw)
    except ValueError:
        raise MlflowError("MALFORMED_REQUEST", "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise MlflowError("MALFORMED_REQUEST", "the request body must be a JSON object")
    return data


def _model_row(reg: Registry, name: str) -> ModelRecord:
    """A model without its versions' records (``registered_model`` reads the few it shows)."""
    return reg.catalog().model(name, versions=False)


def _version(reg: Registry, name: str, number: int) -> VersionRecord:
    v = reg.get(f"{name}@{number}")
    if v.deleted:
        raise NotFoundError(f"Model Version (name={name}, version={number}) not found")
    return v


def _tags_of(items: Any) -> dict[str, str]:
    if items in (None, ""):
        return {}
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        raise MlflowError("INVALID_PARAMETER_VALUE", "tags must be a list of {key, value}")
    return {str(t.get("key")): str(t.get("value", "")) for t in items}


def _create_key(who: Principal, body: dict[str, Any]) -> str:
    """The idempotency key of a create MLflow sent without one, before its generation (``_created``): the
    caller and the request."""
    return "mlflow-create:" + hashlib.sha256(canonical_bytes({"actor": who.name, "request": body})).hexdigest()


def _created(key: str, register: Callable[[str], VersionRecord]) -> VersionRecord:
    """``register(key:generation)``, the generation moving on while what it returns is the first result of an
    earlier request made more than ``RETRY_WINDOW`` before this call (the same request made again later is a
    new version, as in MLflow; a re-sent create within the window returns the version the first one made,
    appending nothing). ``register`` looks the key up itself (its retry check): asking first here as well cost
    a create a second write transaction and a second fingerprint of the request (in-process, cProfile: 0.34
    of 4.7 ms). A version this call made is never taken for an old one: its ``created_at`` is its append's
    time, which is not before ``asked`` (the log's timestamps never go backwards)."""
    asked = datetime.now(UTC)
    generation = 0
    while True:
        v = register(f"{key}:{generation}")
        made = datetime.fromisoformat(v.created_at.replace("Z", "+00:00")) if v.created_at else asked
        if (asked - made).total_seconds() <= RETRY_WINDOW:
            return v
        generation += 1


# -- registered models --------------------------------------------------------------------------------

def create_registered_model(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    reg = acting(request, who)
    command = MirrorModel(name, body.get("description") or "", _tags_of(body.get("tags")), create_only=True)
    reg.mirror(command)
    return {"registered_model": registered_model(reg, _model_row(reg, name))}


def get_registered_model(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("reader")
    reg = registry(request)
    m = _model_row(reg, _field(body, "name"))
    if m.deleted:
        raise NotFoundError(f"Registered Model with name={m.name} not found")
    return {"registered_model": registered_model(reg, m)}


def search_registered_models(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("reader")
    reg = registry(request)
    clauses = parse_filter(body.get("filter"))
    for key, _, _ in clauses:
        if key not in ("name",) and not key.startswith("tags."):
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid attribute key '{key}' for registered models")
    exact_tags = {k[5:]: v for k, op, v in clauses if k.startswith("tags.") and op == "="}
    found = [m for m in reg.models(tags=exact_tags or None) if _matches(clauses, m.name, m.tags)]
    page, token = _page(found, body.get("max_results"), body.get("page_token"), MODELS_PAGE)
    out: dict[str, Any] = {"registered_models": [registered_model(reg, _model_row(reg, m.name)) for m in page]}
    if token:
        out["next_page_token"] = token
    return out


def refuse_rename(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("writer")
    raise MlflowError("INVALID_PARAMETER_VALUE",
                      "a registered model cannot be renamed here: a name is the stream of its audited history "
                      "(see docs/mlflow.md)")


def _description(body: dict[str, Any]) -> str:
    value = body.get("description")
    if value is None:
        return ""  # MLflow's client sends no field for an empty description
    if not isinstance(value, str):
        raise MlflowError("INVALID_PARAMETER_VALUE", "description must be text")
    return value


def update_registered_model(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """A new description: a ``Described`` event (nothing if it says that already)."""
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    reg = acting(request, who)
    reg.describe(name, _description(body))
    return {"registered_model": registered_model(reg, _model_row(reg, name))}


def update_model_version(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    number = _number(_field(body, "version"))
    reg = acting(request, who)
    reg.describe(f"{name}@{number}", _description(body))
    return {"model_version": model_version(reg, _version(reg, name, number))}


def delete_registered_model(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    acting(request, who).delete(name, "deleted through the MLflow API")
    return {}


def get_latest_versions(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("reader")
    reg = registry(request)
    stages = body.get("stages")
    if isinstance(stages, str):
        stages = [stages]
    m = _model_row(reg, _field(body, "name"))
    return {"model_versions": [model_version(reg, v) for v in _latest_per_stage(reg, m, stages)]}


def set_registered_model_tag(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    acting(request, who).tag(name, {_field(body, "key"): str(body.get("value", ""))})
    return {}


def delete_registered_model_tag(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    acting(request, who).untag(name, _field(body, "key"))
    return {}


def set_alias(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    number = _number(_field(body, "version"))
    acting(request, who).alias(f"{name}@{number}", _field(body, "alias"))
    return {}


def delete_alias(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    acting(request, who).unalias(name, _field(body, "alias"))
    return {}


def get_by_alias(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("reader")
    reg = registry(request)
    name, alias = _field(body, "name"), _field(body, "alias")
    m = reg.catalog().model(name, versions=False)
    if alias not in m.aliases:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Registered model alias {alias} not found.")
    return {"model_version": model_version(reg, reg.get(f"{name}@{m.aliases[alias]}"))}


# -- model versions -----------------------------------------------------------------------------------

def create_model_version(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    source = _field(body, "source")
    who.require_model(name)
    reg = acting(request, who)
    try:  # the model's own row, not its versions (a model of 1,000 versions built 1,000 records here)
        missing = reg.catalog().model(name, versions=False).deleted
    except NotFoundError:
        missing = True
    if missing:
        raise NotFoundError(f"Registered Model with name={name} not found")
    path = allowed_source(reg.sources, source)
    tags = _tags_of(body.get("tags"))
    key = _create_key(who, {k: body.get(k) for k in ("name", "source", "run_id", "tags", "description", "run_link")})
    artifact: str | dict[str, Any] = path
    if reg.embedded:
        # A small file is fetched with one GET and committed with the version (the tiered store's deferring
        # view), as an upload; the recorded source is still the URL (retry and restore fetch it again).
        store = reg.store()
        view = store.deferring() if hasattr(store, "deferring") else store
        info = fetch_small(view, path, origins=getattr(request.app.state, "origins", None))
        if info is not None:
            reg, artifact = reg.with_store(view), describe(view, info, path)
    # The record register returns is the version as its commit left it (or, for a retry, as it is now): no
    # second read of it (~0.1 ms of a create's ~1.3 ms in-process).
    v = _created(key, lambda k: reg.register(name, artifact, description=body.get("description") or "", tags=tags,
                                             idempotency_key=k, run_id=body.get("run_id") or None, wait=False))
    return {"model_version": model_version(reg, v)}


def get_model_version(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("reader")
    reg = registry(request)
    return {"model_version": model_version(reg, _version(reg, _field(body, "name"), _number(_field(body, "version"))))}


def search_model_versions(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("reader")
    reg = registry(request)
    clauses = parse_filter(body.get("filter"))
    names = {v for k, op, v in clauses if k == "name" and op == "="}
    exact_tags = {k[5:]: v for k, op, v in clauses if k.startswith("tags.") and op == "="}
    found = reg.search(name=next(iter(names)) if len(names) == 1 else None, tags=exact_tags or None)
    index = run_ids(reg.registry_id)
    if any(k == "run_id" for k, _, _ in clauses):
        ids = index.of(reg.recorder, [v.position for v in found])
        found = [v for v, rid in zip(found, ids, strict=True)
                 if _matches(clauses, v.name, v.tags, rid, v.artifact.get("source", ""))]
    else:
        found = [v for v in found if _matches(clauses, v.name, v.tags, "", v.artifact.get("source", ""))]
    found.sort(key=lambda v: (v.name, -v.version))
    page, token = _page(found, body.get("max_results"), body.get("page_token"), VERSIONS_PAGE)
    # As MLflow's own search: versions without their aliases (get_model_version has them); the page's run ids
    # in one call.
    ids = index.of(reg.recorder, [v.position for v in page])
    out: dict[str, Any] = {"model_versions": [model_version(reg, v, aliases=False, run_id=rid)
                                              for v, rid in zip(page, ids, strict=True)]}
    if token:
        out["next_page_token"] = token
    return out


def delete_model_version(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    number = _number(_field(body, "version"))
    acting(request, who).delete(f"{name}@{number}", "deleted through the MLflow API")
    return {}


def transition_stage(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    number = _number(_field(body, "version"))
    stage = str(_field(body, "stage")).lower()
    if stage not in STAGES:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid Model Version stage: {body.get('stage')}.")
    reg = acting(request, who)
    v = _version(reg, name, number)
    for alias in STAGE_ALIASES:
        if alias in v.aliases and alias != stage:
            reg.unalias(name, alias)
    if stage != "none":
        m = reg.catalog().model(name, versions=False)
        if str(body.get("archive_existing_versions", "")).lower() == "true" and stage in m.aliases \
                and m.aliases[stage] != number and stage != "archived":
            reg.alias(f"{name}@{m.aliases[stage]}", "archived")
        reg.alias(f"{name}@{number}", stage)
    return {"model_version": model_version(reg, reg.get(f"{name}@{number}"))}


def set_model_version_tag(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    number = _number(_field(body, "version"))
    acting(request, who).tag(f"{name}@{number}", {_field(body, "key"): str(body.get("value", ""))})
    return {}


def delete_model_version_tag(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    name = _field(body, "name")
    who.require_model(name)
    number = _number(_field(body, "version"))
    acting(request, who).untag(f"{name}@{number}", _field(body, "key"))
    return {}


def get_download_uri(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("reader")
    reg = registry(request)
    name, number = _field(body, "name"), _number(_field(body, "version"))
    _version(reg, name, number)
    base = str(request.base_url).rstrip("/")
    return {"artifact_uri": f"{base}{ARTIFACTS}/models/{name}/{number}"}


# -- MLflow's artifact list/get contract, over a version's stored bytes ---------------------------------

def _artifact_files(reg: Registry, name: str, number: int) -> list[tuple[str, str, int]]:
    """(path, digest, size) of every file of a version's artifact; a single file is named as its source."""
    v = _version(reg, name, number)
    art = v.artifact
    if v.status not in ("ready",) or not art.get("digest"):
        raise NotFoundError(f"{name}@{number} has no stored artifact (status {v.status})")
    if art.get("kind") == "directory":
        return [(f.path, f.digest, f.size) for f in reg.store().manifest(art["digest"])]
    base = posixpath.basename(str(art.get("source", "")).rstrip("/")) or "artifact"
    return [(base, art["digest"], int(art.get("size") or 0))]


def _split(path: str) -> tuple[str, int, str]:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 3 or parts[0] != "models" or ".." in parts:
        raise NotFoundError(f"no artifact at {path!r}")
    # A model name may hold one '/': the version is the first all-digit part after "models/".
    for i in range(2, min(len(parts), 4)):
        if parts[i].isdigit():
            return "/".join(parts[1:i]), int(parts[i]), "/".join(parts[i + 1:])
    raise NotFoundError(f"no artifact at {path!r}")


def list_artifacts(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("reader")
    reg = registry(request)
    name, number, inner = _split(str(body.get("path", "")))
    files = _artifact_files(reg, name, number)
    prefix = inner.strip("/") + "/" if inner.strip("/") else ""
    entries: dict[str, dict[str, Any]] = {}
    for path, _, size in files:
        if path == inner.strip("/"):
            return {"files": [{"path": posixpath.basename(path), "is_dir": False, "file_size": size}]}
        if not path.startswith(prefix):
            continue
        head, _, rest = path[len(prefix):].partition("/")
        if rest:
            entries.setdefault(head, {"path": head, "is_dir": True})
        else:
            entries[head] = {"path": head, "is_dir": False, "file_size": size}
    return {"files": [entries[k] for k in sorted(entries)]}


def download_artifact(request: Request, body: dict[str, Any], path: str) -> StreamingResponse:
    _who(request).require("reader")
    reg = registry(request)
    name, number, inner = _split(path)
    for file_path, digest, size in _artifact_files(reg, name, number):
        if file_path == inner:
            handle = reg.store().open_blob(digest)

            return StreamingResponse(_chunks(handle), media_type="application/octet-stream",
                                     headers={"Content-Length": str(size), "ETag": f'"{digest}"'})
    raise NotFoundError(f"{name}@{number} has no file {inner!r}")


# -- webhooks (MLflow's webhook API over eventstore/webhooks.py) ---------------------------------------

def _hook_json(w: Any) -> dict[str, Any]:
    events = []
    for name in w.events:
        entity, _, action = name.partition(".")
        events.append({"entity": entity.upper(), "action": action.upper()} if action else {"entity": name})
    return {"webhook_id": w.webhook_id, "name": w.name, "description": w.description, "url": w.url,
            "events": events, "status": w.status, "creation_timestamp": _ms(w.created_at),
            "last_updated_timestamp": _ms(w.updated_at)}


def _hook_events(items: Any) -> list[str]:
    if not isinstance(items, list) or not items:
        raise MlflowError("INVALID_PARAMETER_VALUE", "events must be a non-empty list of {entity, action}")
    out = []
    for item in items:
        if not isinstance(item, dict) or not item.get("entity") or not item.get("action"):
            raise MlflowError("INVALID_PARAMETER_VALUE", "each event is {entity, action}")
        out.append(f"{str(item['entity']).lower()}.{str(item['action']).lower()}")
    return out


def _no_secret(body: dict[str, Any]) -> None:
    if body.get("secret"):
        raise MlflowError("INVALID_PARAMETER_VALUE", "this server derives each webhook's signing secret from its "
                          "operator's key: leave `secret` out and read it with `mledger webhook secret NAME`")


def create_webhook(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    who = _who(request)
    who.require("admin")  # a webhook makes the server send the registry's events elsewhere
    _no_secret(body)
    reg = acting(request, who)
    state, _secret = reg.create_webhook(_field(body, "name"), _field(body, "url"), _hook_events(body.get("events")),
                                        description=body.get("description") or "")
    if str(body.get("status", "ACTIVE")).upper() == "DISABLED":
        from eventstore.webhooks import UpdateWebhook

        reg.change_webhook(UpdateWebhook(state.webhook_id, status="DISABLED"))
        state = reg.webhook(state.webhook_id)
    return {"webhook": _hook_json(state)}


def list_webhooks(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    _who(request).require("admin")
    hooks = registry(request).webhooks()
    page, token = _page(hooks, body.get("max_results"), body.get("page_token"), MODELS_PAGE)
    out: dict[str, Any] = {"webhooks": [_hook_json(w) for w in page]}
    if token:
        out["next_page_token"] = token
    return out


def get_webhook(request: Request, body: dict[str, Any], webhook_id: str) -> dict[str, Any]:
    _who(request).require("admin")
    return {"webhook": _hook_json(registry(request).webhook(webhook_id))}


def update_webhook(request: Request, body: dict[str, Any], webhook_id: str) -> dict[str, Any]:
    from eventstore.webhooks import UpdateWebhook

    who = _who(request)
    who.require("admin")
    _no_secret(body)
    if body.get("name"):
        raise MlflowError("INVALID_PARAMETER_VALUE", "a webhook's name cannot change here")
    reg = acting(request, who)
    hook = reg.webhook(webhook_id)
    status = body.get("status")
    reg.change_webhook(UpdateWebhook(hook.webhook_id, url=body.get("url") or None,
                                     events=tuple(_hook_events(body["events"])) if body.get("events") else None,
                                     status=str(status).upper() if status else None,
                                     description=body.get("description")))
    return {"webhook": _hook_json(reg.webhook(hook.webhook_id))}


def delete_webhook(request: Request, body: dict[str, Any], webhook_id: str) -> dict[str, Any]:
    from eventstore.webhooks import DeleteWebhook

    who = _who(request)
    who.require("admin")
    reg = acting(request, who)
    reg.change_webhook(DeleteWebhook(reg.webhook(webhook_id).webhook_id))
    return {}


def test_webhook(request: Request, body: dict[str, Any], webhook_id: str) -> dict[str, Any]:
    """Send one example event now (not from the log, not moving the cursor), as MLflow's test call does."""
    from eventstore.events import StoredEvent
    from eventstore.webhooks import secret_for
    from workers.webhooks import DeliveryError, post

    who = _who(request)
    who.require("admin")
    hook = registry(request).webhook(webhook_id)
    example = StoredEvent(0, "model-example_model", 1, "VersionRegistered", 1,
                          {"name": "example_model", "version": 1, "artifact": {"source": "models:/123"}, "tags": {}},
                          {"actor": who.name, "test": True}, datetime.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "")
    try:
        post(hook, example, secret_for(hook.webhook_id))
    except DeliveryError as exc:
        return {"result": {"success": False, "error_message": str(exc)}}
    return {"result": {"success": True, "response_status": 200}}


def _chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while block := handle.read(1 << 20):
            yield block


ROUTES = [
    ("POST", "/registered-models/create", create_registered_model),
    ("GET", "/registered-models/get", get_registered_model),
    ("GET", "/registered-models/search", search_registered_models),
    ("POST", "/registered-models/rename", refuse_rename),
    ("PATCH", "/registered-models/update", update_registered_model),
    ("DELETE", "/registered-models/delete", delete_registered_model),
    ("POST", "/registered-models/get-latest-versions", get_latest_versions),
    ("GET", "/registered-models/get-latest-versions", get_latest_versions),
    ("POST", "/registered-models/set-tag", set_registered_model_tag),
    ("DELETE", "/registered-models/delete-tag", delete_registered_model_tag),
    ("POST", "/registered-models/alias", set_alias),
    ("DELETE", "/registered-models/alias", delete_alias),
    ("GET", "/registered-models/alias", get_by_alias),
    ("POST", "/model-versions/create", create_model_version),
    ("PATCH", "/model-versions/update", update_model_version),
    ("POST", "/model-versions/transition-stage", transition_stage),
    ("DELETE", "/model-versions/delete", delete_model_version),
    ("GET", "/model-versions/get", get_model_version),
    ("GET", "/model-versions/search", search_model_versions),
    ("GET", "/model-versions/get-download-uri", get_download_uri),
    ("POST", "/model-versions/set-tag", set_model_version_tag),
    ("DELETE", "/model-versions/delete-tag", delete_model_version_tag),
]


async def _answer(fn: Any, request: Request, **path: str) -> Any:
    try:
        body = await _body(request)
        # The registry's calls block (database, store): a worker thread, as FastAPI runs plain routes.
        return await anyio.to_thread.run_sync(lambda: fn(request, body, **path))
    except (MlflowError, ModelLedgerError) as exc:
        return error_response(exc)


def _wrap(fn: Any) -> Any:
    async def endpoint(request: Request) -> Any:
        return await _answer(fn, request)

    endpoint.__name__ = fn.__name__
    return endpoint


async def _download(request: Request, path: str) -> Any:
    return await _answer(download_artifact, request, path=path)


# The routes that may run on the event loop when they are their process's only request (``direct._mlflow``):
# one command and nothing after it, or reads only. Not a route that writes twice or reads after its write
# (create, update, transition-stage, rename...): run again in the thread pool after a write that could not
# take the lock at once, it would repeat what it had done before.
ON_LOOP = frozenset({
    get_registered_model, search_registered_models, get_latest_versions, get_by_alias, get_model_version,
    search_model_versions, get_download_uri, set_registered_model_tag, delete_registered_model_tag, set_alias,
    delete_alias, set_model_version_tag, delete_model_version_tag, delete_model_version, delete_registered_model,
})

# Every route of a fixed path: ``direct.Direct`` answers these without FastAPI's routing; they stay on the
# router too (the same functions), so an app without that layer serves them alike.
FIXED_ROUTES = [(method, MLFLOW + path, fn) for method, path, fn in ROUTES] + [
    ("GET", ARTIFACTS, list_artifacts),
    ("POST", MLFLOW + "/webhooks", create_webhook),
    ("GET", MLFLOW + "/webhooks", list_webhooks),
]
for _method, _path, _fn in FIXED_ROUTES:
    router.add_api_route(_path, _wrap(_fn), methods=[_method], include_in_schema=False)


def _hook_route(fn: Any) -> Any:
    async def endpoint(request: Request, webhook_id: str) -> Any:
        return await _answer(fn, request, webhook_id=webhook_id)

    endpoint.__name__ = fn.__name__
    return endpoint


for _method, _fn in (("GET", get_webhook), ("PATCH", update_webhook), ("DELETE", delete_webhook)):
    router.add_api_route(MLFLOW + "/webhooks/{webhook_id}", _hook_route(_fn), methods=[_method],
                         include_in_schema=False)
router.add_api_route(MLFLOW + "/webhooks/{webhook_id}/test", _hook_route(test_webhook), methods=["POST"],
                     include_in_schema=False)
router.add_api_route(ARTIFACTS + "/{path:path}", _download, methods=["GET"], include_in_schema=False)
