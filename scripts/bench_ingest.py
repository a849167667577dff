"""Section ``ingest`` of ``scripts/bench.py``: a big file into the local content-addressed store.

One 1 GiB file (``--quick``: 256 MiB) of random bytes (a 64 MiB random block repeated: not sparse, does
not compress) is made once. Each repeat ingests it into a *fresh* store through
``workers.ingest.ingest_artifact(store_url, path)`` — nothing deduplicates — and, back to back (alternating
which goes first), copies it with ``cp`` (no ``sync``); both outputs are removed between repeats. The ingest
runs in a child process, which reports its own time (around the call only, imports excluded), the growth of
its peak RSS (``VmHWM``) across the call, and the bytes it passed to ``write()`` (``/proc/self/io`` wchar).
The ``cp`` time is the wall time of the subprocess.

A second child ingests the same file twice into one store and reports what the second ingest wrote:
bytes added under the store folder (walked) and bytes passed to ``write()`` — both must be 0.

Informational: ``cp`` followed by ``fsync`` of the copy (the store fsyncs every blob; ``cp`` does not),
one ``sha256`` pass over the file, and a one-pass hashing copy in Python (read, sha256, write, fsync): the
floor of any design that must hash the bytes. (GNU ``cp`` 9 uses ``copy_file_range``: the kernel copies
page cache to page cache and no byte reaches user space, which a hashing ingest cannot match.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _benchlib import Row, add_repo_to_path, log, median, temp_dir, tree_bytes

BLOCK = 64 * 1024 * 1024
SIZES = {
    #                  full             quick
    "bytes": (1024 * 1024 * 1024, 256 * 1024 * 1024),
    "repeats": (3, 2),
}


def size(key: str, quick: bool) -> int:
    full, small = SIZES[key]
    return small if quick else full


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

    out: dict[str, Any] = {}
    if mode == "once":
        hwm0, rss0, w0 = _status_kb("VmHWM"), _status_kb("VmRSS"), _wchar()
        t = time.perf_counter()
        facts = ingest_artifact(store, src)
        out["seconds"] = time.perf_counter() - t
        out["hwm_before_kb"], out["rss_before_kb"], out["hwm_after_kb"] = hwm0, rss0, _status_kb("VmHWM")
        out["wchar"] = _wchar() - w0
        out["size"] = facts["size"]
        out["format"] = facts.get("format")
    else:  # twice
        ingest_artifact(store, src)
        before, w0 = tree_bytes(store)[0], _wchar()
        t = time.perf_counter()
        facts = ingest_artifact(store, src)
        out["seconds"] = time.perf_counter() - t
        out["wchar"] = _wchar() - w0
        out["store_bytes_added"] = tree_bytes(store)[0] - before
        out["store_bytes"] = tree_bytes(store)[0]
        out["size"] = facts["size"]
    return out


def run_child(mode: str, store: str, src: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, store, src],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ingest child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the section -------------------------------------------------------------------------------------

def time_cp(src: str, dest: str, fsync: bool = False) -> float:
    t = time.perf_counter()
    subprocess.run(["cp", src, dest], check=True)
    if fsync:
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - t


def time_sha256(src: str) -> float:
    h = hashlib.sha256()
    t = time.perf_counter()
    with open(src, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    return time.perf_counter() - t


def time_one_pass(src: str, dest: str) -> float:
    """The floor of a hashing copy in Python: read 8 MiB, sha256 it, write it, fsync once."""
    h = hashlib.sha256()
    t = time.perf_counter()
    with open(src, "rb") as f, open(dest, "wb") as out:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - t


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def bench_ingest(tmp: str, quick: bool) -> list[Row]:
    total = size("bytes", quick)
    repeats = size("repeats", quick)
    mb = total / 1e6
    rows: list[Row] = []
    with temp_dir(tmp, "ingest-") as d:
        src = os.path.join(d, "model.bin")
        log(f"ingest: making a {total // 2**20} MiB file (64 MiB random block repeated)")
        make_file(src, total)
        time_sha256(src)  # the source in the page cache for both sides, as after its own write
        store, copy = os.path.join(d, "store"), os.path.join(d, "copy.bin")
        ing, cps, ratios, children = [], [], [], []
        log(f"ingest: {repeats} repeats of ingest_artifact (fresh store, child process) vs cp, alternating")
        for r in range(repeats):
            def subject() -> float:
                c = run_child("once", store, src)
                children.append(c)
                _remove(store)
                return mb / c["seconds"]

            def baseline() -> float:
                s = time_cp(src, copy)
                _remove(copy)
                return mb / s

            if r % 2 == 0:
                s, b = subject(), baseline()
            else:
                b, s = baseline(), subject()
            ing.append(s)
            cps.append(b)
            ratios.append(s / b)
        ratio = median(ratios)
        rows.append(Row(f"ingest {total // 2**20} MiB local → local", "ingest_artifact", median(ing), "MB/s", "cp",
                        median(cps), ratio, target="≥ 0.7", ok=ratio >= 0.7,
                        note=(f"fresh store each repeat (no dedup), {repeats} repeats; the store hashes, writes a "
                              "temp, fsyncs, links into place; cp does not sync"),
                        samples={"ingest_mbs": ing, "cp_mbs": cps, "ratio": ratios}))

        growth = [(c["hwm_after_kb"] - c["hwm_before_kb"]) / 1024 for c in children]
        g = median(growth)
        rows.append(Row("ingest peak RSS growth", "VmHWM growth", g, "MB", "file size", total / 2**20,
                        g / (total / 2**20), target="≤ 100 MB", ok=g <= 100,
                        note=(f"child process: RSS {median([c['rss_before_kb'] for c in children]) / 1024:.0f} MB "
                              f"before the call, peak {median([c['hwm_after_kb'] for c in children]) / 1024:.0f} MB "
                              "after; MiB"),
                        samples={"growth_mib": growth}))

        log("ingest: informational baselines (cp + fsync, one sha256 pass)")
        syncs, shas, floors = [], [], []
        for _ in range(repeats):
            syncs.append(mb / time_cp(src, copy, fsync=True))
            _remove(copy)
            shas.append(mb / time_sha256(src))
            floors.append(mb / time_one_pass(src, copy))
            _remove(copy)
        rows.append(Row("ingest vs cp + fsync (informational)", "ingest_artifact", median(ing), "MB/s",
                        "cp+fsync", median(syncs), median(ing) / median(syncs),
                        note=(f"one sha256 pass over the file: {median(shas):,.0f} MB/s; bytes the ingest passed "
                              f"to write(): {median([c['wchar'] for c in children]) / 1e6:,.0f} MB"),
                        samples={"cp_fsync_mbs": syncs, "sha256_mbs": shas}))
        rows.append(Row("ingest vs one-pass hashing copy (informational)", "ingest_artifact", median(ing), "MB/s",
                        "read+sha256+write+fsync", median(floors), median(ing) / median(floors),
                        note="the baseline is the floor of any ingest that hashes in Python: one pass, one fsync",
                        samples={"one_pass_mbs": floors}))

        log("ingest: the same artifact twice into one store")
        twice = run_child("twice", store, src)
        _remove(store)
        written = max(twice["store_bytes_added"], twice["wchar"])
        rows.append(Row("ingest same artifact twice: 2nd writes", "2nd ingest", float(written), "B",
                        "1st ingest", float(twice["store_bytes"]), written / max(twice["store_bytes"], 1),
                        target="= 0", ok=written == 0,
                        note=(f"store folder grew {twice['store_bytes_added']} B, write() got {twice['wchar']} B; "
                              f"2nd ingest took {twice['seconds']:.2f} s ({mb / twice['seconds']:,.0f} MB/s, "
                              "hash only)"),
                        samples={"second": [twice]}))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4])))
        raise SystemExit(0)
    from _benchlib import render

    with temp_dir(None, "mledger-bench-") as tmp_dir:
        print(render(bench_ingest(tmp_dir, "--quick" in sys.argv)))
