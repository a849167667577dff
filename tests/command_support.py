"""The random commands the history and projection properties generate and run against a registry, and the
coverage floor that keeps them honest.

Only the *legal* refusals (``ValidationError``, ``NotFoundError``, ``ConflictError`` and its subclasses) are
ignored: a ``StoreError``, ``ArtifactError`` or ``IntegrityError`` fails the example. And because a command
that is refused every time would leave every law trivially true (two empty catalogs are equal), each
property counts, over its whole run, which kinds of command appended events, and ``assert_exercised`` fails
the test when a kind never did."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import strategies as st

from eventstore.errors import ConflictError, IdempotencyError, NotFoundError, ValidationError
from eventstore.events import NewEvent

NAMES = ["a", "b", "team/c"]
ALIASES = ["prod", "stage"]
IDEMPOTENCY_KEYS = ["key-1", "key-2"]
# The refusals a correct registry gives to a well-formed command that does not apply to the current state.
LEGAL_REFUSALS = (ValidationError, NotFoundError, ConflictError)

# Every example starts from this: "a" with two live versions, an alias moved once and a deleted third version
# whose bytes no live version shares; "b" imported with a failed artifact. So rollback, undelete, gc, retry
# and the rest have something to act on from the first generated command.
SETUP = [
    ("register", "a", 0, {"lr": 1}, "resnet vision", {"env": "prod"}, None),
    ("update", "a@1", {"lr": 2}, 1, None, None, False, None),
    ("alias", "a@1", "prod"),
    ("alias", "a@2", "prod"),
    ("update", "a@2", {"lr": 3}, 2, None, None, False, None),
    ("delete", "a@3"),
    ("import", "b", "failed", 1),
]

# One sequence (after SETUP) in which every kind of command is accepted by a correct registry: each property
# runs it as an explicit example, so its coverage floor holds whatever the random examples drew, and fails
# only when a command is refused (or does nothing) where it must not.
EVERY_KIND = [
    ("register", "team/c", 0, {"lr": 1}, "bert nlp", {"k1": "x"}, IDEMPOTENCY_KEYS[0]),
    ("again",),
    ("rekey",),
    ("update", "a@2", {"lr": 5}, None, {"layers": 2}, {"lr": 1}, False, None),
    ("tag", "a@1", "k1", "x"),
    ("untag", "a@1", "k1"),
    ("metrics", "a@2", "acc", 0.5),
    ("alias", "a@1", "stage"),
    ("unalias", "a", "stage"),
    ("rollback", "a", "prod"),
    ("gc",),
    ("undelete", "a@3"),
    ("retry", "b"),
    ("import", "a", "metrics", 0),
    ("delete", "team/c"),
    ("restore", None, 0.5),
]

# "a" exists from the start of every example: weighting it makes most commands land on something real.
names = st.sampled_from(["a", "a", *NAMES])
# NAME, NAME@N (may not exist), NAME@alias — what a user would type — and NAME@~K: the K-th existing version
# (live ones first; deleted ones first for undelete), resolved when the command runs, so that most commands
# name a version that is there.
refs = st.one_of(
    names,
    st.tuples(names, st.integers(1, 4)).map(lambda t: f"{t[0]}@{t[1]}"),
    st.tuples(names, st.sampled_from(ALIASES)).map(lambda t: f"{t[0]}@{t[1]}"),
    *[st.tuples(names, st.integers(0, 3)).map(lambda t: f"{t[0]}@~{t[1]}")] * 3,
)
leaf = st.one_of(st.none(), st.integers(-2, 2), st.sampled_from(["x", "y"]))  # a param value; None deletes it
documents = st.dictionaries(st.sampled_from(["layers", "lr"]), st.integers(0, 3), max_size=2)
keys = st.one_of(st.none(), st.just(IDEMPOTENCY_KEYS[0]), st.sampled_from(IDEMPOTENCY_KEYS))


def command_strategies(contents: st.SearchStrategy[int], patches: st.SearchStrategy[dict],
                       descriptions: st.SearchStrategy[str], tags: st.SearchStrategy[dict],
                       tag_keys: list[str], tag_values: list[str], metric_values: list[float]) -> list:
    """One strategy per kind of command (see ``Runner.run`` for the shapes); update and retry twice, as they
    are refused more often than the others (a deleted parent; nothing failed yet)."""
    update = st.tuples(st.just("update"), refs, st.one_of(st.none(), patches), st.one_of(st.none(), contents),
                       st.one_of(st.none(), st.none(), documents), st.one_of(st.none(), st.none(), documents),
                       st.booleans(), keys)
    retry = st.tuples(st.just("retry"), names)
    return [
        st.tuples(st.just("register"), names, contents, patches, descriptions, tags, keys),
        update,
        update,
        st.tuples(st.just("tag"), refs, st.sampled_from(tag_keys), st.sampled_from(tag_values)),
        st.tuples(st.just("untag"), refs, st.sampled_from(tag_keys)),
        st.tuples(st.just("metrics"), refs, st.sampled_from(["acc", "loss"]), st.sampled_from(metric_values)),
        st.tuples(st.just("alias"), refs, st.sampled_from(ALIASES)),
        st.tuples(st.just("unalias"), names, st.sampled_from(ALIASES)),
        st.tuples(st.just("rollback"), names, st.sampled_from(ALIASES)),
        st.tuples(st.just("delete"), refs),
        st.tuples(st.just("undelete"), refs),
        st.tuples(st.just("gc")),  # purges (and undelete re-ingests): ArtifactPurged / ArtifactRequested states
        st.tuples(st.just("restore"), st.one_of(st.none(), names), st.floats(0, 1)),
        st.tuples(st.just("import"), names, st.sampled_from(["failed", "tags", "metrics", "failed"]), contents),
        retry,
        retry,
        st.tuples(st.just("again")),  # the last request that carried an idempotency key, verbatim
        st.tuples(st.just("rekey")),  # the last idempotency key, for a different request
    ]


# What every property must have seen append events at least once over its run.
EXERCISED = ("register", "update", "tag", "untag", "metrics", "alias", "unalias", "rollback", "delete",
             "undelete", "gc", "restore", "import", "retry", "replayed key", "reused key")


def assert_exercised(tally: Counter, kinds: tuple[str, ...] = EXERCISED) -> None:
    """The coverage floor: a kind of command that never did anything over a whole run means the property
    checked nothing about it (a decider refusing every rollback would pass otherwise)."""
    never = [k for k in kinds if not tally[k]]
    assert not never, f"never exercised over the run: {never} (counts: {dict(tally)})"


class Runner:
    """Applies generated commands to one registry; remembers the idempotency keys it used and counts, in
    ``tally``, the kinds of command that appended events."""

    def __init__(self, reg: Any, files: list[str], tally: Counter | None = None) -> None:
        self.reg, self.files = reg, files
        self.tally = tally if tally is not None else Counter()
        self.keys: dict[str, tuple] = {}  # idempotency key -> the request that first used it
        self.last_keyed: tuple | None = None

    def resolve(self, kind: str, ref: str) -> str:
        """``NAME@~K`` -> ``NAME@N``, N the K-th (modulo) existing version: live ones (deleted ones for
        undelete) if there are any. ``NAME@1`` when the model does not exist."""
        name, _, k = ref.partition("@~")
        if not self.reg.catalog().exists(name):
            return f"{name}@1"
        versions = list(self.reg.model(name).versions or ())
        wanted = [v for v in versions if v.deleted == (kind == "undelete")] or versions
        return f"{name}@{wanted[int(k) % len(wanted)].version}"

    def setup(self) -> None:
        """Run ``SETUP`` (not counted in the tally)."""
        before = Counter(self.tally)
        for command in SETUP:
            assert self.run(command), command
        self.tally.clear()
        self.tally.update(before)

    def run(self, command: tuple) -> int | None:
        """Apply one command; return how many events it appended, or None when it was (legally) refused —
        in which case it appended nothing. Any other error fails the example.

        Shapes: ("register", name, content, params, description, tags, key), ("update", ref, params, content,
        structure, optimizer, structure_patch, key), ("tag", ref, key, value), ("untag", ref, key),
        ("metrics", ref, key, value), ("alias", ref, alias), ("unalias", name, alias), ("rollback", name,
        alias), ("delete", ref), ("undelete", ref), ("gc",), ("restore", name or None, fraction of the
        head), ("import", name, "tags"|"metrics"|"failed", content), ("retry", name)."""
        reg = self.reg
        if command[0] in ("again", "rekey"):
            if self.last_keyed is None:
                return None
            again, command = command[0] == "again", self.last_keyed
            if not again:
                # The same key, asking for something else: a register with another description, an update
                # with another artifact (the fingerprint must cover the artifact too).
                command = (command[:4] + ("another",) + command[5:] if command[0] == "register"
                           else command[:3] + (((command[3] or 0) + 1) % len(self.files),) + command[4:])
        command = tuple(self.resolve(command[0], part) if isinstance(part, str) and "@~" in part else part
                        for part in command)
        kind = command[0]
        head = reg.head()
        key = command[-1] if kind in ("register", "update") else None
        request = command[:-1]
        if kind == "register":
            # What is asked for: ``_apply`` leaves out params whose value is None, so {'lr': None} and {} are
            # the same request (and a retry of one with the other's key is a replay, not a reuse).
            request = (*request[:3], {k: v for k, v in request[3].items() if v is not None}, *request[4:])
        first = self.keys.get(key) if key is not None else None
        try:
            self._apply(command)
        except IdempotencyError:
            assert reg.head() == head, f"refused {command} but appended events"
            assert first is not None and first != request, f"{command}: IdempotencyError for a fresh key"
            self.tally["reused key"] += 1
            return None
        except LEGAL_REFUSALS:
            assert reg.head() == head, f"refused {command} but appended events"
            assert first is None, f"{command}: a retry of an accepted request was refused"
            return None
        appended = reg.head() - head
        if first is not None:
            assert first == request, f"{command}: the key was first used for {first}, yet it was accepted"
            assert appended == 0, f"{command}: a replayed idempotency key appended {appended} events"
            self.tally["replayed key"] += 1
        elif key is not None:
            self.keys[key] = request
        if key is not None:
            self.last_keyed = command
        if appended:
            self.tally[kind] += 1
        return appended

    def _apply(self, command: tuple) -> None:
        reg, files = self.reg, self.files
        kind = command[0]
        if kind == "register":
            _, name, content, params, description, tags, key = command
            reg.register(name, files[content], params={k: v for k, v in params.items() if v is not None},
                         description=description, tags=tags, idempotency_key=key)
        elif kind == "update":
            _, ref, params, content, structure, optimizer, patch, key = command
            reg.update(ref, params=params, artifact=None if content is None else files[content],
                       structure=structure, optimizer=optimizer, structure_patch=patch, optimizer_patch=patch,
                       idempotency_key=key)
        elif kind == "tag":
            reg.tag(command[1], {command[2]: command[3]})
        elif kind == "untag":
            reg.untag(command[1], command[2])
        elif kind == "metrics":
            reg.metrics(command[1], {command[2]: command[3]})
        elif kind == "alias":
            reg.alias(command[1], command[2])
        elif kind == "unalias":
            reg.unalias(command[1], command[2])
        elif kind == "rollback":
            reg.rollback(command[1], command[2])
        elif kind == "delete":
            reg.delete(command[1])
        elif kind == "undelete":
            reg.undelete(command[1])
        elif kind == "gc":
            reg.gc(0)
        elif kind == "restore":
            _, name, fraction = command
            reg.restore(name, as_of=round(fraction * reg.head()))
        elif kind == "import":
            reg.append_batch(import_batch(reg, files, *command[1:]))
        elif kind == "retry":
            reg.retry(retry_target(reg, command[1]))
        else:
            raise AssertionError(f"unknown generated command {command!r}")


def import_batch(reg: Any, files: list[str], name: str, what: str, content: int) -> list[NewEvent]:
    """A batch of valid events, as an import would bring: tags on the model, metrics on its latest version,
    or a new version whose artifact failed (which ``retry`` can then fetch). Empty when it does not apply
    (``append_batch`` of nothing appends nothing)."""
    cat = reg.catalog()
    model = reg.model(name) if cat.exists(name) else None
    meta = {"actor": "importer@test", "client": "import"}
    stream = f"model-{name}"
    if model is not None and model.deleted:
        return []
    if what == "tags":
        return [] if model is None else [NewEvent(stream, "Tagged", {"name": name, "version": None,
                                                                     "tags": {"imported": "yes"}}, meta)]
    if what == "metrics":
        if model is None or model.latest is None:
            return []
        return [NewEvent(stream, "MetricsRecorded", {"name": name, "version": model.latest,
                                                     "metrics": {"acc": 0.75}}, meta)]
    number = 1 if model is None else len(model.versions or ()) + 1
    events = [] if model is not None else [NewEvent(stream, "ModelRegistered",
                                                    {"name": name, "description": "imported", "tags": {}}, meta)]
    events.append(NewEvent(stream, "VersionRegistered", {
        "name": name, "version": number, "parent": None, "description": "imported", "params": {"imported": 1},
        "structure": {}, "optimizer": {}, "tags": {}, "artifact": {"source": files[content]}, "status": "pending"},
        meta))
    events.append(NewEvent(stream, "ArtifactFailed", {"name": name, "version": number,
                                                      "reason": "the import brought no bytes"}, meta))
    return events


def retry_target(reg: Any, name: str) -> str:
    """The newest failed or pending version of ``name`` (what a user retries), else of another model, else
    ``name@1`` (which is refused)."""
    for model_name in (name, *NAMES):
        if reg.catalog().exists(model_name):
            for v in reversed(reg.model(model_name).versions or ()):
                if v.status in ("failed", "pending"):
                    return v.ref
    return f"{name}@1"
