"""Peer measurements for ``scripts/bench_peers.py``, run by the ``eventsourcing`` venv's python.

    <eventsourcing venv>/bin/python scripts/peers/eventsourcing_worker.py '<json task>'

The library's SQLite recorder (``PERSISTENCE_MODULE=eventsourcing.sqlite``, ``SQLITE_DBNAME=<file>``): WAL, and
the connection's ``synchronous`` left at SQLite's default (FULL; reported). An aggregate ``RegisteredModel`` with two
event-sourced commands, ``tag`` and ``alias``; each command is one ``repository.get`` + one event + one
``save`` (one transaction). The aggregate cache is on (``AGGREGATE_CACHE_MAXSIZE``), so ``get`` does not replay
the stream each time: the library's best case. Prints ``RESULT {json}`` on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class RegisteredModel(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.versions = 0
        self.tags: dict[str, dict[str, str]] = {}
        self.aliases: dict[str, int] = {}

    @event("VersionRegistered")
    def add_version(self, source: str) -> None:
        self.versions += 1

    @event("Tagged")
    def tag(self, version: int, key: str, value: str) -> None:
        self.tags.setdefault(str(version), {})[key] = value

    @event("AliasAssigned")
    def alias(self, alias: str, version: int) -> None:
        self.aliases[alias] = version


class Registry(Application):
    def create(self, name: str, versions: int) -> UUID:
        model = RegisteredModel(name)
        for i in range(versions):
            model.add_version(f"file:///models/{name}/{i + 1}")
        self.save(model)
        return model.id

    def tag(self, model_id: UUID, version: int, key: str, value: str) -> None:
        model = self.repository.get(model_id)
        model.tag(version, key, value)
        self.save(model)

    def alias(self, model_id: UUID, alias: str, version: int) -> None:
        model = self.repository.get(model_id)
        model.alias(alias, version)
        self.save(model)


def tags_aliases(task: dict) -> dict:
    os.makedirs(task["dir"], exist_ok=True)
    db = os.path.join(task["dir"], "es.db")
    app = Registry(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db,
                        "AGGREGATE_CACHE_MAXSIZE": "100"})
    with app.recorder.datastore.transaction(commit=False) as curs:
        curs.execute("PRAGMA synchronous")
        synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[curs.fetchone()[0]]
        curs.execute("PRAGMA journal_mode")
        journal = curs.fetchone()[0]
    model_id = app.create("bench-deep", 10)
    n = task["n"]
    start = time.perf_counter()
    for k in range(n):
        app.tag(model_id, 5, "run", str(k))
    tag_s = time.perf_counter() - start
    start = time.perf_counter()
    for k in range(n):
        app.alias(model_id, "production", 1 + k % 9)
    alias_s = time.perf_counter() - start
    model = app.repository.get(model_id)
    assert model.tags["5"]["run"] == str(n - 1) and model.version == 11 + 2 * n, model.version
    app.close()
    return {"tag_per_s": n / tag_s, "alias_per_s": n / alias_s, "n": n, "synchronous": synchronous,
            "journal_mode": journal}


TASKS = {"tags_aliases": tags_aliases}

if __name__ == "__main__":
    from importlib.metadata import version

    spec = json.loads(sys.argv[1])
    result = TASKS[spec["task"]](spec)
    result["peer_version"] = f"eventsourcing {version('eventsourcing')}"
    print("RESULT " + json.dumps(result), flush=True)
