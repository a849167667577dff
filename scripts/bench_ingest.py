"""Section ``ingest`` of ``scripts/bench.py``: big files and a sharded folder into the local content-addressed
store, each beside the physical floor measured in the same run (issue 12, "Decided").

- **Floor** of a verified, durable copy of one file: the slower of one SHA-256 pass over it and ``cp`` +
  ``fsync`` of it. Each repeat measures both and the ingest (order shuffled), and the ratio is ingest /
  floor of that repeat. Target ≥ 0.7.
- **Sharded folder** (8 shards): ingest vs the parallel floor: the slower of one SHA-256 pass per core in
  parallel (one thread per core, each hashing the next shard: the CPU) and one ``cp`` per core + ``fsync`` of
  every shard (the storage), both measured in the same repeat on the same file system; the row says which
  one bounded each repeat. Target ≥ 0.7.
- Beside each floor, not part of it: ``dd oflag=direct conv=fsync`` of the same files (one per core for the
  folder), a durable copy that allocates no page cache. On a VM whose host takes freed memory back, ``cp``
  pays for faulting new page-cache pages in, which the register's direct writes do not; the note gives the
  register against the slower of this and the hash too, the stricter reading.
- **Second register** of the unchanged 1 GiB file (stat cache in the home): the whole ``Registry.register``
  call, timed in a child after a first register. Target ≤ 50 ms.
- **Peak RSS growth** of the ingest of a 2 GiB file (``VmHWM`` in a child). Target ≤ 100 MB. On every backend:
  the local folder, SQLite, PostgreSQL, MariaDB (blobs in chunk rows), S3 (a moto server) and Azure (Azurite):
  the bytes stream through; S3 and Azure in parallel parts (``workers/blobs/multipart.py``).
- The same file ingested twice through the stat cache: bytes the 2nd ingest wrote (target 0).

Files are random (a 64 MiB random block repeated: not sparse, does not compress), in the page cache (each
was just written and read once), as a model that was just saved. ``--dir`` puts the sources, the homes and the
floor's copies on another file system (``--dir /dev/shm``: tmpfs, where the CPU rather than the disk bounds the
floor). ``--compare NAME=TREE`` registers with another checkout's code too (its own ``.venv`` if it has one),
in the same repeats against the same floors. Ingests run in a child process that
reports its own time around the call (imports excluded). The machine may be shared: figures are medians of
repeats, compared as ratios within a repeat.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _benchlib import Row, add_repo_to_path, log, machine, median, render, temp_dir, tree_bytes

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
    tree = os.environ.get("MLEDGER_BENCH_TREE")
    if tree:  # ``--compare``: the product's packages from that checkout
        sys.path.insert(0, tree)
    from workers.blobs import open_store
    from workers.ingest import ingest_artifact

    out: dict[str, Any] = {}
    if mode == "durable":
        # What a user gets: Registry.register of a local file into a fresh home (no stat-cache entry, no blob to
        # deduplicate against), returning once the bytes are fsynced and the version committed.
        from modelledger.registry import Registry

        with Registry.open(store) as reg:
            # A first register of a small file imports what a register needs and opens the store: a pipeline's
            # steady state (a process's imports are bench_coldstart.py's; here they cost ~0.3 s of CPU).
            warm = os.path.join(store, "warm-up.bin")
            Path(warm).write_bytes(os.urandom(2 * 1024 * 1024))
            reg.register("warm-up", warm)
            written = reg.store().stats.blobs_written
            c0, t = os.times(), time.perf_counter()
            v = reg.register("bench-model", src)
            out["seconds"] = time.perf_counter() - t
            c1 = os.times()
            out["cpu_seconds"] = (c1.user - c0.user) + (c1.system - c0.system)
            out["size"] = v.artifact["size"]
            out["status"] = v.status
            out["code"] = os.path.dirname(os.path.dirname(sys.modules["workers.blobs"].__file__ or ""))
            if v.status != "ready" or reg.store().stats.blobs_written <= written:
                raise SystemExit(f"the register did not store new bytes: {v.status}, {reg.store().stats}")
    elif mode == "once":
        # The store is opened first (its driver imported, its client made): what is measured is the ingest.
        opened = open_store(store)
        hwm0, rss0, w0 = _status_kb("VmHWM"), _status_kb("VmRSS"), _wchar()
        t = time.perf_counter()
        facts = ingest_artifact(opened, src)
        out["seconds"] = time.perf_counter() - t
        out["hwm_before_kb"], out["rss_before_kb"], out["hwm_after_kb"] = hwm0, rss0, _status_kb("VmHWM")
        out["wchar"] = _wchar() - w0
        out["size"] = facts["size"]
    elif mode == "twice":  # through a stat cache, as a registry does
        cache = os.path.join(os.path.dirname(store), "statcache.db")
        ingest_artifact(open_store(store, statcache=cache), src)
        before, w0 = tree_bytes(store)[0], _wchar()
        t = time.perf_counter()
        facts = ingest_artifact(open_store(store, statcache=cache), src)
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


def run_child(mode: str, store: str, src: str, extra_env: dict[str, str] | None = None,
              tree: str | None = None) -> dict[str, Any]:
    """``mode`` in a child process; ``tree``: with that checkout's code (and its ``.venv`` if it has one)."""
    env = dict(os.environ, MLEDGER_ACTOR="bench@bench", MLEDGER_BROKER="embedded", **(extra_env or {}))
    env.pop("MLEDGER_ARTIFACTS", None)
    python = sys.executable
    if tree is not None:
        env["MLEDGER_BENCH_TREE"] = tree
        own = os.path.join(tree, ".venv", "bin", "python")
        python = own if os.path.exists(own) else python
    proc = subprocess.run([python, os.path.abspath(__file__), "--child", mode, store, src],
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


def _shard_paths(src: str) -> list[str]:
    return [os.path.join(src, n) for n in sorted(os.listdir(src))] if os.path.isdir(src) else [src]


def time_cp_fsync(src: str, dest: str) -> float:
    """``cp`` then ``fsync`` of the copy: a durable copy of one file, no hashing."""
    t = time.perf_counter()
    subprocess.run(["cp", src, dest], check=True)
    _fsync_path(dest)
    return time.perf_counter() - t


def time_cp_parallel(src: str, dest: str, workers: int) -> float:
    """A folder's files copied by ``workers`` ``cp`` processes at once (each its share, in turn), then every copy
    fsynced: what the storage takes durably when written from every core, no hashing. (One ``cp -r`` is
    bounded by one core's copy on a file system in memory: ~2 GB/s on tmpfs here, less than two SHA-256 passes.)"""
    files = _shard_paths(src)
    os.mkdir(dest)
    shares = [files[i::workers] for i in range(workers)]
    t = time.perf_counter()
    procs = [subprocess.Popen(["cp", *share, dest]) for share in shares if share]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"cp failed: {proc.args}")
    for name in sorted(os.listdir(dest)):
        _fsync_path(os.path.join(dest, name))
    return time.perf_counter() - t


def time_direct_copy(src: str, dest: str, workers: int) -> float:
    """``dd oflag=direct conv=fsync`` of each file, ``workers`` at once: a durable copy that allocates no page
    cache for the copy. Reported beside the floor, not part of it: on a VM whose host takes freed memory back
    (free page reporting), ``cp`` pays for faulting new page-cache pages in again, which a direct write does
    not (workers/blobs/localcopy.py), so this is the storage's own rate, the stricter bound."""
    files = _shard_paths(src)
    os.mkdir(dest)
    shares = [files[i::workers] for i in range(workers)]

    def dd(share: list[str]) -> str:
        return " && ".join(f"dd if={shlex.quote(f)} of={shlex.quote(os.path.join(dest, os.path.basename(f)))} "
                           "bs=1M oflag=direct conv=fsync status=none" for f in share)

    t = time.perf_counter()
    procs = [subprocess.Popen(["sh", "-c", dd(share)]) for share in shares if share]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"dd failed: {proc.args}")
    return time.perf_counter() - t


HASH_BUFFER = 1024 * 1024


def _sha256_file(path: str, buf: memoryview) -> None:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        while n := os.readv(fd, [buf]):
            h.update(buf[:n])
    finally:
        os.close(fd)


def time_sha256(src: str) -> float:
    """One SHA-256 pass on one core (a folder: its files one after the other), read into one buffer."""
    buf = memoryview(bytearray(HASH_BUFFER))
    t = time.perf_counter()
    for path in _shard_paths(src):
        _sha256_file(path, buf)
    return time.perf_counter() - t


def time_sha256_parallel(src: str, workers: int) -> float:
    """One SHA-256 pass per core at once: ``workers`` threads (hashlib releases the GIL on buffers over 2 KiB),
    each taking the next file and hashing it through its own buffer."""
    import threading

    files = _shard_paths(src)
    lock = threading.Lock()

    def work() -> None:
        buf = memoryview(bytearray(HASH_BUFFER))
        while True:
            with lock:
                if not files:
                    return
                path = files.pop(0)
            _sha256_file(path, buf)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def fs_facts(path: str) -> str:
    """The file system ``path`` is on (its type and mount point, from /proc/mounts) and its free space."""
    real = os.path.realpath(path)
    kind, mount = "?", ""
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mnt, fstype = line.split()[:3]
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(mount):  # the longest mount point holding it (the last one mounted)
                kind, mount = fstype, mnt
    except OSError:
        pass
    st = os.statvfs(real)
    return f"{kind} at {mount or '?'}, {st.f_bavail * st.f_frsize / 2**30:.1f} GiB free"


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


def _floor_rows(label: str, src: str, d: str, repeats: int, parallel: bool,
                compare: dict[str, str] | None = None) -> tuple[list[Row], list[dict[str, Any]]]:
    """``repeats`` × {register, SHA-256 pass, cp + fsync} in shuffled order; ratio per repeat. ``parallel``: the
    floor of a folder copied one file per core (the hashing and the copying both on every core at once).
    ``compare``: also register with these checkouts' code ({name: tree}), in the same repeats."""
    total = tree_bytes(src)[0] if os.path.isdir(src) else os.path.getsize(src)
    mb = total / 1e6
    gib = total / 2**30
    cores = _cores()
    subjects: dict[str, str | None] = {"this": None, **(compare or {})}
    home, copy = os.path.join(d, "home"), os.path.join(d, "copy")
    ing: dict[str, list[float]] = {k: [] for k in subjects}
    cpu: dict[str, list[float]] = {k: [] for k in subjects}
    ratios: dict[str, list[float]] = {k: [] for k in subjects}
    shas, cps, floors, bounds, loads, both, directs, strict = [], [], [], [], [], [], [], []
    children: list[dict[str, Any]] = []
    for r in range(repeats):
        got: dict[str, float] = {}

        def subject(name: str, tree: str | None, got: dict[str, float] = got) -> None:
            c = run_child("durable", home, src, tree=tree)
            children.append(c)
            _remove(home)
            got["ingest:" + name] = mb / c["seconds"]
            cpu[name].append(c["cpu_seconds"] / gib)

        def sha(got: dict[str, float] = got) -> None:
            got["sha"] = mb / (time_sha256_parallel(src, cores) if parallel else time_sha256(src))

        def cpf(got: dict[str, float] = got) -> None:
            got["cpf"] = mb / (time_cp_parallel(src, copy, cores) if parallel else time_cp_fsync(src, copy))
            _remove(copy)

        def direct(got: dict[str, float] = got) -> None:
            got["direct"] = mb / time_direct_copy(src, copy, cores if parallel else 1)
            _remove(copy)

        steps = [*(functools.partial(subject, k, v) for k, v in subjects.items()), sha, cpf, direct]
        random.Random(r).shuffle(steps)
        loads.append(os.getloadavg()[0])
        for step in steps:
            step()
        floor = min(got["sha"], got["cpf"])
        # Where both are the CPU's (a file system in memory), a one-pass ingest does both on the same cores:
        # this is the rate of the two passes one after the other, for reading the ratio, not the target.
        both.append(1 / (1 / got["sha"] + 1 / got["cpf"]))
        bounds.append("cpu" if got["sha"] <= got["cpf"] else "disk")
        shas.append(got["sha"])
        cps.append(got["cpf"])
        directs.append(got["direct"])
        strict.append(min(got["sha"], got["direct"]))
        floors.append(floor)
        for k in subjects:
            ing[k].append(got["ingest:" + k])
            ratios[k].append(got["ingest:" + k] / floor)
    what = f"one SHA-256 pass per core at once ({cores} threads)" if parallel else "one sha256 pass"
    copying = f"{cores} cp at once" if parallel else "cp"
    by_cpu = bounds.count("cpu")
    bound = ("the CPU (SHA-256)" if by_cpu == repeats else "the storage (cp + fsync)" if by_cpu == 0
             else f"the CPU in {by_cpu} of {repeats} repeats, else the storage")
    rows = []
    for k in subjects:
        ratio = median(ratios[k])
        name = label if k == "this" else f"{label} [{k}]"
        rows.append(Row(
            name, "register", median(ing[k]), "MB/s", "floor", median(floors), ratio, target="≥ 0.7", ok=ratio >= 0.7,
            note=(f"floor = slower of {what} (median {median(shas):,.0f} MB/s) and {copying} + fsync (median "
                  f"{median(cps):,.0f} MB/s), per repeat; bounded by {bound}; the hash and the copy one after the other "
                  f"{median(both):,.0f} MB/s (register / that: {median(ing[k]) / median(both):.2f}); beside the "
                  f"floor, not in it: {'one dd per core' if parallel else 'dd'} oflag=direct + fsync (no page cache "
                  f"allocated) {median(directs):,.0f} MB/s, register / the slower of it and the hash "
                  f"{median([x / y for x, y in zip(ing[k], strict, strict=True)]):.2f}; on "
                  f"{fs_facts(d)}; {repeats} repeats, "
                  f"shuffled; Registry.register into a fresh home each (no stat cache, no dedup), CPU "
                  f"{median(cpu[k]):.2f} s per GiB registered ({', '.join(f'{x:.2f}' for x in cpu[k])}); "
                  f"ratios {', '.join(f'{x:.2f}' for x in ratios[k])}; load at each repeat "
                  f"{', '.join(f'{x:.1f}' for x in loads)}" + (f"; code from {subjects[k]}" if subjects[k] else "")),
            samples={"register_mbs": ing[k], "sha256_mbs": shas, "cp_fsync_mbs": cps, "floor_mbs": floors,
                     "bound": bounds, "hash_then_copy_mbs": both, "direct_copy_mbs": directs, "ratio": ratios[k], "loadavg_1m": loads, "cpu_seconds_per_gib": cpu[k]}))
    return rows, children


PARTS = ("file", "folder", "again", "twice", "rss")
BACKENDS = ("sqlite", "postgres", "mysql", "s3", "azure")


def bench_ingest(tmp: str, quick: bool, parts: tuple[str, ...] = PARTS,
                 backends: tuple[str, ...] = BACKENDS, compare: dict[str, str] | None = None) -> list[Row]:
    """The section, or some of its ``parts`` (each under ~5 minutes alone on an idle machine), in ``tmp``.
    ``compare``: the file and folder parts also register with these checkouts' code ({name: tree})."""
    total = size("file", quick)
    repeats = size("repeats", quick)
    n = size("shards", quick)
    rows: list[Row] = []
    # At most a source, one copy of it (a home or the floor's copy) and the 2 GiB file of the RSS part at once.
    need = max(2 * total if {"file", "again", "twice"} & set(parts) else 0,
               2 * n * size("shard", quick) if "folder" in parts else 0,
               2 * size("big", quick) if "rss" in parts else 0) + 256 * 2**20
    st = os.statvfs(tmp)
    if st.f_bavail * st.f_frsize < need:
        raise SystemExit(f"not enough room for the bench on {fs_facts(tmp)}: it needs {need / 2**30:.1f} GiB")
    with temp_dir(tmp, "ingest-") as d:
        src = os.path.join(d, "model.bin")
        shards = os.path.join(d, "ckpt")
        if {"file", "again", "twice"} & set(parts):
            log(f"ingest: making a {total // 2**20} MiB file")
            make_file(src, total)
            time_sha256(src)  # in the page cache, as a model just saved
        if "folder" in parts:
            log(f"ingest: making a folder of {n} × {size('shard', quick) // 2**20} MiB shards")
            os.mkdir(shards)
            for i in range(n):
                make_file(os.path.join(shards, f"model-{i + 1:05d}-of-{n:05d}.safetensors"), size("shard", quick))
            time_sha256(shards)

        if "file" in parts:
            log(f"ingest: {repeats} repeats of the file vs its floor")
            frows, _ = _floor_rows(f"register {total // 2**20} MiB file vs floor", src, d, repeats, parallel=False,
                                   compare=compare)
            rows += frows
            log(render(frows))
        if "folder" in parts:
            log(f"ingest: {repeats} repeats of the sharded folder vs its floor")
            frows, _ = _floor_rows(f"register {n} × {size('shard', quick) // 2**20} MiB shards vs floor", shards, d,
                                   repeats, parallel=True, compare=compare)
            rows += frows
            log(render(frows))
            _remove(shards)

        if "again" in parts:
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
                            note=(f"whole Registry.register call (embedded, new version of the same model), 3 "
                                  f"children; stat cache hits {[c['hits'] for c in regs]}, bytes read by the 2nd "
                                  f"register {[c['rchar'] for c in regs]}"),
                            samples={"second_ms": secs}))
            log(render(rows[-1:]))

        if "twice" in parts:
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
        _remove(src)

        if "rss" in parts:
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
            rows += rss_every_backend(d, bigsrc, big, backends)
    return rows


# -- peak RSS on every backend (issue 12, points 2 and 3) ---------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Servers:
    """The stores beside the local one, each made for this run and removed after it: a moto S3 server, Azurite
    (``.ci/node_modules``), a PostgreSQL and a MariaDB database with random names. One that cannot start is
    reported as skipped."""

    def __init__(self, d: str) -> None:
        self.d = d
        self.procs: list[subprocess.Popen] = []
        self.cleanups: list[Any] = []

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning
                log(f"cleanup failed: {exc}")
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def s3(self) -> tuple[str, dict[str, str]]:
        port = _free_port()
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.procs.append(subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        endpoint = f"http://127.0.0.1:{port}"
        # moto completes a multipart upload by joining every part into one bytearray in Python: for 2 GiB that
        # took longer than s3fs' 15 s read timeout here, and botocore then resent CompleteMultipartUpload while
        # the first one still ran; the first removed the upload and closed its parts, so the resends failed
        # with 500 (moto's log: "ValueError: seek of closed file", then KeyError on the upload id). A real S3
        # keeps the connection alive while it completes. So the bench gives moto the time it needs.
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL_S3": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint,
               "FSSPEC_S3": json.dumps({"config_kwargs": {"read_timeout": 900}})}
        import s3fs

        for _ in range(100):
            try:
                s3fs.S3FileSystem(endpoint_url=endpoint, key="bench", secret="bench",
                                  skip_instance_cache=True).mkdir("bench")
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        return "s3://bench/store", env

    def azure(self) -> tuple[str, dict[str, str]]:
        import re

        binary = Path(__file__).resolve().parents[1] / ".ci" / "node_modules" / ".bin" / "azurite-blob"
        if not binary.exists():
            raise RuntimeError("Azurite not installed (npm ci --prefix .ci)")
        proc = subprocess.Popen([str(binary), "--location", os.path.join(self.d, "azurite"), "--blobHost",
                                 "127.0.0.1", "--blobPort", "0", "--skipApiVersionCheck", "--loose",
                                 "--disableTelemetry", "--silent"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        self.procs.append(proc)
        port = None
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            raise RuntimeError("Azurite did not start")
        import threading

        # Keep reading its output: a full pipe would stop Azurite mid-upload.
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
        key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
        conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
                f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
        import adlfs

        adlfs.AzureBlobFileSystem(connection_string=conn, skip_instance_cache=True).mkdir("bench")
        return "az://bench/store", {"AZURE_STORAGE_CONNECTION_STRING": conn}

    def postgres(self) -> tuple[str, dict[str, str]]:
        import uuid

        import psycopg

        admin = os.environ.get("MLEDGER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
        name = f"mledger_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # our own random name, never input

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        self.cleanups.append(drop)
        return admin.rsplit("/", 1)[0] + "/" + name, {}

    def mysql(self) -> tuple[str, dict[str, str]]:
        import uuid

        import pymysql

        name = f"mledger_bench_{uuid.uuid4().hex[:12]}"
        with pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=3, autocommit=True) as conn:
            conn.cursor().execute(f"CREATE DATABASE `{name}`")  # our own random name, never input

        def drop() -> None:
            with pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True) as conn:
                conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")

        self.cleanups.append(drop)
        return f"mysql://root@127.0.0.1:3306/{name}", {}

    def sqlite(self) -> tuple[str, dict[str, str]]:
        return f"sqlite://{os.path.join(self.d, 'blobs.db')}", {}


def rss_every_backend(d: str, src: str, big: int, backends: tuple[str, ...] = BACKENDS) -> list[Row]:
    """The ingest of ``src`` (a child process per backend) into each store: its peak RSS growth and rate.
    memory:// is not a case: it holds the bytes in the process by design. OSS runs s3fs' code of S3."""
    rows: list[Row] = []
    servers = _Servers(d)
    try:
        for name in backends:
            log(f"ingest: peak RSS for a {big // 2**20} MiB file into {name}")
            try:
                url, env = getattr(servers, name)()
                c = run_child("once", url, src, env)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a store that is not here: say so, go on
                rows.append(Row(f"ingest peak RSS growth, {name}", "VmHWM growth", float("nan"), "MB", "file size",
                                big / 2**20, float("nan"), target="≤ 100 MB", ok=None,
                                note=f"skipped: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"))
                continue
            g = (c["hwm_after_kb"] - c["hwm_before_kb"]) / 1024
            log(f"ingest: {name}: peak RSS growth {g:.1f} MB, {big / 1e6 / c['seconds']:,.0f} MB/s")
            rows.append(Row(f"ingest peak RSS growth, {name} ({big // 2**20} MiB file)", "VmHWM growth", g, "MB",
                            "file size", big / 2**20, g / (big / 2**20), target="≤ 100 MB", ok=g <= 100,
                            note=(f"child process: RSS {c['rss_before_kb'] / 1024:.0f} MB before, peak "
                                  f"{c['hwm_after_kb'] / 1024:.0f} MB after; {big / 1e6 / c['seconds']:,.0f} MB/s"),
                            samples={"growth_mib": [g], "seconds": [c["seconds"]]}))
    finally:
        servers.close()
    return rows


def main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="The ingest section of scripts/bench.py, alone.")
    ap.add_argument("--quick", action="store_true", help="smaller files, 2 repeats")
    ap.add_argument("--only", action="append", choices=PARTS, help="run this part (repeatable); default all")
    ap.add_argument("--backend", action="append", choices=BACKENDS,
                    help="the peak-RSS part on this backend only (repeatable); default all")
    ap.add_argument("--json", help="write the rows and the machine's facts here")
    ap.add_argument("--dir", help="put the sources, homes and the floor's copies under this folder (its file "
                                  "system: e.g. /dev/shm, tmpfs, where the CPU bounds the floor); default: the temp dir")
    ap.add_argument("--repeats", type=int, help="repeats of the file and folder parts (default 5, --quick 2)")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=TREE",
                    help="the file and folder parts also register with this checkout's code, in the same repeats")
    args = ap.parse_args(argv)
    compare = {}
    for item in args.compare:
        name, sep, tree = item.partition("=")
        if not sep or not os.path.isdir(os.path.join(tree, "workers")):
            ap.error(f"--compare wants NAME=TREE, TREE a checkout of this project: {item}")
        compare[name] = os.path.abspath(tree)
    if args.repeats:
        SIZES["repeats"] = (args.repeats, args.repeats)
    facts = machine()
    print(f"machine: nproc {facts['nproc']}, CPython {facts['python']}, {facts['platform']}, "
          f"loadavg {facts['loadavg']}")
    t = time.perf_counter()
    with temp_dir(args.dir, "mledger-bench-") as tmp_dir:
        print(f"files on {fs_facts(tmp_dir)}")
        rows = bench_ingest(tmp_dir, args.quick, tuple(args.only or PARTS), tuple(args.backend or BACKENDS), compare)
    end = machine()["loadavg"]
    print(render(rows))
    print(f"{len(rows)} rows in {time.perf_counter() - t:.0f} s; loadavg at the end {end}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": facts, "loadavg_end": end,
                                               "rows": [r.to_json() for r in rows]}, indent=1, default=str))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4])))
        raise SystemExit(0)
    main(sys.argv[1:])
