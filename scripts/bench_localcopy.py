"""The local one-pass copy (``workers/blobs/localcopy.py``) beside its parts, in one process, in shuffled order:

- ``sha``: one SHA-256 pass over the file (8 MiB reads), the floor's hashing side;
- ``cp``: ``cp`` + ``fsync``, the floor's copying side (its ``fsync`` share printed);
- ``copy``: ``copy_hashing`` into a new file + ``fsync`` (the writeback head start on);
- ``copy_nowb``: the same without the head start (``WRITEBACK_BYTES`` past the file's size): what the final
  ``fsync`` waited for before;
- ``store``: ``FsspecBlobStore.ingest`` of the file into a fresh local store (link, folder fsyncs included).

Each line: MB/s, wall seconds, the closing fsync's seconds, and the process's CPU seconds (all threads).
Not part of the product. Run under the shared lock:

    .venv/bin/python scripts/bench_localcopy.py --size-mib 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time

from _benchlib import add_repo_to_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the files go (default: the temp dir)")
    args = ap.parse_args()
    add_repo_to_path()
    from workers.blobs import localcopy
    from workers.blobs.fsspec_store import FsspecBlobStore

    d = tempfile.mkdtemp(prefix="mledger-localcopy-", dir=args.dir)
    src = os.path.join(d, "src.bin")
    size = args.size_mib * 1024 * 1024
    block = os.urandom(64 * 1024 * 1024)
    with open(src, "wb") as f:
        for off in range(0, size, len(block)):
            f.write(block[: min(len(block), size - off)])
        os.fsync(f.fileno())

    def sha() -> float:
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(8 * 1024 * 1024):
                h.update(chunk)
        return 0.0

    def cp() -> float:
        dst = os.path.join(d, "cp.bin")
        subprocess.run(["cp", src, dst], check=True)
        t = time.perf_counter()
        fd = os.open(dst, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        return time.perf_counter() - t

    def copy(writeback: bool = True) -> float:
        dst = os.path.join(d, "copy.bin")
        saved = localcopy.WRITEBACK_BYTES
        if not writeback:
            localcopy.WRITEBACK_BYTES = 2 * size + 1
        fd = os.open(src, os.O_RDONLY)
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            localcopy.copy_hashing(fd, out)
            t = time.perf_counter()
            os.fsync(out)
            return time.perf_counter() - t
        finally:
            localcopy.WRITEBACK_BYTES = saved
            os.close(fd)
            os.close(out)

    def store() -> float:
        FsspecBlobStore(os.path.join(d, "store")).ingest(src)
        return 0.0

    cases = {"sha": sha, "cp": cp, "copy": copy, "copy_nowb": lambda: copy(False), "store": store}
    rates: dict[str, list[float]] = {k: [] for k in cases}
    print(f"{args.size_mib} MiB, {args.repeats} repeats; loadavg {os.getloadavg()}")
    try:
        for r in range(args.repeats):
            order = list(cases)
            random.Random(r).shuffle(order)
            for name in order:
                c0, t = os.times(), time.perf_counter()
                fsync_s = cases[name]()
                wall = time.perf_counter() - t
                c1 = os.times()
                cpu = (c1.user - c0.user) + (c1.system - c0.system)
                for left in ("store", "cp.bin", "copy.bin"):  # removed outside the timing
                    path = os.path.join(d, left)
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    elif os.path.exists(path):
                        os.unlink(path)
                rates[name].append(size / 1e6 / wall)
                print(f"{r} {name:10s} {size / 1e6 / wall:7,.0f} MB/s  {wall:.3f} s  fsync {fsync_s:.3f} s  "
                      f"cpu {cpu:.2f} s", flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("medians: " + ", ".join(f"{k} {statistics.median(v):,.0f} MB/s" for k, v in rates.items()))
    print(f"loadavg at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
