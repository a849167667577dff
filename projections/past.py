"""The catalog as it was after the event at a given position.

Answers from the temporal tables (``model_states``, ``version_states``): the newest state of an entity at
or before the position is one index probe, so a question about the past costs about what the same question
about the present costs, whatever the length of the log. Filters the present-day catalog answers with SQL
indexes (FTS, tags, files) are applied here to the past states themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from eventstore.errors import ConflictError, NotFoundError, ValidationError
from eventstore.names import parse_ref, validate_alias, validate_name, validate_tags

from .dialects import dialect_of
from .records import ModelRecord, VersionRecord
from .rows import model_record, model_row_at, obj, version_record
from .search import entity_tokens, matches, query_words


class PastCatalog:
    """Read-only view of the catalog right after position ``position`` (0: before the first event)."""

    def __init__(self, read: Callable[[], AbstractContextManager[Any]], position: int) -> None:
        if position < 0:
            raise ValidationError("a position is 0 or more")
        self._read = read
        self.position = position

    # -- single things -----------------------------------------------------------------------------
    def _model_row(self, conn: Any, name: str) -> tuple[tuple[Any, ...], dict[str, int]] | None:
        state = dialect_of(conn).model_state_at(conn, name, self.position)
        return model_row_at(name, state) if state is not None else None

    def _version(self, conn: Any, name: str, number: int, aliases: dict[str, int]) -> VersionRecord | None:
        row = dialect_of(conn).version_at(conn, name, number, self.position)
        return None if row is None else version_record(row[:-2], aliases, row[-2], row[-1])

    def get(self, ref: str) -> VersionRecord:
        parsed = parse_ref(ref)
        with self._read() as conn:
            found = self._model_row(conn, parsed.name)
            if found is None:
                raise NotFoundError(f"no model named {parsed.name!r} as of #{self.position}")
            row, aliases = found
            if row[4] and parsed.version is None:
                raise ConflictError(f"model {parsed.name!r} was deleted as of #{self.position}")
            if parsed.version is not None:
                number = parsed.version
            elif parsed.alias is not None:
                if parsed.alias not in aliases:
                    raise NotFoundError(f"model {parsed.name!r} had no alias {parsed.alias!r} as of #{self.position}")
                number = aliases[parsed.alias]
            else:
                if row[5] is None:
                    raise NotFoundError(f"model {parsed.name!r} had no live version as of #{self.position}")
                number = row[5]
            version = self._version(conn, parsed.name, number, aliases)
            if version is None:
                raise NotFoundError(f"model {parsed.name!r} had no version {number} as of #{self.position}")
            return version

    def _versions(self, conn: Any, name: str, aliases: dict[str, int]) -> list[VersionRecord]:
        rows = dialect_of(conn).versions_at(conn, name, self.position)
        return [version_record(r[:-2], aliases, r[-2], r[-1]) for r in rows]

    def model(self, name: str, *, versions: bool = True, include_deleted: bool = True) -> ModelRecord:
        validate_name(name)
        with self._read() as conn:
            found = self._model_row(conn, name)
            if found is None:
                raise NotFoundError(f"no model named {name!r} as of #{self.position}")
            row, aliases = found
            records = None
            if versions:
                records = tuple(v for v in self._versions(conn, name, aliases) if include_deleted or not v.deleted)
            return model_record(row, aliases, records)

    def exists(self, name: str) -> bool:
        with self._read() as conn:
            return self._model_row(conn, name) is not None

    # -- many things -------------------------------------------------------------------------------
    def _models(self, conn: Any) -> Iterator[tuple[tuple[Any, ...], dict[str, int]]]:
        # Read lazily: a caller with a limit stops after the models it needs.
        for name, state in dialect_of(conn).models_at(conn, self.position):
            yield model_row_at(name, state)

    def list(
        self,
        *,
        search: str | None = None,
        tags: Mapping[str, str] | None = None,
        file: str | None = None,
        alias: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> list[ModelRecord]:
        wanted_tags = validate_tags(dict(tags or {}))
        words = query_words(search) if search is not None else None
        if alias is not None:
            validate_alias(alias)
        out: list[ModelRecord] = []
        with self._read() as conn:
            for row, aliases in self._models(conn):
                if row[4] and not include_deleted:
                    continue
                if alias is not None and alias not in aliases:
                    continue
                if not (words or wanted_tags or file is not None):  # no filter on content: the common listing
                    out.append(model_record(row, aliases))
                    if limit is not None and len(out) >= limit:
                        break
                    continue
                model_tags = obj(row[3])
                live = [v for v in self._versions(conn, row[0], aliases) if not v.deleted]
                if words is not None:
                    hit = matches(words, entity_tokens(row[0], row[2], model_tags)) or any(
                        matches(words, entity_tokens(v.name, v.description, v.tags)) for v in live)
                    if not hit:
                        continue
                if any(model_tags.get(k) != val and not any(v.tags.get(k) == val for v in live)
                       for k, val in wanted_tags.items()):
                    continue
                if file is not None and not any(
                        f.get("path") == file or f.get("path", "").rsplit("/", 1)[-1] == file
                        for v in live for f in v.artifact.get("files") or ()):
                    continue
                out.append(model_record(row, aliases))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def search(
        self,
        *,
        keyword: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        file: str | None = None,
        alias: str | None = None,
        limit: int | None = None,
    ) -> list[VersionRecord]:
        wanted_tags = validate_tags(dict(tags or {}))
        words = query_words(keyword) if keyword is not None else None
        out: list[VersionRecord] = []
        with self._read() as conn:
            models = [self._model_row(conn, validate_name(name))] if name is not None else list(self._models(conn))
            for found in models:
                if found is None or found[0][4]:
                    continue
                row, aliases = found
                model_tags = obj(row[3])
                for v in self._versions(conn, row[0], aliases):
                    if v.deleted:
                        continue
                    if words is not None and not (
                            matches(words, entity_tokens(v.name, v.description, v.tags))
                            or matches(words, entity_tokens(row[0], row[2], model_tags))):
                        continue
                    if any(v.tags.get(k) != val and model_tags.get(k) != val for k, val in wanted_tags.items()):
                        continue
                    if file is not None and not any(
                            f.get("path") == file or f.get("path", "").rsplit("/", 1)[-1] == file
                            for f in v.artifact.get("files") or ()):
                        continue
                    if alias is not None and alias not in v.aliases:
                        continue
                    out.append(v)
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    def best(self, name: str, metric: str, *, minimize: bool = False,
             tags: Mapping[str, str] | None = None) -> VersionRecord:
        wanted_tags = validate_tags(dict(tags or {}))
        model = self.model(name)
        candidates = [v for v in model.versions or () if not v.deleted and metric in v.metrics
                      and all(v.tags.get(k) == val or model.tags.get(k) == val for k, val in wanted_tags.items())]
        if not candidates:
            raise NotFoundError(f"no live version of {name!r} had the metric {metric!r} as of #{self.position}")
        sign = -1 if minimize else 1
        return max(candidates, key=lambda v: (sign * v.metrics[metric], v.version))

