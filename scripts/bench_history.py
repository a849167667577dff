"""Section ``history`` of ``scripts/bench.py``: a long log, time travel and whole-log work.

A log of 1,000,000 events (``--quick``: 100,000) — about one version per 10 events, over 1,000 models — is
built through ``Registry.append_batch`` in batches of 10,000, from events shaped exactly as the decider
makes them (``ModelRegistered``, ``VersionRegistered`` / ``ParamsUpdated`` with full content and the patch,
``ArtifactStored`` with digest/size/kind/files/format, ``MetricsRecorded``, ``Tagged``, ``AliasAssigned``
with ``previous``, ``AliasRemoved`` + ``VersionDeleted``). The catalog folds them in on the next read: that
catch-up is timed on its own. A second, small registry (10,000 events, the same 1,000 models) is built the
same way; the time-travel reads are then measured on both, alternating, at ~30 positions spread through
each history (10 % … 100 %), and compared as a ratio @big / @small.

Whole-log work (catch-up, ``rebuild_projections``, ``audit``) is compared with reading the same log raw
(``SELECT`` + ``json.loads`` of data and meta, no projection): the floor of any replay.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

from _benchlib import Row, add_repo_to_path, log, median, percentile, temp_dir

add_repo_to_path()

from eventstore.event_data import artifact_stored, version_created  # noqa: E402
from eventstore.events import NewEvent, stream_for  # noqa: E402

ACTOR = "bench@modelledger"
MODELS = 1_000
BATCH = 10_000
SMALL_EVENTS = 10_000
POSITIONS = 30
BLOBS = 64  # real blobs in the store, shared by all versions, so that audit's blob check passes

SIZES = {
    #                 full        quick
    "events": (1_000_000, 100_000),
    "positions": (POSITIONS, 15),
    "rounds": (3, 2),  # passes over the positions, alternating which registry goes first
}


def size(key: str, quick: bool) -> int:
    full, small = SIZES[key]
    return small if quick else full


# -- the log ----------------------------------------------------------------------------------------

class _Model:
    __slots__ = ("name", "stream", "last", "live", "aliases", "params", "artifact")

    def __init__(self, name: str) -> None:
        self.name = name
        self.stream = stream_for(name)
        self.last = 0
        self.live: list[int] = []
        self.aliases: dict[str, int] = {}
        self.params: dict[int, dict[str, Any]] = {}
        self.artifact: dict[int, dict[str, Any]] = {}


class LogBuilder:
    """Yields batches of well-formed events; remembers, for chosen positions, a reference that exists
    there (a version number and a model with a ``production`` alias) for the time-travel probes."""

    def __init__(self, total: int, blobs: list[dict[str, Any]], seed: int, probes: int) -> None:
        self.total = total
        self.blobs = blobs
        self.rng = random.Random(seed)
        self.models = [_Model(f"team-{i % 10}/model-{i:04d}") for i in range(MODELS)]
        self.position = 0
        self.versions = 0
        self.counts: dict[str, int] = {}
        start = max(MODELS + 1, total // 10)
        step = (total - start) / max(1, probes - 1)
        self.probe_at = sorted({min(total, int(start + k * step)) for k in range(probes)})
        self.probes: list[dict[str, Any]] = []

    def _meta(self) -> dict[str, Any]:
        return {"actor": ACTOR, "client": "modelledger/bench history",
                "correlation_id": str(uuid.UUID(int=self.rng.getrandbits(128)))}

    def _emit(self, out: list[NewEvent], m: _Model, type_: str, data: dict[str, Any], meta: dict) -> None:
        out.append(NewEvent(m.stream, type_, data, meta))
        self.position += 1
        self.counts[type_] = self.counts.get(type_, 0) + 1

    def _probe(self) -> None:
        """Between two versions' blocks: a reference valid as of the current position."""
        position = self.position
        while self.probe_at and position >= self.probe_at[0]:
            self.probe_at.pop(0)
        rng = random.Random(position)
        with_versions = [m for m in self.models if m.live]
        produced = [m for m in with_versions if "production" in m.aliases]
        m = rng.choice(with_versions)
        p = rng.choice(produced or with_versions)
        self.probes.append({"position": position, "version_ref": f"{m.name}@{rng.choice(m.live)}",
                            "alias_ref": f"{p.name}@production" if produced else f"{p.name}",
                            "model": m.name})

    def _artifact(self) -> dict[str, Any]:
        blob = self.rng.choice(self.blobs)
        return {"source": f"s3://ml-artifacts/runs/{uuid.UUID(int=self.rng.getrandbits(128)).hex}/model.safetensors",
                **blob}

    def _new_version(self, out: list[NewEvent], m: _Model) -> None:
        rng = self.rng
        meta = self._meta()
        number = m.last + 1
        artifact = self._artifact()
        if not m.live or rng.random() < 0.3:
            params = {"lr": round(rng.uniform(1e-5, 1e-1), 6), "batch_size": rng.choice([32, 64, 128, 256]),
                      "epochs": rng.randint(1, 50), "dropout": round(rng.random() / 2, 3),
                      "seed": rng.getrandbits(31)}
            data = version_created(m.name, number, None, description="nightly fine-tune on the cleaned click data",
                                  params=params, structure={"layers": rng.choice([12, 24, 48]), "hidden": 768,
                                                            "heads": 12, "arch": "transformer"},
                                  optimizer={"name": "adamw", "betas": [0.9, 0.999], "weight_decay": 0.01},
                                  tags={"task": "ctr", "dataset": f"clicks-2026-{rng.randint(1, 12):02d}"},
                                  artifact={"source": artifact["source"]}, status="pending")
            self._emit(out, m, "VersionRegistered", data, meta)
            m.params[number] = params
            stored = True
        else:
            parent = m.live[-1] if rng.random() < 0.7 else rng.choice(m.live)
            patch = {"lr": round(rng.uniform(1e-5, 1e-1), 6), "epochs": rng.randint(1, 50)}
            params = {**m.params[parent], **patch}
            stored = rng.random() < 0.6  # a new artifact (pending, then ArtifactStored) or the parent's bytes
            changes = ["params", "artifact"] if stored else ["params"]
            carried = {"source": artifact["source"]} if stored else dict(m.artifact[parent])
            data = version_created(m.name, number, parent, description="nightly fine-tune on the cleaned click data",
                                  params=params, structure={"layers": 24, "hidden": 768, "heads": 12,
                                                            "arch": "transformer"},
                                  optimizer={"name": "adamw", "betas": [0.9, 0.999], "weight_decay": 0.01},
                                  tags={"task": "ctr"}, artifact=carried, status="pending" if stored else "ready",
                                  changes=changes, patch={"params": patch})
            self._emit(out, m, "ParamsUpdated", data, meta)
            m.params[number] = params
            if not stored:
                m.artifact[number] = carried
        m.last = number
        m.live.append(number)
        self.versions += 1
        if stored:
            facts = {**artifact, "source": artifact["source"]}
            self._emit(out, m, "ArtifactStored", artifact_stored(m.name, number, facts), meta)
            m.artifact[number] = facts
        for _ in range(rng.randint(3, 5)):
            self._emit(out, m, "MetricsRecorded", {"name": m.name, "version": number, "metrics": {
                "auc": round(rng.uniform(0.6, 0.95), 5), "loss": round(rng.uniform(0.05, 1.5), 5),
                "epoch": rng.randint(1, 50)}}, self._meta())
        for _ in range(rng.randint(1, 3)):
            self._emit(out, m, "Tagged", {"name": m.name, "version": number,
                                          "tags": {f"run-{rng.randint(0, 9)}": uuid.UUID(int=rng.getrandbits(128)).hex[:12],
                                                   "reviewed": rng.choice(["yes", "no"])}}, self._meta())
        self._alias(out, m, "staging", number)
        if rng.random() < 0.4:
            self._alias(out, m, "production", rng.choice(m.live[-3:]))
        if rng.random() < 0.05:
            self._emit(out, m, "Tagged", {"name": m.name, "version": None,
                                          "tags": {"owner": f"team-{rng.randint(0, 20)}"}}, self._meta())
        if len(m.live) > 4 and rng.random() < 0.15:
            victim = m.live[rng.randrange(0, len(m.live) - 3)]
            meta = self._meta()
            for alias, held in sorted(m.aliases.items()):
                if held == victim:
                    self._emit(out, m, "AliasRemoved", {"name": m.name, "alias": alias, "version": victim,
                                                        "cause": "deleted"}, meta)
                    del m.aliases[alias]
            self._emit(out, m, "VersionDeleted", {"name": m.name, "version": victim, "reason": "superseded"}, meta)
            m.live.remove(victim)

    def _alias(self, out: list[NewEvent], m: _Model, alias: str, number: int) -> None:
        previous = m.aliases.get(alias)
        if previous == number:
            return
        self._emit(out, m, "AliasAssigned", {"name": m.name, "alias": alias, "version": number,
                                             "previous": previous}, self._meta())
        m.aliases[alias] = number

    def batches(self) -> Iterator[list[NewEvent]]:
        out: list[NewEvent] = []
        for m in self.models:
            self._emit(out, m, "ModelRegistered", {"name": m.name, "description": f"click-through model {m.name}",
                                                   "tags": {}}, self._meta())
        while self.position < self.total:
            self._new_version(out, self.rng.choice(self.models))
            if self.probe_at and self.position >= self.probe_at[0]:
                self._probe()
            if len(out) >= BATCH:
                yield out
                out = []
        if out:
            yield out


def seed_blobs(reg: Any) -> list[dict[str, Any]]:
    """A few real blobs in the store (the ingest's own facts for them), so the log refers to bytes that exist."""
    from workers.store import BlobStore

    store = BlobStore(reg.config.artifacts)
    rng = random.Random(11)
    out = []
    for _ in range(BLOBS):
        data = b"MLBENCH " + rng.randbytes(512)
        blob = store.put_bytes(data)
        out.append({"digest": blob.digest, "size": blob.size, "kind": "file", "format": "unknown", "unsafe": False,
                    "files": [{"path": "model.safetensors", "digest": blob.digest, "size": blob.size}]})
    return out


def open_registry(home: str):
    from modelledger import Registry

    return Registry.open(home=home, broker="embedded", actor=ACTOR, client="bench")


def build(home: str, total: int, probes: int, seed: int) -> dict[str, Any]:
    reg = open_registry(home)
    try:
        builder = LogBuilder(total, seed_blobs(reg), seed, probes)
        gen = append = 0.0
        it = builder.batches()
        while True:
            t = time.perf_counter()
            batch = next(it, None)
            gen += time.perf_counter() - t
            if batch is None:
                break
            t = time.perf_counter()
            reg.append_batch(batch)
            append += time.perf_counter() - t
        head = reg.head()
        t = time.perf_counter()
        reg.catalog().model(builder.models[0].name, versions=False)  # the first read folds the log in
        catch_up = time.perf_counter() - t
    finally:
        reg.close()
    return {"events": head, "versions": builder.versions, "probes": builder.probes, "gen_s": gen,
            "append_s": append, "catch_up_s": catch_up, "counts": builder.counts}


def raw_read_rate(db_path: str) -> float:
    """Events/s of reading the whole log and parsing its JSON: the floor of any replay."""
    conn = sqlite3.connect(db_path)
    try:
        loads = json.loads
        start = time.perf_counter()
        n = 0
        since = 0
        while True:
            rows = conn.execute("SELECT position, stream, version, type, data, meta, recorded_at, hash FROM events"
                                " WHERE position > ? ORDER BY position LIMIT 10000", (since,)).fetchall()
            if not rows:
                break
            for r in rows:
                loads(r[4])
                loads(r[5])
            n += len(rows)
            since = rows[-1][0]
        return n / (time.perf_counter() - start)
    finally:
        conn.close()


# -- time travel ------------------------------------------------------------------------------------

OPS = ("get NAME@N", "get NAME@production", "model (no versions)", "list limit=100", "list all")


def probe_once(reg: Any, probe: dict[str, Any]) -> dict[str, float]:
    out = {}
    past = reg.catalog(as_of=probe["position"])
    calls = {
        "get NAME@N": lambda: past.get(probe["version_ref"]),
        "get NAME@production": lambda: past.get(probe["alias_ref"]),
        "model (no versions)": lambda: past.model(probe["model"], versions=False),
        "list limit=100": lambda: past.list(limit=100),
        "list all": lambda: past.list(),
    }
    for op, call in calls.items():
        t = time.perf_counter()
        result = call()
        out[op] = (time.perf_counter() - t) * 1000
        if op == "list all" and len(result) < MODELS * 0.9:
            raise SystemExit(f"list as of #{probe['position']} found only {len(result)} models")
    return out


def bench_history(tmp: str, quick: bool) -> list[Row]:
    total = size("events", quick)
    positions = size("positions", quick)
    rounds = size("rounds", quick)
    rows: list[Row] = []
    with temp_dir(tmp, "hist-") as d:
        homes = {SMALL_EVENTS: os.path.join(d, "small"), total: os.path.join(d, "big")}
        builds = {}
        for n, home in homes.items():
            log(f"history: building a log of {n:,} events over {MODELS:,} models (append_batch, {BATCH:,}/batch)")
            builds[n] = build(home, n, positions, seed=n)
            b = builds[n]
            log(f"history: {b['events']:,} events, {b['versions']:,} versions: generated in {b['gen_s']:.1f} s, "
                f"appended in {b['append_s']:.1f} s, catalog catch-up {b['catch_up_s']:.1f} s")
        big = builds[total]
        db_big = os.path.join(homes[total], "registry.db")

        log(f"history: raw read of the {big['events']:,}-event log (baseline of whole-log work)")
        raw = raw_read_rate(db_big)
        append_rate = big["events"] / big["append_s"]
        catch_rate = big["events"] / big["catch_up_s"]
        mix = ", ".join(f"{k} {v:,}" for k, v in sorted(big["counts"].items(), key=lambda kv: -kv[1]))
        rows.append(Row(f"history: append_batch ({BATCH:,}/batch)", "modelledger", append_rate, "ev/s",
                        "raw read+json", raw, append_rate / raw,
                        note=f"{big['events']:,} events, {big['versions']:,} versions, {MODELS:,} models; mix: {mix}",
                        samples={"append_s": [big["append_s"]], "gen_s": [big["gen_s"]]}))
        rows.append(Row("history: catalog catch-up (first read)", "modelledger", catch_rate, "ev/s",
                        "raw read+json", raw, catch_rate / raw,
                        note=f"{big['catch_up_s']:.1f} s to fold {big['events']:,} events into the catalog "
                             "(one write transaction)",
                        samples={"catch_up_s": [big["catch_up_s"]]}))

        # Time travel, both registries open, alternating.
        regs = {n: open_registry(home) for n, home in homes.items()}
        try:
            samples: dict[int, dict[str, list[float]]] = {n: {op: [] for op in OPS} for n in regs}
            log(f"history: time travel, {rounds} rounds x {positions} positions x {len(OPS)} reads on each registry")
            for n, reg in regs.items():  # warm the page cache and the connections once
                probe_once(reg, builds[n]["probes"][-1])
            for r in range(rounds):
                order = list(regs.items()) if r % 2 == 0 else list(reversed(regs.items()))
                for k in range(positions):
                    for n, reg in order:
                        probes = builds[n]["probes"]
                        for op, ms in probe_once(reg, probes[k % len(probes)]).items():
                            samples[n][op].append(ms)
        finally:
            for reg in regs.values():
                reg.close()
        for op in OPS:
            b_ms, s_ms = median(samples[total][op]), median(samples[SMALL_EVENTS][op])
            ratio = b_ms / s_ms
            ok = ratio <= 2 and b_ms < 100
            rows.append(Row(f"as_of {op} @{total // 1000:,}k vs @10k", f"@{total // 1000:,}k", b_ms, "ms",
                            "@10k", s_ms, ratio, target="≤ 2 and < 100 ms", ok=ok,
                            note=(f"median of {len(samples[total][op])} ({positions} positions 10–100 % of the log); "
                                  f"p90 {percentile(samples[total][op], 90):.2f} ms vs "
                                  f"{percentile(samples[SMALL_EVENTS][op], 90):.2f} ms"),
                            samples={"big_ms": samples[total][op], "small_ms": samples[SMALL_EVENTS][op]}))

        reg = open_registry(homes[total])
        try:
            log(f"history: rebuild_projections over {big['events']:,} events")
            t = time.perf_counter()
            applied = reg.rebuild_projections()
            rebuild_s = time.perf_counter() - t
            rate = applied / rebuild_s
            rows.append(Row("history: rebuild_projections", "modelledger", rate, "ev/s", "raw read+json", raw,
                            rate / raw, note=f"{rebuild_s:.1f} s for {applied:,} events",
                            samples={"rebuild_s": [rebuild_s]}))
            log(f"history: audit over {big['events']:,} events")
            t = time.perf_counter()
            report = reg.audit()
            audit_s = time.perf_counter() - t
            rate = big["events"] / audit_s
            verdict = "ok" if getattr(report, "ok", None) else f"NOT ok: {report}"
            rows.append(Row("history: audit (chain + replay + blobs)", "modelledger", rate, "ev/s", "raw read+json",
                            raw, rate / raw, note=f"{audit_s:.1f} s; audit {verdict}",
                            samples={"audit_s": [audit_s]}))
        finally:
            reg.close()
        db_bytes = sum(os.path.getsize(db_big + s) for s in ("", "-wal") if os.path.exists(db_big + s))
        conn = sqlite3.connect(db_big)
        try:
            payload = conn.execute("SELECT sum(length(data) + length(meta)) FROM events").fetchone()[0] or 0
        finally:
            conn.close()
        rows.append(Row("history: registry.db size", "file", db_bytes / 1e6, "MB", "event JSON", payload / 1e6,
                        db_bytes / max(payload, 1),
                        note=(f"{db_bytes / big['events']:.0f} bytes per event on disk (log + catalog + temporal "
                              f"states + FTS), {payload / big['events']:.0f} bytes of data+meta JSON per event"),
                        samples={"db_bytes": [db_bytes], "payload_bytes": [payload]}))
    return rows


if __name__ == "__main__":  # a quick standalone check: python scripts/bench_history.py
    import sys

    from _benchlib import render

    with temp_dir(None, "mledger-bench-") as tmp_dir:
        print(render(bench_history(tmp_dir, "--quick" in sys.argv)))
