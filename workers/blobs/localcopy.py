"""The one-pass copy of a local file into a local store: read once, hash and write the same buffer, the write
going straight to the disk (O_DIRECT) rather than through the page cache.

Two threads per copy, over ``PIPE_BUFFERS`` buffers of ``PIPE_CHUNK`` (16 × 1 MiB, in one page-aligned mmap):

- a file alone (``hash_thread=True``): this thread reads a buffer and writes it, a second thread hashes it, so
  the hash (the CPU floor: ~0.6 s per GiB) has a core of its own; what is hashed is exactly what was written,
  and no byte is read twice;
- a folder's shards, copied one per core (``hash_thread=False``, ``BlobStore._ingest_local``): this thread reads
  and hashes the buffer (while it is in the core's cache), a second thread writes it, so the disk's wait
  overlaps the next buffer's hash and every core hashes.

Why direct writes. On the Firecracker VM of this session (Linux 6.18, ext4 on virtio-blk, a virtio-balloon
reporting free memory to the host: ``/sys/module/page_reporting/parameters/reported_kib`` was 43 GiB after
12 minutes of uptime), a new page of the page cache is often memory the host took back, faulted in again at
its first touch: perf of the buffered copy put 55 % of its samples in ``copy_folio_from_iter_atomic``.
``dd`` of 1 GiB into a new file: 3.07 s, 1.59 s of system time; the same bytes over the same, already cached
pages: 0.23 s, 0.13 s; ``dd oflag=direct bs=1M``: 0.52–0.62 s, 0.10–0.14 s. The register spent 1.9–2.6 s of
CPU per GiB in the bench (~0.65 of it SHA-256); written directly, 0.8 (paired, same run, load 4.5–5:
675 MB/s against 208 MB/s). A direct write also leaves no dirty pages to throttle or to flush at the end.

- The ``fsync`` that follows is still what makes the blob durable: a direct write does not flush the device's
  cache nor commit the file's size and extents.
- Only whole, aligned buffers go direct: the file's last bytes (and anything after a short read, which leaves
  the offset unaligned) go through the page cache, and so does everything on a file system that refuses
  the flag, or takes it and refuses the write (EINVAL). There the kernel is asked to start writing behind
  the copy every ``WRITEBACK_BYTES`` (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not wait), so the
  closing ``fsync`` finds little left (0.25–0.30 s for 1 GiB without it, 0.00–0.02 s with it, on another
  machine).
- A temp whose bytes turn out to be stored already has reached the disk before it is dropped (it mostly had
  with the writeback head start too).

Measured before and kept: ``copy_file_range`` with the hash reading the copy back used more CPU, not less
(0.89–0.96 s per GiB against 0.81–0.90): the hash needs the bytes in user space anyway. The earlier "slow mode"
of 1 MiB buffers on 256 MiB shards on ext4 (2.1–2.4 s of CPU per GiB) looks like the page-cache cost above:
with direct writes, 1 MiB used 0.88–1.00 s per GiB and 256 KiB 1.04–1.07 (paired, 4 repeats).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import mmap
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from eventstore.errors import ArtifactError

try:
    import fcntl
except ImportError:  # not POSIX: no O_DIRECT either, every copy goes through the page cache
    fcntl = None  # type: ignore[assignment]

PIPE_CHUNK = 1024 * 1024
PIPE_BUFFERS = 16
# Start the disk on what was written every this many bytes (a buffered copy only; a direct write is on its way
# to the disk when it returns). Small enough that the final fsync waits for little, large enough that the calls
# cost nothing (32 per GiB).
WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: initiate writeback of the dirty pages in the range, do not wait
# What O_DIRECT asks of the offsets, lengths and buffers: the page size covers every block device's logical
# block (512 or 4096 bytes) and is what the buffers from mmap are aligned to.
DIRECT_ALIGN = mmap.PAGESIZE
_O_DIRECT = getattr(os, "O_DIRECT", 0)

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


def set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for ``fd``; False where the platform or the file system has none."""
    if not _O_DIRECT or fcntl is None:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
    except OSError:
        return False
    return on


class _Destination:
    """The temp a copy writes: directly (O_DIRECT) while the writes are aligned, else through the page cache
    with the writeback started behind the copy."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.direct = set_direct(fd, True)
        self.total = 0
        self.flushed = 0

    def buffered(self) -> None:
        self.direct = set_direct(self.fd, False)
        self.flushed = self.total  # what was written directly needs no writeback

    def write(self, view: memoryview) -> None:
        if self.direct and (len(view) % DIRECT_ALIGN or self.total % DIRECT_ALIGN):
            self.buffered()  # the file's tail (or a short read): through the page cache, as the fsync expects
        try:
            write_all(self.fd, view)
        except OSError as exc:
            # A file system that takes the flag but not the write (alignment it wants larger, a FUSE mount):
            # nothing of the failed write was written; go on through the page cache.
            if not self.direct or exc.errno != errno.EINVAL:
                raise
            self.buffered()
            write_all(self.fd, view)
        self.total += len(view)
        if not self.direct and self.total - self.flushed >= WRITEBACK_BYTES:
            start_writeback(self.fd, self.flushed, self.total - self.flushed)
            self.flushed = self.total


def copy_hashing(src: int, out: int, progress: Progress = None, shown: str = "", *,
                 hash_thread: bool = True) -> tuple[str, int]:
    """Copy the file open at ``src`` (from its current offset) to ``out`` (from its start) in one pass, hashing
    what is written (see the module's docstring). Returns (hex digest, bytes copied); the caller fsyncs ``out``.
    A read error is an ``ArtifactError`` naming ``shown``; a write error (a full disk) stays an ``OSError``.
    ``hash_thread=True``: a second thread hashes while this one reads and writes (a file alone: the hash gets
    a core of its own); ``False``: this thread reads and hashes, a second one writes (copies already running
    one per core: each core hashes, and the disk's wait overlaps the next buffer's hash)."""
    h = hashlib.sha256()
    chunk = PIPE_CHUNK
    # Anonymous memory is page-aligned, as O_DIRECT wants its buffers.
    memory = mmap.mmap(-1, chunk * PIPE_BUFFERS)
    bufs = [memoryview(memory)[i * chunk:(i + 1) * chunk] for i in range(PIPE_BUFFERS)]
    pending: list[Future[None] | None] = [None] * PIPE_BUFFERS
    dest = _Destination(out)
    total = 0
    # Leaving the ``with`` (also on an error) waits for the helper: it never touches a buffer after we return.
    with ThreadPoolExecutor(1, thread_name_prefix="mledger-sha256" if hash_thread else "mledger-write") as helper:
        i = 0
        while True:
            k = i % PIPE_BUFFERS
            done = pending[k]
            if done is not None:
                done.result()  # the buffer's previous bytes are hashed and written (or their error raised)
            try:
                n = os.readv(src, [bufs[k]])
            except OSError as exc:
                raise ArtifactError(f"cannot read artifact source {shown}: {exc.strerror or exc}") from None
            if n == 0:
                break
            view = bufs[k][:n]
            if hash_thread:
                pending[k] = helper.submit(h.update, view)
                dest.write(view)
            else:
                h.update(view)
                pending[k] = helper.submit(dest.write, view)  # one helper thread: the writes stay in order
            total += n
            if progress is not None:
                progress(total)
            i += 1
        for done in pending:
            if done is not None:
                done.result()
    return h.hexdigest(), total


