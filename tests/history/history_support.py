"""The random commands the history properties (time travel, restore) generate and run against a registry."""

from __future__ import annotations

from hypothesis import strategies as st

from eventstore.errors import ModelLedgerError

NAMES = ["a", "b", "team/c"]
ALIASES = ["prod", "stage"]

names = st.sampled_from(NAMES)
# NAME, NAME@N (some of them never exist) and NAME@alias: what a user would type.
refs = st.one_of(
    names,
    st.tuples(names, st.integers(1, 4)).map(lambda t: f"{t[0]}@{t[1]}"),
    st.tuples(names, st.sampled_from(ALIASES)).map(lambda t: f"{t[0]}@{t[1]}"),
)
leaf = st.one_of(st.none(), st.integers(-2, 2), st.sampled_from(["x", "y"]))  # a param value; None deletes it


def run_command(reg, files: list[str], command: tuple) -> None:
    """Apply one generated command; a refusal (any ModelLedgerError) is ignored — it appends nothing.

    Shapes: ("register", name, content, params, description, tags), ("update", ref, params, content or None),
    ("tag", ref, key, value), ("untag", ref, key), ("metrics", ref, key, value), ("alias", ref, alias),
    ("unalias", name, alias), ("rollback", name, alias), ("delete", ref), ("undelete", ref), ("gc",)."""
    kind = command[0]
    try:
        if kind == "register":
            _, name, content, params, description, tags = command
            reg.register(name, files[content], params={k: v for k, v in params.items() if v is not None},
                         description=description, tags=tags)
        elif kind == "update":
            _, ref, params, content = command
            reg.update(ref, params=params, artifact=None if content is None else files[content])
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
        else:
            raise AssertionError(f"unknown generated command {command!r}")
    except ModelLedgerError:
        pass
