"""Section ``redis`` of ``scripts/bench.py``: register → ready through the Redis broker and a real worker.

``mledger worker --threads 4`` runs as a subprocess (``MLEDGER_HOME`` = a temp home, ``MLEDGER_BROKER`` =
``redis://127.0.0.1:6379/15``; never flushed: the bench's registry has a Redis namespace of its own, and only
that namespace's keys are deleted afterwards, so a test run sharing the database loses nothing). The bench process opens the same home with ``Registry.open(home, broker=url)`` and times
``register(name, small_file)`` (each file different, a few hundred bytes) until it returns ``ready`` (the
SDK waits by default in Redis mode: the version is appended ``pending``, the job goes through Redis, the
worker ingests and appends ``ArtifactStored``, the SDK polls the catalog). Baseline, in the same run: the
same registers on an embedded registry (ingest in-process, one commit). The broker is process-global, so
the two sides alternate in blocks (one registry open at a time), each block after one unmeasured register.
``MLEDGER_BENCH_REDIS`` overrides the URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC
from typing import Any

from _benchlib import Row, add_repo_to_path, log, median, percentile, small_files, temp_dir

add_repo_to_path()

REDIS_URL = os.environ.get("MLEDGER_BENCH_REDIS", "redis://127.0.0.1:6379/15")
ACTOR = "bench@modelledger"
SIZES = {
    #              full  quick
    "registers": (50, 20),
    "blocks": (5, 2),
}


def size(key: str, quick: bool) -> int:
    full, small = SIZES[key]
    return small if quick else full


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


def start_worker(home: str, url: str, logfile: str) -> subprocess.Popen:
    from pathlib import Path

    mledger = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "mledger"
    exe = str(mledger) if mledger.exists() else "mledger"
    env = {**os.environ, "MLEDGER_HOME": home, "MLEDGER_BROKER": url, "MLEDGER_ACTOR": ACTOR}
    out = open(logfile, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([exe, "worker", "--threads", "4"], env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_worker(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
            return "stopped by SIGTERM"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return "killed after 20 s (SIGTERM did not stop it)"
    return f"had already exited ({proc.returncode})"


def _epoch(recorded_at: str) -> float:
    from datetime import datetime

    return datetime.strptime(recorded_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def time_block(home: str, broker: str, files: list[str], warm: str, tag: str,
               phases: dict[str, list[float]] | None = None) -> list[float]:
    """ms per register; ``phases`` gets, per register, where the time went according to the log's
    ``recorded_at`` (taken just before each insert): SDK until the version's event, that event until
    ``ArtifactStored`` (queue + worker pick-up + ingest + decide), then until the SDK returned (the
    outcome's commit + the SDK's polling)."""
    from modelledger import Registry

    reg = Registry.open(home, broker=broker, actor=ACTOR, client="bench")
    try:
        reg.register(f"bench/{tag}-warm", artifact=warm, timeout=120)
        out, spans = [], []
        for i, path in enumerate(files):
            w0, t = time.time(), time.perf_counter()
            v = reg.register(f"bench/{tag}-{i % 5}", artifact=path, timeout=60)
            out.append((time.perf_counter() - t) * 1000)
            spans.append((v.ref, w0, w0 + out[-1] / 1000))
            if v.status != "ready":
                raise SystemExit(f"register returned {v.ref} with status {v.status}")
        if phases is not None:
            for ref, start, end in spans:
                events = reg.history(ref)
                created = next(e for e in events if e.type in ("VersionRegistered", "ParamsUpdated"))
                stored = next(e for e in events if e.type == "ArtifactStored")
                a, b = _epoch(created.recorded_at), _epoch(stored.recorded_at)
                phases.setdefault("sdk→append", []).append((a - start) * 1000)
                phases.setdefault("append→stored", []).append((b - a) * 1000)
                phases.setdefault("stored→return", []).append((end - b) * 1000)
        return out
    finally:
        reg.close()


def bench_redis(tmp: str, quick: bool) -> list[Row]:
    url = REDIS_URL
    try:
        client = redis_client(url)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis here
        log(f"redis: SKIPPED, {url} not reachable ({type(exc).__name__}: {exc})")
        print(f"redis section skipped: {url} not reachable ({type(exc).__name__})", flush=True)
        return []
    n, blocks = size("registers", quick), size("blocks", quick)
    per = n // blocks
    rows: list[Row] = []
    with temp_dir(tmp, "redis-") as d:
        files = small_files(os.path.join(d, "src"), 2 * n + 2 * blocks, seed=5)
        redis_files, embedded_files = files[:n], files[n:2 * n]
        warms = files[2 * n:]
        home_r, home_e = os.path.join(d, "home-redis"), os.path.join(d, "home-embedded")
        from modelledger import Registry

        with Registry.open(home_r, broker=url, actor=ACTOR) as reg:  # made before the worker opens it
            namespace = reg.broker.namespace
        logfile = os.path.join(d, "worker.log")
        worker = start_worker(home_r, url, logfile)
        samples: dict[str, list[float]] = {"redis": [], "embedded": []}
        phases: dict[str, list[float]] = {}
        stopped = ""
        try:
            log(f"redis: {n} registers through `mledger worker --threads 4` vs {n} embedded, {blocks} blocks each")
            for b in range(blocks):
                sides = [("redis", home_r, url, redis_files), ("embedded", home_e, "embedded", embedded_files)]
                if b % 2:
                    sides.reverse()
                for side, home, broker, pool in sides:
                    if side == "redis" and worker.poll() is not None:
                        raise SystemExit(f"the worker exited ({worker.returncode}); see its log:\n"
                                         + open(logfile, errors="replace").read()[-3000:])
                    warm = warms[2 * b + (side == "embedded")]
                    samples[side] += time_block(home, broker, pool[b * per:(b + 1) * per], warm, f"{side}-{b}",
                                                phases if side == "redis" else None)
        finally:
            stopped = stop_worker(worker)
            try:
                keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
                if keys:
                    client.delete(*keys)
            except Exception:  # noqa: BLE001 - best effort cleanup of the bench's own keys
                pass
            from workers.broker import use

            use("embedded")  # later sections of this process run embedded
        r, e = samples["redis"], samples["embedded"]
        ratio = median(r) / median(e)
        rows.append(Row("register→ready via Redis + worker", "redis", median(r), "ms", "embedded", median(e), ratio,
                        target="median ≤ 100 ms", ok=median(r) <= 100,
                        note=(f"median of {len(r)} vs {len(e)}; p90 {percentile(r, 90):.1f} ms vs "
                              f"{percentile(e, 90):.1f} ms; max {max(r):.1f} ms; worker {stopped}"),
                        samples={"redis_ms": r, "embedded_ms": e}))
        rows.append(Row("register→ready via Redis, p90", "redis p90", percentile(r, 90), "ms", "embedded p90",
                        percentile(e, 90), percentile(r, 90) / percentile(e, 90),
                        note=("informational; where the Redis median goes (log recorded_at): "
                              + ", ".join(f"{k} {median(v):.1f} ms (p90 {percentile(v, 90):.1f})"
                                          for k, v in phases.items())),
                        samples=phases))
    return rows


if __name__ == "__main__":
    import sys

    from _benchlib import render

    with temp_dir(None, "mledger-bench-") as tmp_dir:
        print(render(bench_redis(tmp_dir, "--quick" in sys.argv)))
