"""Section ``ingest`` of ``scripts/bench.py``: big files and a sharded folder into the local content-addressed
store, each beside the physical floor measured in the same run (issue 12, "Decided").

- **Floor** of a verified, durable copy of one file: the slower of one SHA-256 pass over it and ``cp`` +
  ``fsync`` of it. Each repeat measures both and the ingest (order shuffled), and the ratio is ingest /
  floor of that repeat. Target ≥ 0.7.
- **Sharded folder** (8 shards): ingest vs the parallel floor: the slower of (cores × one core's SHA-256 rate,
  measured on the shards in the same repeat) and ``cp -r`` + ``fsync`` of every shard (the disk). Target ≥ 0.7.
- **Second register** of the unchanged 1 GiB file (stat cache in the home): the whole ``Registry.register``
  call, timed in a child after a first register. Target ≤ 50 ms.
- **Peak RSS growth** of the ingest of a 2 GiB file (``VmHWM`` in a child). Target ≤ 100 MB.
- The same file ingested twice through the stat cache: bytes the 2nd ingest wrote (target 0).

Files are random (a 64 MiB random block repeated: not sparse, does not compress), in the page cache (each
was just written and read once), as a model that was just saved. Ingests run in a child process that
reports its own time around the call (imports excluded). The machine may be shared: figures are medians of
repeats, compared as ratios within a repeat.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _benchlib import Row, add_repo_to_path, log, median, temp_dir, tree_bytes

BLOCK = 64 * 1024 * 1024


def make_file(path: str, total: int) -> None:
    block = os.urandom(BLOCK)
    with open(path, "wb") as f:
        written = 0
        while written < total:
            n = min(BLOCK, total - written)
            f.write(block[:n])
            written += n
        f.flush()
        os.fsync(f.fileno())


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _wchar() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


# -- the child ---------------------------------------------------------------------------------------

def child(mode: str, store: str, src: str) -> dict[str, Any]:
    add_repo_to_path()
    from workers.ingest import ingest_artifact
    from workers.store import BlobStore

    out: dict[str, Any] = {}
    if mode == "once":
        hwm0, rss0, w0 = _status_kb("VmHWM"), _status_kb("VmRSS"), _wchar()
        t = time.perf_counter()
        facts = ingest_artifact(store, src)
        out["seconds"] = time.perf_counter() - t
        out["hwm_before_kb"], out["rss_before_kb"], out["hwm_after_kb"] = hwm0, rss0, _status_kb("VmHWM")
        out["wchar"] = _wchar() - w0
        out["size"] = facts["size"]
    elif mode == "twice":  # through a stat cache, as a registry does
        cache = os.path.join(os.path.dirname(store), "statcache.db")
        ingest_artifact(BlobStore(store, statcache=cache), src)
        before, w0 = tree_bytes(store)[0], _wchar()
        t = time.perf_counter()
        facts = ingest_artifact(BlobStore(store, statcache=cache), src)
        out["seconds"] = time.perf_counter() - t
        out["wchar"] = _wchar() - w0
        out["store_bytes_added"] = tree_bytes(store)[0] - before
        out["store_bytes"] = tree_bytes(store)[0]
        out["size"] = facts["size"]
    else:  # register: a registry in ``store`` (its home), the file registered twice
        from modelledger.registry import Registry

        with Registry.open(store) as reg:
            t = time.perf_counter()
            reg.register("bench-model", src)
            out["first_seconds"] = time.perf_counter() - t
        with Registry.open(store) as reg:
            r0 = _rchar()
            t = time.perf_counter()
            v = reg.register("bench-model", src)
            out["seconds"] = time.perf_counter() - t
            out["rchar"] = _rchar() - r0
            cache = reg.store().statcache
            out["hits"] = cache.hits if cache is not None else 0
            out["version"] = v.version
    return out


def _rchar() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def run_child(mode: str, store: str, src: str) -> dict[str, Any]:
    env = dict(os.environ, MLEDGER_ACTOR="bench@bench", MLEDGER_BROKER="embedded")
    env.pop("MLEDGER_ARTIFACTS", None)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, store, src],
                          capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"ingest child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the baselines -----------------------------------------------------------------------------------

def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def time_cp_fsync(src: str, dest: str) -> float:
    """``cp`` (``cp -r`` for a folder) then ``fsync`` of every file copied: a durable copy, no hashing."""
    t = time.perf_counter()
    subprocess.run(["cp", "-r", src, dest], check=True)
    if os.path.isdir(dest):
        for name in sorted(os.listdir(dest)):
            _fsync_path(os.path.join(dest, name))
    else:
        _fsync_path(dest)
    return time.perf_counter() - t


def time_sha256(src: str) -> float:
    """One SHA-256 pass on one core (a folder: its files one after the other)."""
    files = [os.path.join(src, n) for n in sorted(os.listdir(src))] if os.path.isdir(src) else [src]
    t = time.perf_counter()
    for path in files:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(8 * 1024 * 1024):
                h.update(chunk)
    return time.perf_counter() - t


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- the section -------------------------------------------------------------------------------------

SIZES = {
    #                  full                    quick
    "file": (1024 * 1024 * 1024, 256 * 1024 * 1024),
    "big": (2048 * 1024 * 1024, 512 * 1024 * 1024),
    "shard": (256 * 1024 * 1024, 32 * 1024 * 1024),
    "shards": (8, 8),
    "repeats": (5, 2),
}


def size(key: str, quick: bool) -> int:
    full, small = SIZES[key]
    return small if quick else full


def _floor_rows(label: str, src: str, d: str, repeats: int, parallel: bool) -> tuple[Row, list[dict[str, Any]]]:
    """``repeats`` × {ingest, sha256 pass, cp + fsync} in shuffled order; ratio per repeat."""
    total = tree_bytes(src)[0] if os.path.isdir(src) else os.path.getsize(src)
    mb = total / 1e6
    cores = _cores()
    store, copy = os.path.join(d, "store"), os.path.join(d, "copy")
    ing, shas, cps, floors, ratios, children = [], [], [], [], [], []
    for r in range(repeats):
        got: dict[str, float] = {}

        def subject(got: dict[str, float] = got) -> None:
            c = run_child("once", store, src)
            children.append(c)
            _remove(store)
            got["ingest"] = mb / c["seconds"]

        def sha(got: dict[str, float] = got) -> None:
            got["sha"] = mb / time_sha256(src)

        def cpf(got: dict[str, float] = got) -> None:
            got["cpf"] = mb / time_cp_fsync(src, copy)
            _remove(copy)

        steps = [subject, sha, cpf]
        random.Random(r).shuffle(steps)
        for step in steps:
            step()
        hashing = got["sha"] * (cores if parallel else 1)
        floor = min(hashing, got["cpf"])
        ing.append(got["ingest"])
        shas.append(got["sha"])
        cps.append(got["cpf"])
        floors.append(floor)
        ratios.append(got["ingest"] / floor)
    ratio = median(ratios)
    what = f"{cores} cores × one core's sha256" if parallel else "one sha256 pass"
    row = Row(label, "ingest_artifact", median(ing), "MB/s", "floor", median(floors), ratio, target="≥ 0.7",
              ok=ratio >= 0.7,
              note=(f"floor = slower of {what} (median {median(shas) * (cores if parallel else 1):,.0f} MB/s) and "
                    f"cp{' -r' if parallel else ''} + fsync (median {median(cps):,.0f} MB/s), per repeat; "
                    f"{repeats} repeats, shuffled; fresh store each (no dedup); ratios {', '.join(f'{x:.2f}' for x in ratios)}"),
              samples={"ingest_mbs": ing, "sha256_mbs": shas, "cp_fsync_mbs": cps, "floor_mbs": floors,
                       "ratio": ratios})
    return row, children


def bench_ingest(tmp: str, quick: bool) -> list[Row]:
    total = size("file", quick)
    repeats = size("repeats", quick)
    rows: list[Row] = []
    with temp_dir(tmp, "ingest-") as d:
        src = os.path.join(d, "model.bin")
        log(f"ingest: making a {total // 2**20} MiB file and a folder of {size('shards', quick)} × "
            f"{size('shard', quick) // 2**20} MiB shards")
        make_file(src, total)
        shards = os.path.join(d, "ckpt")
        os.mkdir(shards)
        n = size("shards", quick)
        for i in range(n):
            make_file(os.path.join(shards, f"model-{i + 1:05d}-of-{n:05d}.safetensors"), size("shard", quick))
        time_sha256(src)
        time_sha256(shards)  # in the page cache, as a model just saved

        log(f"ingest: {repeats} repeats of the file vs its floor")
        row, children = _floor_rows(f"ingest {total // 2**20} MiB file vs floor", src, d, repeats, parallel=False)
        rows.append(row)
        log(f"ingest: {repeats} repeats of the sharded folder vs its floor")
        frow, _ = _floor_rows(f"ingest {n} × {size('shard', quick) // 2**20} MiB shards vs floor", shards, d,
                              repeats, parallel=True)
        rows.append(frow)

        log("ingest: second register of the unchanged file")
        # The stat cache trusts a file only once its last change is safely in the past (workers/statcache.py).
        time.sleep(max(0.0, 2.5 - (time.time() - os.stat(src).st_mtime)))
        regs = []
        for _ in range(3):
            home = os.path.join(d, "home")
            regs.append(run_child("register", home, src))
            _remove(home)
        secs = [c["seconds"] * 1000 for c in regs]
        rows.append(Row(f"register unchanged {total // 2**20} MiB file again", "2nd register", median(secs), "ms",
                        "1st register", median([c["first_seconds"] * 1000 for c in regs]),
                        median(secs) / median([c["first_seconds"] * 1000 for c in regs]), target="≤ 50 ms",
                        ok=median(secs) <= 50,
                        note=(f"whole Registry.register call (embedded, new version of the same model), 3 children; "
                              f"stat cache hits {[c['hits'] for c in regs]}, bytes read by the 2nd register "
                              f"{[c['rchar'] for c in regs]}"),
                        samples={"second_ms": secs}))

        log("ingest: the same file twice through the stat cache")
        twice = run_child("twice", os.path.join(d, "store"), src)
        _remove(os.path.join(d, "store"))
        written = max(twice["store_bytes_added"], twice["wchar"])
        rows.append(Row("ingest same file twice: 2nd writes", "2nd ingest", float(written), "B",
                        "1st ingest", float(twice["store_bytes"]), written / max(twice["store_bytes"], 1),
                        target="= 0", ok=written == 0,
                        note=(f"store folder grew {twice['store_bytes_added']} B, write() got {twice['wchar']} B; "
                              f"2nd ingest took {twice['seconds'] * 1000:.1f} ms (stat cache: nothing read)"),
                        samples={"second": [twice]}))
        _remove(shards)

        big = size("big", quick)
        log(f"ingest: peak RSS for a {big // 2**20} MiB file")
        bigsrc = os.path.join(d, "big.bin")
        make_file(bigsrc, big)
        c = run_child("once", os.path.join(d, "store"), bigsrc)
        _remove(os.path.join(d, "store"))
        g = (c["hwm_after_kb"] - c["hwm_before_kb"]) / 1024
        rows.append(Row(f"ingest peak RSS growth ({big // 2**20} MiB file)", "VmHWM growth", g, "MB", "file size",
                        big / 2**20, g / (big / 2**20), target="≤ 100 MB", ok=g <= 100,
                        note=(f"child process: RSS {c['rss_before_kb'] / 1024:.0f} MB before the call, peak "
                              f"{c['hwm_after_kb'] / 1024:.0f} MB after; MiB; {big / 1e6 / c['seconds']:,.0f} MB/s"),
                        samples={"growth_mib": [g]}))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4])))
        raise SystemExit(0)
    from _benchlib import render

    with temp_dir(None, "mledger-bench-") as tmp_dir:
        print(render(bench_ingest(tmp_dir, "--quick" in sys.argv)))
