"""Bounded sniffing: CPU time and peak memory of ``workers.formats.sniff`` on hostile files.

Each case is a file built here (the constructions of shared/security-findings.md M1-M3 and
formats-findings.md, at the sizes that used to take minutes or gigabytes) and sniffed in a child process
of its own, which reports the CPU time of the sniff (``resource.getrusage``, user + system, imports
excluded) and the process's peak RSS (``VmHWM``, interpreter and imports included: the baseline row
shows what that alone costs). The bounds are 10 s of CPU and 256 MB of memory per file; the verdict is
printed too (every hostile case must end ``unsafe`` or be harmless, never in a traceback).

    .venv/bin/python scripts/bench_sniff.py            # all cases (~1 GB of temporary files)
    .venv/bin/python scripts/bench_sniff.py --quick    # the small cases only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from _benchlib import add_repo_to_path, log, temp_dir

CPU_BOUND_S = 10.0
MEM_BOUND_MB = 256.0


def _u(s: str) -> bytes:
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def tiny(p: Path) -> None:
    p.write_bytes(b"tiny model weights v1\n")


def safetensors_shapes(p: Path, dims: int = 160_000) -> None:
    # M1: 3.2 MB, 68 s before (big-int products of [2**62] * N)
    h = json.dumps({"w": {"dtype": "F32", "shape": [2**62] * dims, "data_offsets": [0, 0]}},
                   separators=(",", ":")).encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h)


def safetensors_many_tensors(p: Path, count: int = 900_000) -> None:
    # M3: a 53 MB header of 900k tensors, 664 MB before
    parts = [f'"t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}' for i in range(count)]
    h = ("{" + ",".join(parts) + "}").encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h)


def safetensors_deep(p: Path) -> None:
    h = b"[" * 100_000 + b"]" * 100_000
    p.write_bytes(struct.pack("<Q", len(h)) + h)


def pickle_distinct_imports(p: Path, count: int = 1_250_000) -> None:
    # M2: ~15 MB, ~3 h extrapolated before (membership tests in a list)
    body = [b"\x80\x04", _u("m"), b"\x94"]
    body += [b"h\x00" + _u(f"c{i}") + b"\x930" for i in range(count)]
    p.write_bytes(b"".join(body) + b"N.")


def pickle_big_binbytes(p: Path, total: int = 300 * 1024 * 1024) -> None:
    # M3: 1 MiB BINBYTES chunks kept on the stack, 355 MB RSS for 300 MB before
    chunk = b"B" + struct.pack("<I", 1024 * 1024 - 1) + b"\x00" * (1024 * 1024 - 1)
    with open(p, "wb") as fh:
        fh.write(b"\x80\x04(")
        for _ in range(total // len(chunk)):
            fh.write(chunk)
        fh.write(b"l.")


def pickle_empty_lists(p: Path, count: int = 5_000_000) -> None:
    # The cheapest opcode that grows the symbolic stack: one new list per byte.
    p.write_bytes(b"\x80\x04" + b"]" * count + b".")


def pickle_empty_dicts(p: Path, count: int = 5_000_000) -> None:
    p.write_bytes(b"\x80\x04" + b"}" * count + b".")


def pickle_tuples(p: Path, count: int = 2_500_000) -> None:
    p.write_bytes(b"\x80\x04" + b"N\x85" * count + b".")


def pickle_memo(p: Path, count: int = 1_000_000) -> None:
    p.write_bytes(b"\x80\x04" + (_u("x") + b"\x94") * count + b".")


def pickle_marks(p: Path, count: int = 5_000_000) -> None:
    p.write_bytes(b"\x80\x04" + b"(" * count + b"N.")


def _deflate_stream(fh, n_pairs: int) -> int:
    """Write raw deflate of n_pairs * b'N0' to fh; returns the compressed size."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = b"N0" * (8 * 1024 * 1024)
    written = 0
    left = n_pairs
    while left:
        take = min(left, len(block) // 2)
        written += fh.write(c.compress(block[: take * 2]))
        left -= take
    written += fh.write(c.flush())
    return written


def zip_bomb(p: Path, inflated: int = 2 * 1024**3, claimed: int | None = 1000) -> None:
    # M3: a checkpoint whose data.pkl deflates to 2 GB of opcodes while its headers claim 1000 bytes
    name = b"archive/data.pkl"
    with open(p, "wb") as fh:
        fh.write(b"\0" * (30 + len(name)))
        size = _deflate_stream(fh, inflated // 2)
        file_size = claimed if claimed is not None else inflated
        local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, size, file_size, len(name), 0)
        cd_offset = fh.tell()
        central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, size, file_size, len(name),
                              0, 0, 0, 0, 0, 0) + name
        fh.write(central)
        fh.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central), cd_offset, 0))
        fh.seek(0)
        fh.write(local + name)


def gzip_bomb(p: Path, inflated: int = 2 * 1024**3) -> None:
    # A "compressed joblib" of 2 GB of opcodes
    with open(p, "wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        _deflate_stream(fh, inflated // 2)
        fh.write(struct.pack("<II", 0, inflated & 0xFFFFFFFF))


def gzip_skipped_payload(p: Path, inflated: int = 2 * 1024**3) -> None:
    # One BINBYTES8 argument of 2 GB of zeros: skipped, not walked, so only the inflate bound stops it
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(p, "wb") as fh:
        fh.write(c.compress(b"\x80\x04\x8e" + struct.pack("<Q", inflated)))
        block = b"\0" * (16 * 1024 * 1024)
        for _ in range(inflated // len(block)):
            fh.write(c.compress(block))
        fh.write(c.compress(b".") + c.flush())


CASES: dict[str, tuple[Callable[[Path], None], bool, str]] = {
    #  name: (builder, in --quick, what it was before)
    "baseline: tiny file": (tiny, True, "-"),
    "M1 safetensors shape [2**62]*160k (3.2 MB)": (safetensors_shapes, True, "68 s, then a traceback"),
    "M3 safetensors 900k tensors (53 MB header)": (safetensors_many_tensors, False, "664 MB RSS"),
    "safetensors header nested 100k deep": (safetensors_deep, True, "RecursionError traceback"),
    "M2 pickle 1.25M distinct imports (15 MB)": (pickle_distinct_imports, False, "~3 h (extrapolated)"),
    "M3 pickle 300 x 1 MiB BINBYTES (300 MB)": (pickle_big_binbytes, False, "355 MB RSS"),
    "pickle 5M EMPTY_LIST": (pickle_empty_lists, True, "-"),
    "pickle 5M EMPTY_DICT": (pickle_empty_dicts, True, "-"),
    "pickle 2.5M one-tuples": (pickle_tuples, True, "-"),
    "pickle 1M memoized strings": (pickle_memo, True, "-"),
    "pickle 5M MARKs": (pickle_marks, True, "-"),
    "M3 zip bomb, lying header (2 GB inflated)": (zip_bomb, False, "2.1 GB RSS"),
    "zip bomb, truthful header (500 MB inflated)": (lambda p: zip_bomb(p, 500 * 1024**2, None), False,
                                                     "1.07 GB RSS, recorded safe"),
    "gzip 'joblib' bomb (2 GB inflated)": (gzip_bomb, False, "not opened (flagged unread)"),
    "gzip 'joblib' of one 2 GB BINBYTES8": (gzip_skipped_payload, False, "not opened (flagged unread)"),
}


def _vm_hwm_kb() -> int:
    """This process's peak RSS. (``ru_maxrss`` is not used: Linux carries it over fork and exec, so a child
    would report its parent's peak.)"""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def child(path: str) -> None:
    add_repo_to_path()
    import fsspec

    from workers.formats import sniff

    fs = fsspec.filesystem("file")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    info = sniff(fs, path)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"cpu_s": cpu, "peak_mb": _vm_hwm_kb() / 1024, "format": info.format, "unsafe": info.unsafe,
                      "detail": info.detail[:90]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the small cases")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help="parent folder for the temporary files")
    ap.add_argument("--only", help="run the cases whose name contains this text")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    rows = []
    with temp_dir(args.tmp, "bench-sniff-") as tmp:
        for name, (build, quick, before) in CASES.items():
            if (args.quick and not quick) or (args.only and args.only not in name):
                continue
            path = Path(tmp) / "case.bin"
            t = time.perf_counter()
            build(path)
            log(f"{name}: built {path.stat().st_size:,} bytes in {time.perf_counter() - t:.1f} s")
            done = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True,
                                  text=True, timeout=600)
            if done.returncode != 0:
                rows.append((name, path.stat().st_size, None, done.stderr.strip().splitlines()[-1:], before))
            else:
                rows.append((name, path.stat().st_size, json.loads(done.stdout), None, before))
            os.unlink(path)
    print(f"\nbounds: {CPU_BOUND_S:.0f} s CPU, {MEM_BOUND_MB:.0f} MB peak RSS per file\n")
    print("| case | file | CPU s | peak RSS MB | within | verdict | before |")
    print("|---|---|---|---|---|---|---|")
    for name, size, res, err, before in rows:
        if res is None:
            print(f"| {name} | {size / 1e6:.1f} MB | - | - | CRASH | {err} | {before} |")
            continue
        ok = res["cpu_s"] <= CPU_BOUND_S and res["peak_mb"] <= MEM_BOUND_MB
        verdict = f"{res['format']}, {'unsafe' if res['unsafe'] else 'safe'}: {res['detail']}"
        print(f"| {name} | {size / 1e6:.1f} MB | {res['cpu_s']:.2f} | {res['peak_mb']:.0f} | "
              f"{'yes' if ok else 'NO'} | {verdict} | {before} |")


if __name__ == "__main__":
    main()
