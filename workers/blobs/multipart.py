"""Uploads to S3 (and OSS, through s3fs) and to Azure Blob (through adlfs) in parts sent in parallel.

fsspec's writable files send one part at a time, each when its buffer fills: an upload runs at one
request's speed. Here the caller's thread reads (and hashes) the stream in order while ``THREADS`` parts are
in flight, so the hash and the transfers overlap and memory stays at ``THREADS + 1`` parts. The object
appears only when the upload is completed (S3 ``CompleteMultipartUpload``, Azure ``Put Block List``); a
failure aborts it (S3) or leaves only uncommitted blocks, which Azure discards by itself. A killed writer's
S3 upload is aborted by ``sweep_tmp`` (``FsspecBlobStore._abort_stale_uploads``).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

import fsspec

# S3's smallest part is 5 MiB (except the last). 8 MiB parts (the size the store reads: no copy), 3 in flight:
# the SDKs hold a copy or two of each part while sending it (measured: scripts/bench_ingest.py, peak RSS).
PART = 8 * 1024 * 1024
THREADS = 3
GROW_EVERY = 1000


def kind_of(fs: fsspec.AbstractFileSystem) -> str | None:
    """``"s3"`` or ``"azure"`` when this module can upload to ``fs`` in parallel parts; else None."""
    module = type(fs).__module__
    if module.startswith("s3fs") and hasattr(fs, "call_s3"):
        return "s3"
    if module.startswith("adlfs") and hasattr(fs, "service_client"):
        return "azure"
    return None


def part_size(number: int) -> int:
    """The size of part ``number`` (from 1): ``PART``, doubled every ``GROW_EVERY`` parts — S3 allows 10,000
    parts and Azure 50,000 blocks, so fixed 8 MiB parts would cap a blob at 78 GiB on S3; growing ones reach
    ~8 TB there, while a blob of a few GiB keeps small parts (and little memory)."""
    return PART * 2 ** ((number - 1) // GROW_EVERY)


def _parts(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pieces of ``part_size``; a chunk that is exactly one part (the store reads 8 MiB) is not copied."""
    buf = bytearray()
    number = 1
    for chunk in chunks:
        if not buf and len(chunk) == part_size(number):
            yield chunk
            number += 1
            continue
        buf += chunk
        while len(buf) >= part_size(number):
            size = part_size(number)
            yield bytes(buf[:size])
            del buf[:size]
            number += 1
    if buf:
        yield bytes(buf)


def _pipeline(parts: Iterator[bytes], send: Callable[[int, bytes], Any]) -> list[Any]:
    """``send(number, data)`` for every part (numbered from 1), ``THREADS`` at a time, in order of results."""
    results: dict[int, Any] = {}
    with ThreadPoolExecutor(THREADS, thread_name_prefix="mledger-upload") as pool:
        running: set[Future[Any]] = set()
        numbers: dict[Future[Any], int] = {}
        for number, data in enumerate(parts, start=1):
            # At most THREADS parts in flight, the next one read only once one finished: memory stays bounded.
            while len(running) >= THREADS:
                done, running = wait(running, return_when=FIRST_EXCEPTION)
                for f in done:
                    results[numbers.pop(f)] = f.result()  # the first failure stops the reading
            f = pool.submit(send, number, data)
            del data
            numbers[f] = number
            running.add(f)
        for f in running:
            results[numbers[f]] = f.result()
    return [results[n] for n in sorted(results)]


def upload(fs: fsspec.AbstractFileSystem, path: str, chunks: Iterator[bytes]) -> None:
    """Write what ``chunks`` yields to ``path`` in ``fs`` (``kind_of(fs)`` must be known) as one object."""
    parts = _parts(chunks)
    head = [next(parts, b"")]
    second = next(parts, None)
    if second is None:  # one part: a plain PUT is one request instead of three
        fs.pipe_file(path, head[0])
        return
    head.append(second)
    del second

    def all_parts() -> Iterator[bytes]:
        while head:  # handed over, not kept: a part's memory goes once it is sent
            yield head.pop(0)
        yield from parts

    if kind_of(fs) == "s3":
        _upload_s3(fs, path, all_parts())
    else:
        _upload_azure(fs, path, all_parts())


def _upload_s3(fs: Any, path: str, parts: Iterator[bytes]) -> None:
    bucket, key, _ = fs.split_path(path)
    upload_id = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]

    def send(number: int, data: bytes) -> dict[str, Any]:
        out = fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": out["ETag"]}

    try:
        done = _pipeline(parts, send)
        fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                   MultipartUpload={"Parts": done})
    except BaseException:
        try:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001, S110 - the first error is the one to report; sweep_tmp aborts it later
            pass
        raise
    fs.invalidate_cache(path)


def _upload_azure(fs: Any, path: str, parts: Iterator[bytes]) -> None:
    from azure.storage.blob import BlobBlock
    from fsspec.asyn import sync

    container, name, _ = fs.split_path(path)
    prefix = uuid.uuid4().hex

    def send(number: int, data: bytes) -> str:
        block = base64.b64encode(f"{prefix}-{number:08d}".encode()).decode()

        async def stage() -> None:
            async with fs.service_client.get_blob_client(container=container, blob=name) as bc:
                await bc.stage_block(block_id=block, data=data, length=len(data))

        sync(fs.loop, stage)
        return block

    blocks = _pipeline(parts, send)

    async def commit() -> None:
        async with fs.service_client.get_blob_client(container=container, blob=name) as bc:
            await bc.commit_block_list([BlobBlock(block_id=b) for b in blocks])

    sync(fs.loop, commit)
    fs.invalidate_cache(path)
