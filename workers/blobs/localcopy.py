"""The one-pass copy of a local file into a local store: read once, hash and write the same buffer, and let
the disk write behind the copy.

Measured on the project's 2-core machine (1 GiB in the page cache; ``scripts/bench_ingest.py`` and the paired
runs noted below): one SHA-256 pass costs ~0.6 s of CPU per GiB, the copy itself (a read and a write of each
buffer) ~0.2 s, and the final ``fsync`` of 1 GiB of dirty pages ~0.25–0.3 s of waiting for the disk. Run one
after the other that is ~1.1 s where the hash alone takes 0.6 s, so the three are overlapped:

- the hash runs in a second thread (hashlib releases the GIL on buffers over 2 KiB) on the buffer this thread
  has just read and is writing: what is hashed is exactly what was written, and no byte is read twice;
- the copy keeps up to ``PIPE_BUFFERS`` buffers ahead of the hash: 16 × 1 MiB, so a copy thread descheduled
  for a few milliseconds on a busy machine does not starve the hash (paired runs, 1 GiB, load ~5: 4 buffers
  1,380 MB/s, 16 buffers 1,440, 32 buffers 1,364; 256 KiB buffers 1,392; memory stays 16 MiB);
- every ``WRITEBACK_BYTES`` written, the kernel is asked to start writing them to disk
  (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not wait), so the disk works while the copy goes on
  and the closing ``fsync`` finds almost nothing left: it took 0.25–0.30 s for 1 GiB without this and
  0.00–0.02 s with it, in the same runs.

A folder's shards are copied one per core (``BlobStore._ingest_local``): there each copy hashes in its own
thread (``copy_hashing(..., hash_thread=False)``: read 256 KiB, hash it, write it, all on one core). A second
thread per copy only added handoffs, and the hash then read each buffer from the other core's cache: paired
runs of 8 × 256 MiB shards at load 5 (perf: 39 % of the CPU was the kernel's copy into the page cache,
6 % the read, 30 % SHA-256) used 3.4–3.8 s of CPU with one thread per shard against 4.9–5.0 s with the
pipeline, and 4.4–4.8 s with 1 MiB buffers (which no longer stay in the core's 512 KiB L2 between the hash
and the write).

Checked again on a later machine (Linux 6.18, ext4 with large folios, 1 MiB of L2 per core, SHA-NI): this copy's
CPU is SHA-256 plus the kernel's write into the page cache (perf of a register of 2 GiB on tmpfs: the
interpreter 7 % of the process, mostly its imports; no GIL wait; one buffer, ``readv`` into it, memoryviews of it
hashed and written).
Buffers of 1 MiB looked 2–6 % cheaper on 64 MiB shards, but on 256 MiB shards on the ext4 disk the store's
ingest fell into a slow mode in 3 of 4 repeats (2.1–2.4 s of CPU per GiB against 0.77–0.79 s with 256 KiB,
paired in one process; through the bench's register 1.30–1.48 against 0.80–0.83 s in 5 of 5), so 256 KiB stays;
128 KiB was no better (0.78–0.81 s), nor ``posix_fallocate`` of the temp first on tmpfs.

``copy_file_range`` (the kernel copies, no byte through user space) with the hash thread reading the copy back
(``pread`` or ``mmap``) was measured too and used more CPU, not less (0.89–0.96 s per GiB against 0.81–0.90 s
for this pipeline): the hash still needs the bytes in user space, so it saves no memory copy.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from eventstore.errors import ArtifactError

PIPE_CHUNK = 1024 * 1024
PIPE_BUFFERS = 16
# The buffer of a copy that hashes in its own thread: read, hashed and written while it is in the core's L2.
INLINE_CHUNK = 256 * 1024
# Start the disk on what was written every this many bytes. Small enough that the final fsync waits for little,
# large enough that the calls cost nothing (32 per GiB).
WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: initiate writeback of the dirty pages in the range, do not wait

Progress = Callable[[int], None] | None


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range(2) (Linux only; Python's os module has no binding), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The process's own symbols (libc among them): ctypes.util.find_library would run ldconfig.
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to disk, without waiting.
    Only a head start for the ``fsync`` that follows (which reports any error): a failure here is ignored."""
    fn = _sync_file_range()
    if fn is not None and length > 0:
        fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def copy_hashing(src: int, out: int, progress: Progress = None, shown: str = "", *,
                 hash_thread: bool = True) -> tuple[str, int]:
    """Copy the file open at ``src`` (from its current offset) to ``out`` (from its start) in one pass, hashing
    what is written (see the module's docstring). Returns (hex digest, bytes copied); the caller fsyncs ``out``.
    A read error is an ``ArtifactError`` naming ``shown``; a write error (a full disk) stays an ``OSError``.
    ``hash_thread=False``: hash in this thread (for copies already running one per core)."""
    if not hash_thread:
        return _copy_hashing_here(src, out, progress, shown)
    h = hashlib.sha256()
    bufs = [bytearray(PIPE_CHUNK) for _ in range(PIPE_BUFFERS)]
    pending: list[Future[None] | None] = [None] * PIPE_BUFFERS
    total = 0
    flushed = 0
    # Leaving the ``with`` (also on an error) waits for the hash thread: it never reads a buffer after we return.
    with ThreadPoolExecutor(1, thread_name_prefix="mledger-sha256") as hasher:
        i = 0
        while True:
            k = i % PIPE_BUFFERS
            done = pending[k]
            if done is not None:
                done.result()  # the buffer's previous bytes are hashed: it may be refilled
            mv = memoryview(bufs[k])
            try:
                n = os.readv(src, [mv])
            except OSError as exc:
                raise ArtifactError(f"cannot read artifact source {shown}: {exc.strerror or exc}") from None
            if n == 0:
                break
            view = mv[:n]
            pending[k] = hasher.submit(h.update, view)
            write_all(out, view)
            total += n
            if total - flushed >= WRITEBACK_BYTES:
                start_writeback(out, flushed, total - flushed)
                flushed = total
            if progress is not None:
                progress(total)
            i += 1
        for done in pending:
            if done is not None:
                done.result()
    return h.hexdigest(), total


def _copy_hashing_here(src: int, out: int, progress: Progress, shown: str) -> tuple[str, int]:
    """``copy_hashing`` in one thread: each buffer is read, hashed, then written."""
    h = hashlib.sha256()
    mv = memoryview(bytearray(INLINE_CHUNK))
    total = 0
    flushed = 0
    while True:
        try:
            n = os.readv(src, [mv])
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact source {shown}: {exc.strerror or exc}") from None
        if n == 0:
            break
        view = mv[:n]
        h.update(view)
        write_all(out, view)
        total += n
        if total - flushed >= WRITEBACK_BYTES:
            start_writeback(out, flushed, total - flushed)
            flushed = total
        if progress is not None:
            progress(total)
    return h.hexdigest(), total
