"""The rows one command will read, sent for before it is decided: one round trip instead of one per read.

Deciding a command reads its model (with the aliases) and the version it names; folding its events reads the
same model and versions again, and the top of the alias stack it moves. On SQLite a read is a function call;
on PostgreSQL each is a round trip (13 for a tag, measured with ``scripts/profile_pg.py``). A dialect that
pays per round trip offers ``prefetch(conn, target)``: it sends the reads for a command's ``Target``
(``eventstore.state``) and the catalog's checkpoint without waiting, and returns a ``Prefetched`` whose
answers come back with the transaction's first round trip (``Recorder.write_batched``: with the lock and the
head).

The answers are exact for the transaction: they are read under the writer lock, after the catalog caught up,
and nothing changes the catalog before the command's own fold (which consumes them; ``CatalogProjection``
drops them then, and when the catch-up had to fold anything first). A read they do not cover — another
model, a version the target did not name — goes to the database as before. Each dialect's rows come in its
``FoldStore``'s shapes (``PrefetchedStore``), which a test compares with the ``FoldStore``'s own loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from eventstore.state import Target

from .projector import MODEL_FIELDS, VERSION_LOADED
from .rows import VERSION_COLUMNS

# The columns the prefetch reads: what the decider's state needs (``rows.MODEL_COLUMNS`` /
# ``rows.VERSION_COLUMNS``, prefixes of these) and what the fold loads (``MODEL_FIELDS``, ``VERSION_LOADED``).
PREFETCH_MODEL = MODEL_FIELDS
PREFETCH_VERSION = (*(c.strip() for c in VERSION_COLUMNS.split(",")), "deleted_at", "requested_at")
_LOADED = tuple(PREFETCH_VERSION.index(c) for c in VERSION_LOADED)
_MODEL_DELETED = PREFETCH_MODEL.index("deleted")
_LOADED_DELETED = VERSION_LOADED.index("deleted")
STATE_MODEL_WIDTH = len(PREFETCH_MODEL) - 1  # rows.MODEL_COLUMNS: every field but deleted_at
STATE_VERSION_WIDTH = len(PREFETCH_VERSION) - 2  # rows.VERSION_COLUMNS

Rows = Callable[[], list[tuple[Any, ...]]]

# The versions a memo keeps of its model (``kept_after``): the ones read most recently. Unbounded, a process that
# registers version after version carried every one of them, and copied them all at every command (a register
# loop of 1,000 on PostgreSQL spent 74 µs a command in that copy by its end, cProfile); a command needs its named
# version and the next new one, and these are read again after each command, so a bound loses only a memo hit
# for a version not commanded among the last ``KEPT_VERSIONS`` distinct ones.
KEPT_VERSIONS = 64


class Prefetched:
    """The answers of one command's prefetch, read when first asked for. ``model``: the ``PREFETCH_MODEL``
    row or none; ``aliases``; ``versions``: (number, the ``PREFETCH_VERSION`` row or all NULLs) for each number
    the prefetch resolved (the named or latest version, and the next new one); ``top``: the top of the alias
    stack ``target.alias`` (0: empty)."""

    def __init__(self, target: Target, model: Rows, aliases: Rows, versions: Rows, top: Rows | None,
                 checkpoint: Rows) -> None:
        self.target = target
        self._pending: tuple[Rows, Rows, Rows, Rows | None] | None = (model, aliases, versions, top)
        self._checkpoint_rows: Rows | None = checkpoint
        self._stored_checkpoint = 0
        # the catalog's position once the catch-up found it current (None: the rows are not to be used)
        self.checkpoint: int | None = None
        self._model: tuple[Any, ...] | None = None
        self._aliases: list[tuple[str, int]] = []
        self._versions: dict[int, tuple[Any, ...] | None] = {}
        self._top: int | None = None

    @classmethod
    def known(cls, target: Target, model: tuple[Any, ...], aliases: list[tuple[str, int]],
              versions: dict[int, tuple[Any, ...] | None], top: int | None, checkpoint: int) -> Prefetched:
        """Answers already in hand (``recalled``): nothing is read."""
        got = cls(target, model=list, aliases=list, versions=list, top=None, checkpoint=list)
        got._pending, got._checkpoint_rows, got._stored_checkpoint = None, None, checkpoint
        got._model, got._aliases, got._versions, got._top = model, aliases, versions, top
        return got

    def _take(self) -> None:
        if self._pending is None:
            return
        model, aliases, versions, top = self._pending
        self._pending = None
        rows = model()
        self._model = tuple(rows[0]) if rows else None
        self._aliases = [(a, v) for a, v in aliases()]
        for number, *row in versions():
            self._versions[number] = tuple(row) if row[0] is not None else None
        if top is not None:
            self._top = top()[0][0] or 0

    def stored_checkpoint(self) -> int:
        """The catalog's checkpoint as stored when the transaction began (what ``FoldStore.checkpoint`` reads)."""
        if self._checkpoint_rows is not None:
            rows, self._checkpoint_rows = self._checkpoint_rows(), None
            self._stored_checkpoint = rows[0][0] if rows else 0
        return self._stored_checkpoint

    # -- the decider's state (``rows.CatalogStateView``) -------------------------------------------------
    def knows_model(self, name: str) -> bool:
        return name == self.target.name

    def model_row(self, name: str) -> tuple[Any, ...] | None:
        """``rows.MODEL_COLUMNS`` of ``name`` (a model ``knows_model``), None if it has no row."""
        self._take()
        return None if self._model is None else self._model[:STATE_MODEL_WIDTH]

    def aliases(self, name: str) -> dict[str, int]:
        self._take()
        return dict(self._aliases)

    def knows_version(self, name: str, number: int) -> bool:
        if name != self.target.name:
            return False
        self._take()
        return number in self._versions

    def version_row(self, name: str, number: int) -> tuple[Any, ...] | None:
        """``rows.VERSION_COLUMNS`` of a version ``knows_version``, None if it has no row."""
        self._take()
        row = self._versions[number]
        return None if row is None else row[:STATE_VERSION_WIDTH]

    # -- the fold's loads (``PrefetchedStore``) ------------------------------------------------------------
    def fold_models(self, names: set[str]) -> list[list[Any]] | None:
        if names != {self.target.name}:
            return None
        self._take()
        if self._model is None:
            return []
        values = list(self._model)
        values[_MODEL_DELETED] = int(values[_MODEL_DELETED])  # as the FoldStore's: 0/1 in the fold's states
        return [values]

    def fold_aliases(self, names: set[str]) -> list[tuple[str, str, int]] | None:
        if names != {self.target.name}:
            return None
        self._take()
        return [(self.target.name, a, v) for a, v in self._aliases]

    def fold_versions(self, keys: set[tuple[str, int]]) -> list[list[Any]] | None:
        if not keys or any(name != self.target.name for name, _ in keys):
            return None
        self._take()
        if any(number not in self._versions for _, number in keys):
            return None
        out = []
        for _, number in sorted(keys):
            row = self._versions[number]
            if row is not None:
                values = [row[i] for i in _LOADED]
                values[_LOADED_DELETED] = int(values[_LOADED_DELETED])
                out.append(values)
        return out

    def fold_tops(self, stacks: set[tuple[str, str]]) -> dict[tuple[str, str], int] | None:
        if not stacks:
            return {}
        if self.target.alias is None or stacks != {(self.target.name, self.target.alias)}:
            return None
        self._take()
        return {(self.target.name, self.target.alias): self._top or 0}


class PrefetchedStore:
    """A dialect's ``FoldStore`` whose loads are answered from a ``Prefetched`` when it covers them (the
    fold of the command the prefetch was for), else by the store; everything else is the store's."""

    def __init__(self, store: Any, prefetched: Prefetched) -> None:
        self.store = store
        self.prefetched = prefetched

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def load_models(self, names: Iterable[str]) -> list[list[Any]]:
        names = set(names)
        got = self.prefetched.fold_models(names)
        return self.store.load_models(names) if got is None else got

    def load_aliases(self, names: Iterable[str]) -> list[tuple[str, str, int]]:
        names = set(names)
        got = self.prefetched.fold_aliases(names)
        return self.store.load_aliases(names) if got is None else got

    def load_versions(self, keys: Iterable[tuple[str, int]]) -> list[list[Any]]:
        keys = set(keys)
        got = self.prefetched.fold_versions(keys)
        return self.store.load_versions(keys) if got is None else got

    def load_alias_tops(self, stacks: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        stacks = set(stacks)
        got = self.prefetched.fold_tops(stacks)
        return self.store.load_alias_tops(stacks) if got is None else got


# -- the memo of an optimistic command (``Transaction.recall`` / ``remember``) ---------------------------------
#
# After a command's fold, the catalog sends the same read again (in the same transaction, after its writes: it
# rides the commit's round trip) and keeps its answers with the rows of the model kept before that the command
# did not touch: the model's row, its aliases, the rows (or the absence) of the version numbers read so far, the
# tops of the alias stacks read so far, and the checkpoint. The next command on the model is decided from them
# when they cover its target, without a read; the recorder checks under its lock that nothing was committed in
# between. What the command touched is dropped, then read again: only rows the log's head vouches for are kept.

_LATEST = PREFETCH_MODEL.index("latest")
_LAST_VERSION = PREFETCH_MODEL.index("last_version")


def recalled(target: Target, kept: dict[str, Any], head: int) -> Prefetched | None:
    """The answers for ``target`` from what was kept after the last commit (``kept_after``), or None when they
    do not cover it (another version, an alias stack not read yet) or the catalog was not at the head."""
    model = kept["model"]
    if kept["checkpoint"] != head or model is None:
        return None
    versions: dict[int, tuple[Any, ...] | None] = kept["versions"]
    if target.version is not None:
        named = target.version
    elif target.ref_alias is not None:
        named = dict(kept["aliases"]).get(target.ref_alias)
    else:
        named = model[_LATEST]
    wanted = [n for n in (named, None if model[_LAST_VERSION] is None else model[_LAST_VERSION] + 1)
              if n is not None]
    if any(n not in versions for n in wanted):
        return None
    top = None
    if target.alias is not None:
        if target.alias not in kept["tops"]:
            return None
        top = kept["tops"][target.alias]
    return Prefetched.known(target, model, list(kept["aliases"]), {n: versions[n] for n in wanted}, top, head)


def kept_after(later: Prefetched, previous: dict[str, Any] | None, versions_touched: set[int],
               stacks_touched: set[str], checkpoint: int) -> dict[str, Any] | None:
    """What to keep of the model after a commit: ``later`` (the read sent after the command's writes) over
    ``previous`` (kept at the commit before, or None), less what the command touched and did not read again."""
    later._take()
    if later._model is None:
        return None
    fresh = later._versions
    versions = {n: row for n, row in previous["versions"].items() if n not in versions_touched and n not in fresh} \
        if previous else {}
    tops = {a: top for a, top in previous["tops"].items() if a not in stacks_touched} if previous else {}
    versions.update(fresh)  # the versions read last are the dict's last: the ones a bound keeps
    if len(versions) > KEPT_VERSIONS:
        versions = dict(list(versions.items())[-KEPT_VERSIONS:])
    if later.target.alias is not None:
        tops[later.target.alias] = later._top or 0
    return {"model": later._model, "aliases": later._aliases, "versions": versions, "tops": tops,
            "checkpoint": checkpoint}
