"""The fsspec backend of the blob interface: a content-addressed store rooted at any fsspec URL (a local
folder, ``file://``, ``memory://``, ``s3://``, ``az://``/``abfs://`` through adlfs, ``oss://`` through s3fs).

Blobs live at ``<root>/sha256/ab/cd/<hex>``; a write goes to ``<root>/tmp/<uuid>.part`` first and is published
under its digest only once whole and verified: a local store fsyncs and hard-links it (never overwriting),
an object store copies it server-side (a PUT also completes a *partial* upload when its source fails). Big
uploads to S3 and Azure go in parts sent in parallel (``workers/blobs/multipart.py``).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from eventstore.errors import ArtifactError, ValidationError
from eventstore.permissions import Modes, make_folder, make_root, modes_under

from . import multipart
from .base import (
    TMP_DIR,
    TMP_SUFFIX,
    Blob,
    BlobStore,
    Hasher,
    Progress,
    Staged,
    edge,
    fsync_dir,
    is_driver_error,
    parse_digest,
    read_chunks,
)
from .localcopy import copy_hashing

# Reads of a remote blob fetch this much at a time.
READ_BLOCK = 4 * 1024 * 1024
# fsyncs of a folder's blobs and of the folders their links changed, in flight at once (publish_staged).
FSYNC_THREADS = 8


# -- Aliyun OSS through its S3-compatible API ---------------------------------------------------------------
OSS_SCHEME = "oss://"
_OSS_HOST_RE = re.compile(r"^(?:s3\.)?oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")


def oss_as_s3(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``oss://bucket/prefix`` as s3fs options for OSS's S3-compatible endpoint.

    fsspec's own ``oss`` protocol needs ossfs (not a dependency); OSS speaks the S3 API, so s3fs does with:
    the endpoint from MLEDGER_OSS_ENDPOINT or OSS_ENDPOINT (else ``https://oss-<OSS_REGION>.aliyuncs.com``);
    virtual-hosted addressing (OSS refuses path-style requests); checksums only when required (botocore
    >= 1.36 otherwise streams uploads with aws-chunked encoding, which OSS refuses: its error 0017-00000804);
    credentials from OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET (/ OSS_SESSION_TOKEN), else the AWS chain.
    """
    env = os.environ
    endpoint = env.get("MLEDGER_OSS_ENDPOINT") or env.get("OSS_ENDPOINT")
    if not endpoint and env.get("OSS_REGION"):
        endpoint = f"https://oss-{env['OSS_REGION']}.aliyuncs.com"
    if not endpoint and "endpoint_url" not in options:
        raise ValidationError("an oss:// artifact store needs MLEDGER_OSS_ENDPOINT "
                              "(https://oss-<region>.aliyuncs.com) or OSS_REGION")
    opts = dict(options)
    if endpoint:
        opts.setdefault("endpoint_url", endpoint if "://" in endpoint else f"https://{endpoint}")
    if env.get("OSS_ACCESS_KEY_ID") and env.get("OSS_ACCESS_KEY_SECRET") and "key" not in opts:
        opts.update(key=env["OSS_ACCESS_KEY_ID"], secret=env["OSS_ACCESS_KEY_SECRET"])
        if env.get("OSS_SESSION_TOKEN"):
            opts.setdefault("token", env["OSS_SESSION_TOKEN"])
    config = dict(opts.get("config_kwargs") or {})
    config["s3"] = {"addressing_style": "virtual", **dict(config.get("s3") or {})}
    config.setdefault("request_checksum_calculation", "when_required")
    config.setdefault("response_checksum_validation", "when_required")
    opts["config_kwargs"] = config
    host = opts["endpoint_url"].split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    region = env.get("OSS_REGION") or (m.group(1) if (m := _OSS_HOST_RE.match(host)) else None)
    if region:
        opts["client_kwargs"] = {"region_name": region, **dict(opts.get("client_kwargs") or {})}
    return "s3://" + url[len(OSS_SCHEME):], opts


def _is_azure(fs: fsspec.AbstractFileSystem) -> bool:
    return type(fs).__module__.startswith("adlfs")


def _await_azure_copy(fs: fsspec.AbstractFileSystem, path: str, timeout: float = 3600.0) -> None:
    """Wait until a Copy Blob into ``path`` finished. adlfs' copy only *starts* it (start_copy_from_url); Azure
    says a copy inside one account "can complete synchronously", not that it must. Returning only once the
    status is success means this process never reports a blob stored before its bytes are all there."""
    from fsspec.asyn import sync

    container, blob, _ = fs.split_path(path)

    async def status() -> tuple[str | None, str | None]:
        async with fs.service_client.get_blob_client(container=container, blob=blob) as bc:
            copy = (await bc.get_blob_properties()).copy
            return copy.status, copy.status_description

    deadline = time.monotonic() + timeout
    while True:
        state, detail = sync(fs.loop, status)
        if state in (None, "success"):
            return
        if state != "pending" or time.monotonic() > deadline:
            raise ArtifactError(f"server-side copy to {path} ended {state}: {detail or 'no detail'}")
        time.sleep(0.2)


def _makedirs(path: str, mode: int = 0o700) -> list[str]:
    """mkdir -p with exactly ``mode``; returns the folders whose entries changed (to fsync), deepest first."""
    try:
        if not make_folder(path, mode):
            return []
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        above = _makedirs(parent, mode)
        if not make_folder(path, mode):
            return above
        return [parent, *above]
    return [os.path.dirname(path)]


def _link_new(tmp: str, final: str) -> bool:
    """Give a finished temp its final name; False if a blob is already there. (FileNotFoundError: no folder.)"""
    try:
        # link() refuses to overwrite: an existing blob is never rewritten, even in a race.
        os.link(tmp, final)
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise
    except OSError:
        # Filesystems without hard links: same-content replace is the best left; check first.
        if os.path.exists(final):
            return False
        os.replace(tmp, final)
    return True


def _fsync_path(path: str) -> None:
    """fsync a file by name (its data and size reach the disk, whichever descriptor wrote them)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_each(fsync: Callable[[str], None], paths: list[str]) -> None:
    """``fsync`` every path, the calls in flight together (threads: each waits in the kernel); the first error
    is raised once all returned."""
    if len(paths) < 2:
        for path in paths:
            fsync(path)
        return
    with ThreadPoolExecutor(min(len(paths), FSYNC_THREADS), thread_name_prefix="mledger-fsync") as pool:
        for done in [pool.submit(fsync, path) for path in paths]:
            done.result()


def _makedirs_durable(path: str, mode: int = 0o700) -> None:
    """mkdir -p that fsyncs each parent of a newly created directory, so the new entry survives a crash."""
    for parent in reversed(_makedirs(path, mode)):
        fsync_dir(parent)


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (after.st_size, after.st_mtime_ns,
                                                                       after.st_ctime_ns)


def _last_activity(call: Callable[..., Any], bucket: str, key: str, upload_id: str, initiated: Any) -> float:
    """When a multipart upload last made progress: its newest part, else its start. (A long upload started
    hours ago may still be sending parts; the start alone would call it stale.)"""
    newest = initiated.timestamp() if initiated is not None else 0.0
    args: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    while True:
        page = call("list_parts", **args)
        for part in page.get("Parts") or ():
            if part.get("LastModified") is not None:
                newest = max(newest, part["LastModified"].timestamp())
        if not page.get("IsTruncated"):
            return newest
        args["PartNumberMarker"] = page.get("NextPartNumberMarker")


class FsspecBlobStore(BlobStore):
    """A content-addressed store; ``root_url`` is a local path, ``file://``, ``s3://``, ``memory://`` ..."""

    def __init__(self, root_url: str, storage_options: dict[str, Any] | None = None, *,
                 statcache: str | os.PathLike[str] | None = None) -> None:
        super().__init__(statcache=statcache)
        if not root_url:
            raise ValidationError("artifact store URL is empty")
        self.root_url = root_url
        self.storage_options = dict(storage_options or {})
        self._fs: fsspec.AbstractFileSystem | None = None
        self._pid = -1
        self._file_modes: Modes | None = None
        with edge(f"cannot open artifact store {root_url}"):
            fs, root = self._make_fs()
        self.local = isinstance(fs, LocalFileSystem)
        # Shards go side by side to a local disk (hashing on every core) and to an object store (parallel
        # requests); memory:// gains nothing from threads.
        self.parallel_writes = self.local or fs.async_impl
        self.root = os.path.abspath(root) if self.local else root.rstrip("/")

    def __getstate__(self) -> dict[str, Any]:
        # A live filesystem does not travel between processes; the receiver makes its own.
        state = super().__getstate__()
        state.update(_fs=None, _pid=-1)
        return state

    def guarded_roots(self) -> tuple[str, ...]:
        return (self.root,) if self.local else ()

    # -- filesystem -------------------------------------------------------------------------------------

    def _make_fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        url, options = self.root_url, self.storage_options
        if url.startswith(OSS_SCHEME):
            url, options = oss_as_s3(url, options)
        fs, root = fsspec.core.url_to_fs(url, **options)
        self._fs, self._pid = fs, os.getpid()
        return fs, root

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        # An S3FileSystem made before fork() is unusable in the child: make a fresh one per process.
        if self._fs is None or self._pid != os.getpid():
            self._make_fs()
        assert self._fs is not None
        return self._fs

    def _join(self, *parts: str) -> str:
        if self.local:
            return os.path.join(self.root, *parts)
        return "/".join([self.root, *parts])

    def path_of(self, digest: str) -> str:
        """Where the blob lives inside ``self.fs`` (an absolute path for a local store)."""
        hexd = parse_digest(digest)
        return self._join("sha256", hexd[:2], hexd[2:4], hexd)

    def _tmp_path(self) -> str:
        return self._join(TMP_DIR, f"{uuid.uuid4().hex}{TMP_SUFFIX}")

    # -- queries ----------------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        path = self.path_of(digest)
        with edge(f"cannot check blob {digest}"):
            return self._exists_path(path)

    def _exists_for_write(self, digest: str) -> bool:
        return self._exists_path(self.path_of(digest))  # a driver error is the caller's "cannot write blob"

    def _exists_path(self, path: str) -> bool:
        if self.local:
            return os.path.isfile(path)
        fs = self.fs
        fs.invalidate_cache(path)  # another process may have written it since our last listing
        return fs.exists(path)

    def open_blob(self, digest: str) -> IO[bytes]:
        path = self.path_of(digest)
        with edge(f"cannot read blob {digest}"):
            try:
                if self.local:
                    return open(path, "rb")  # noqa: SIM115 - the caller closes it
                self.fs.invalidate_cache(path)
                # Not s3fs' 50 MiB read-ahead: a sniffer reading a header would hold 50 MiB (and fetch it).
                return self.fs.open(path, "rb", block_size=READ_BLOCK)
            except FileNotFoundError:
                raise ArtifactError(f"blob missing from the store: {digest}") from None

    def size_of(self, digest: str) -> int:
        path = self.path_of(digest)
        with edge(f"cannot stat blob {digest}"):
            try:
                if self.local:
                    return os.stat(path).st_size
                self.fs.invalidate_cache(path)
                return int(self.fs.info(path)["size"])
            except FileNotFoundError:
                raise ArtifactError(f"blob missing from the store: {digest}") from None

    # -- writes -----------------------------------------------------------------------------------------

    def _put_large_fd(self, fd: int, f: IO[bytes], st: os.stat_result, shown: str, progress: Progress,
                      staged: Staged | None, *, in_parallel: bool = False) -> Blob:
        if self.local:
            return self._copy_new(fd, st, shown, progress, staged, in_parallel)
        return super()._put_large_fd(fd, f, st, shown, progress, staged)

    def _copy_new(self, fd: int, st: os.stat_result, shown: str, progress: Progress, staged: Staged | None,
                  in_parallel: bool = False) -> Blob:
        """One pass into a local store: copy to a temp while hashing (written directly to the disk where it
        can be: ``localcopy``); if the blob turns out to be stored, drop the temp unsynced; else fsync it and
        link it into place (or stage it). A source that changed while read (size, mtime, ctime on its descriptor) is refused."""
        tmp = self._tmp_path()
        keep = False
        created = False
        try:
            with edge(f"cannot write blob for {shown}"):
                with self._open_tmp(tmp) as out:
                    # One copy per core already (a folder's shards): no second thread for the hash.
                    hexd, size = copy_hashing(fd, out.fileno(), progress, shown, hash_thread=not in_parallel)
                    after = os.fstat(fd)
                    if size != st.st_size or _changed(st, after):
                        raise ArtifactError(f"artifact source changed while it was being stored; try again: {shown}")
                    blob = Blob(f"sha256:{hexd}", size)
                    final = self.path_of(blob.digest)
                    if self._exists_path(final):
                        self._count(0, deduplicated=True)
                        return blob
                    # A shard copied beside others is fsynced by ``publish_staged``, before its link: this thread
                    # goes on to the next shard instead of waiting for the device's cache flush.
                    synced = not (in_parallel and staged is not None)
                    if synced:
                        os.fsync(out.fileno())
                if staged is not None:
                    staged.append((tmp, final, size, synced))
                    keep = True
                    return blob
                created = self._publish(tmp, final)
        finally:
            if not keep:
                self._discard_tmp(tmp)
        self._count(size if created else 0, deduplicated=not created)
        return blob


    def write_stream(self, reader: IO[bytes], progress: Progress, expected_hex: str | None,
                   staged: Staged | None = None) -> Blob:
        """Copy ``reader`` to a temp name while hashing it, then publish it under its digest — or, with
        ``staged``, leave the temp for ``publish_staged`` (a folder's blobs appear only once every file of
        it was copied, so a refused folder leaves nothing outside the temporaries)."""
        tmp = self._tmp_path()
        hasher = Hasher(progress)
        written = 0
        keep = False
        try:
            if self.local:
                with self._open_tmp(tmp) as out:
                    for chunk in read_chunks(reader):
                        hasher.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            else:
                # Object stores: a PUT becomes visible only when it completes, but fsspec's close() also
                # completes a *partial* upload when the source fails mid-stream. So the upload goes to a temp
                # key, is verified, and only then copied to the final key (server-side copy, no re-upload).
                # S3/OSS and Azure: parts in parallel (multipart.py); other filesystems: fsspec's own writer.
                def hashed() -> Iterator[bytes]:
                    for chunk in read_chunks(reader):
                        hasher.update(chunk)
                        yield chunk

                if multipart.kind_of(self.fs) is not None:
                    multipart.upload(self.fs, tmp, hashed())
                else:
                    with self.fs.open(tmp, "wb") as out:
                        for chunk in hashed():
                            out.write(chunk)
                written = hasher.size
            if expected_hex is not None and hasher.hex != expected_hex:
                raise ArtifactError("artifact source changed while it was being stored; try again")
            blob = Blob(f"sha256:{hasher.hex}", hasher.size)
            if staged is not None:
                staged.append((tmp, self.path_of(blob.digest), written, True))
                keep = True
                return blob
            created = self._publish(tmp, self.path_of(blob.digest))
        finally:
            if not keep:
                self._discard_tmp(tmp)
        self._count(written + (hasher.size if created and not self.local else 0), deduplicated=not created)
        return blob

    def _modes(self) -> Modes:
        """Modes of what this (local) store creates: those of its root's sharing (eventstore/permissions.py);
        a root that does not exist yet is made private, or group-shared with MLEDGER_SHARE=group."""
        if self._file_modes is None:
            make_root(self.root)
            self._file_modes = modes_under(self.root)
        return self._file_modes

    def publish_staged(self, staged: Staged) -> None:
        """Move every staged temp into place (a blob already there is kept and the temp dropped). A temp not
        fsynced yet (a shard copied in parallel) is fsynced first: no name ever shows bytes not on disk."""
        staged.reverse()  # in copy order (the manifest last), popping from the end
        # The folders whose entries the links change are fsynced after the last link (before we return, so
        # before the version's events commit), each once, all at once; so are the temps before the first link.
        # One by one, 8 shards into a fresh store waited for 8 file and 29 folder fsyncs, 90-100 ms of a 3 s
        # register (2026-12-01, ext4, load 5): each fsync on ext4 also flushes the device's cache, and fsyncs
        # issued together share the journal's commit and the flush.
        changed: list[str] = []
        with edge("cannot write blob"):
            fsync_each(_fsync_path, [tmp for tmp, _final, _written, synced in staged if not synced])
            try:
                while staged:
                    tmp, final, written, _synced = staged.pop()
                    try:
                        created = self._publish(tmp, final, changed)
                    finally:
                        self._discard_tmp(tmp)
                    self._count(written + (written if created and not self.local else 0),
                                deduplicated=not created)
            finally:
                fsync_each(fsync_dir, list(dict.fromkeys(changed)))

    def discard_staged(self, staged: Staged) -> None:
        while staged:
            self._discard_tmp(staged.pop()[0])

    def _open_tmp(self, tmp: str) -> IO[bytes]:
        # The temp folder is made (durably) when an open finds it missing: on first use, or if someone removed it.
        modes = self._modes()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, modes.file)
        except FileNotFoundError:
            _makedirs_durable(os.path.dirname(tmp), modes.folder)
            fd = os.open(tmp, flags, modes.file)
        try:
            os.fchmod(fd, modes.file)  # exactly: the umask may have narrowed a group-shared store's mode
            return open(fd, "wb")  # noqa: SIM115 - the caller closes it
        except BaseException:
            os.close(fd)
            raise

    def _publish(self, tmp: str, final: str, changed: list[str] | None = None) -> bool:
        """Move a verified temp into place unless the blob exists; True if this call created it. ``changed``:
        the folders whose entries changed are added to it, for the caller to fsync, instead of fsynced here."""
        if self.local:
            folder = os.path.dirname(final)
            parents: list[str] = []  # fan-out folders made for this blob (sha256/ab/cd), not fsynced yet
            try:
                created = _link_new(tmp, final)
            except FileNotFoundError:
                # The fan-out folder was missing — or another writer of new bytes made it since our link
                # looked (a race seen in CI): make what is still missing and link again. A second
                # FileNotFoundError means the temp itself is gone.
                parents = _makedirs(folder, self._modes().folder)
                created = _link_new(tmp, final)
            if not created:
                return False
            # The data was fsynced before the link, so the name only ever shows whole bytes. The new entries
            # (the blob's, then any new folder's) are made durable after the link: a journaling filesystem
            # commits them together, so the later fsyncs find little left to write.
            if changed is not None:
                changed += [folder, *parents]
                return True
            fsync_dir(folder)
            for parent in parents:
                fsync_dir(parent)
            return True
        if self._exists_path(final):
            return False
        self.fs.copy(tmp, final)
        if _is_azure(self.fs):
            _await_azure_copy(self.fs, final)
        self.fs.invalidate_cache(final)
        return True

    def _discard_tmp(self, tmp: str) -> None:
        try:
            if self.local:
                os.unlink(tmp)
            else:
                self.fs.rm(tmp)
                self.fs.invalidate_cache(tmp)
        except (FileNotFoundError, OSError):
            pass  # already moved, never created, or sweep_tmp will get it

    def delete(self, digest: str, tx: Any = None) -> bool:
        """Remove a blob (gc); idempotent. True if something was removed. (``tx``: see ``BlobStore.delete``.)"""
        del tx
        path = self.path_of(digest)
        with edge(f"cannot delete blob {digest}"):
            if self.local:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    return False
                fsync_dir(os.path.dirname(path))
                return True
            if not self._exists_path(path):
                return False
            self.fs.rm(path)
            self.fs.invalidate_cache(path)
            return True

    def sweep_tmp(self, older_than_seconds: float) -> int:
        """Remove temp files left by killed writers, older than the given age; returns how many."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        tmpdir = self._join(TMP_DIR)
        with edge("cannot sweep temporary blobs"):
            if self.local:
                try:
                    names = os.listdir(tmpdir)
                except FileNotFoundError:
                    return 0
                for name in names:
                    p = os.path.join(tmpdir, name)
                    try:
                        if name.endswith(TMP_SUFFIX) and os.stat(p).st_mtime <= cutoff:
                            os.unlink(p)
                            removed += 1
                    except FileNotFoundError:
                        pass
                return removed
            fs = self.fs
            removed += self._abort_stale_uploads(tmpdir, cutoff)
            fs.invalidate_cache(tmpdir)
            try:
                entries = fs.ls(tmpdir, detail=True, refresh=True)
            except FileNotFoundError:
                return removed
            for e in entries:
                name = e["name"]
                if not name.endswith(TMP_SUFFIX):
                    continue
                try:
                    mtime = fs.modified(name).timestamp()
                except (NotImplementedError, FileNotFoundError, OSError):
                    continue
                if mtime <= cutoff:
                    self._discard_tmp(name)
                    removed += 1
            return removed

    def _abort_stale_uploads(self, tmpdir: str, cutoff: float) -> int:
        """Abort the multipart uploads of temp keys that a killed writer left unfinished. S3 keeps (and bills)
        their parts until aborted, and no listing of objects shows them."""
        call = getattr(self.fs, "call_s3", None)  # s3fs; other object stores have no such uploads here
        if call is None:
            return 0
        bucket, _, prefix = tmpdir.partition("/")
        page_args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix.rstrip("/") + "/"}
        aborted = 0
        while True:
            try:
                page = call("list_multipart_uploads", **page_args)
            except Exception as exc:
                if not is_driver_error(exc):
                    raise
                return aborted  # an S3-like store without multipart listing: nothing this sweep can do
            for upload in page.get("Uploads") or ():
                key, upload_id = upload["Key"], upload["UploadId"]
                if _last_activity(call, bucket, key, upload_id, upload.get("Initiated")) <= cutoff:
                    call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            page_args.update(KeyMarker=page.get("NextKeyMarker"), UploadIdMarker=page.get("NextUploadIdMarker"))

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        """Every blob in the store as (digest, size, modified time): what gc compares with the catalog."""
        base = self._join("sha256")
        with edge("cannot list the artifact store"):
            if self.local:
                for dirpath, _dirs, names in os.walk(base):
                    for name in names:
                        if len(name) == 64:
                            st = os.stat(os.path.join(dirpath, name))
                            yield f"sha256:{name}", st.st_size, st.st_mtime
                return
            fs = self.fs
            fs.invalidate_cache(base)
            try:
                found = fs.find(base, detail=True)
            except FileNotFoundError:
                return
            for path, info in found.items():
                name = path.rsplit("/", 1)[-1]
                if len(name) != 64:
                    continue
                try:
                    mtime = fs.modified(path).timestamp()
                except (NotImplementedError, FileNotFoundError, OSError):
                    mtime = 0.0
                yield f"sha256:{name}", int(info.get("size") or 0), mtime
