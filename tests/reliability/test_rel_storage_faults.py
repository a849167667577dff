"""Storage faults: the artifact store is S3 (moto's server) behind a small fault-injecting TCP proxy, and the
ingest runs in ``mledger worker`` (Redis broker).

moto has no fault injection of its own for S3 (checked in moto 5.2), and stopping the ThreadedMotoServer
would lose its in-memory buckets, so the proxy does it: it passes traffic through, answers every request
with ``500 InternalError`` ("errors"), or cuts every connection once a few MiB of an upload went through and
then refuses connections ("went away mid-upload").

What must hold: the ingest is retried by the actor with growing back-off (dramatiq's "Retrying message ...
in N milliseconds" lines), then ``ArtifactFailed`` is recorded with the reason; once S3 is back,
``mledger retry REF`` succeeds (the right digest, rehashed from the bucket); every ready version references
only whole, correct objects, and what the failed uploads left behind is referenced by nothing.

The broker is a private redis-server, so a concurrent FLUSHDB of the shared db 15 cannot drop a job and
restart its retry count. The worker's sweep interval is long (60 s): it runs once at start, so each
failing version has exactly one retry chain. botocore's own retries are cut down in the worker's
environment (``AWS_MAX_ATTEMPTS=2``, standard mode): what is tested is the registry's retry, not botocore's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
from reliability_support import (
    Worker,
    child_env,
    events,
    run_cli,
    sha256_file,
    verify_log,
)
from services import wait_for

ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
              b"<Message>We encountered an internal error. Please try again.</Message></Error>")


class FaultyS3:
    """A TCP proxy to moto, in its own thread: ``mode`` is ``pass``, ``error`` (500 to every request) or
    ``cut`` (abort every connection once ``cut_after`` request bytes went upstream, then go ``down``:
    connections refused). ``down()``/``up()`` close and reopen the listening socket on the same port."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.port = 0  # the first up() binds a port the kernel picks (no choose-then-bind race)
        self.mode = "pass"
        self.cut_after = 0
        self.uploaded = 0
        self.counts: Counter[str] = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.up()
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self, coro):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def up(self) -> None:
        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
        self.mode = "pass"
        self._run(start())

    def down(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for w in list(self._open):
                w.transport.abort()
        self.counts["went down"] += 1
        self._run(stop())

    def set(self, mode: str, cut_after: int = 0) -> None:
        self.uploaded, self.cut_after, self.mode = 0, cut_after, mode

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            if self.mode == "error":
                await self._answer_error(reader, writer)
            else:
                await self._forward(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._open.discard(writer)
            writer.transport.abort()

    async def _answer_error(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: answer every request on this connection with a 500
            head = await reader.readuntil(b"\r\n\r\n")
            headers = head.decode("latin-1").lower()
            m = re.search(r"\r\ncontent-length:\s*(\d+)", headers)
            if m and "expect: 100-continue" not in headers:
                await reader.readexactly(int(m.group(1)))
            self.counts["500 answered"] += 1
            body = b"" if head.startswith(b"HEAD ") else ERROR_BODY  # a HEAD response has no body
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            return

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._open.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upload: bool) -> None:
            try:
                while data := await src.read(256 * 1024):
                    if upload and self.mode == "cut":
                        self.uploaded += len(data)
                        if self.uploaded > self.cut_after:
                            self.counts["uploads cut"] += 1
                            self.mode = "down"
                            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._go_down()))
                            return
                    dst.write(data)
                    await dst.drain()
            finally:
                writer.transport.abort()
                up_writer.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        finally:
            self._open.discard(up_writer)

    async def _go_down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.counts["went down"] += 1
        for w in list(self._open):
            w.transport.abort()


def _noise(n: int, seed: int) -> bytes:
    out = bytearray(b"NOISE\n")
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB, format-neutral, not all zeros
    while len(out) < n:
        out += block
    out[6:14] = seed.to_bytes(8, "big")
    return bytes(out[:n])


def _retry_delays(log: Path) -> list[int]:
    return [d for ds in _retries_by_message(log).values() for d in ds]


def _retries_by_message(log: Path) -> dict[str, list[int]]:
    """Retry delays per message id (a healthy upload may be retried once through the proxy too)."""
    out: dict[str, list[int]] = {}
    for message, delay in re.findall(r"Retrying message '?([^ ']*)'? in (\d+) milliseconds", log.read_text()):
        out.setdefault(message, []).append(int(delay))
    return out


@pytest.mark.s3
@pytest.mark.redis
@pytest.mark.slow
def test_s3_errors_and_outage_mid_upload_fail_with_reason_then_retry_succeeds(worker_sources,
        moto_endpoint: str, aws_env, private_redis, tmp_path: Path, figures) -> None:
    import fsspec

    from modelledger import Registry

    proxy = FaultyS3(moto_endpoint)
    bucket = f"mledger-rel-{uuid.uuid4().hex[:12]}"
    direct_env = aws_env(moto_endpoint)  # this process talks to moto directly (for checking)
    direct = fsspec.filesystem("s3", skip_instance_cache=True)
    direct.mkdir(bucket)
    store_url = f"s3://{bucket}/store"
    home = tmp_path / "home"
    db = home / "registry.db"
    files = {}
    for name, size in (("healthy", 256 * 1024), ("errors", 3 * 1024 * 1024), ("cut", 70 * 1024 * 1024)):
        p = tmp_path / f"{name}.bin"
        p.write_bytes(_noise(size, len(files) + 1))
        files[name] = p
    env = child_env(home, MLEDGER_BROKER=private_redis.url, MLEDGER_ARTIFACTS=store_url,
                    **{**direct_env, "AWS_ENDPOINT_URL_S3": proxy.url, "FSSPEC_S3_ENDPOINT_URL": proxy.url},
                    AWS_MAX_ATTEMPTS="2", AWS_RETRY_MODE="standard")
    log = tmp_path / "worker.log"
    worker = Worker(env, log, "--threads", "2", "--sweep-interval", "60")
    try:
        with Registry.open(home, artifacts=store_url, broker=private_redis.url, actor="reliability@test") as reg:
            # Healthy first: the path works end to end through the proxy.
            reg.register("healthy", artifact=str(files["healthy"]), wait=True, timeout=120)

            # 1) S3 answers 500 to everything: retried with back-off, then ArtifactFailed with the reason.
            proxy.set("error")
            reg.register("errors", artifact=str(files["errors"]), wait=False)
            wait_for(lambda: reg.get("errors@1").status != "pending", 120,
                     f"errors@1 to fail (log tail: {worker.tail()})", interval=0.1)
            failed = reg.get("errors@1")
            assert failed.status == "failed"
            reason = failed.artifact["error"]
            assert "internal" in reason.lower() and "cannot write blob" in reason, reason
            gave_up = [ds for ds in _retries_by_message(log).values() if len(ds) >= 3]
            assert len(gave_up) == 1, f"expected one job retried 3 times, saw {_retries_by_message(log)}"
            delays = gave_up[0]
            assert len(delays) == 3, f"expected 3 retries before giving up, saw {delays}"
            assert delays == sorted(delays) and delays[-1] > delays[0], f"no back-off: {delays}"
            assert proxy.counts["500 answered"] >= 4
            with pytest.raises(Exception, match="could not be stored"):
                reg.wait("errors@1", timeout=5)

            # 2) S3 goes away in the middle of a multipart upload and stays away.
            proxy.set("cut", cut_after=20 * 1024 * 1024)
            reg.register("cut", artifact=str(files["cut"]), wait=False)
            wait_for(lambda: reg.get("cut@1").status != "pending", 180,
                     f"cut@1 to fail (log tail: {worker.tail()})", interval=0.1)
            cut = reg.get("cut@1")
            assert cut.status == "failed"
            assert proxy.counts["uploads cut"] == 1
            cut_reason = cut.artifact["error"]
            assert "cannot write blob" in cut_reason and "connect" in cut_reason.lower(), cut_reason
            assert sorted(len(ds) for ds in _retries_by_message(log).values() if len(ds) >= 3) == [3, 3], \
                _retries_by_message(log)

            # 3) S3 is back: `mledger retry` completes both.
            proxy.up()
            for name in ("errors", "cut"):
                done = run_cli(env, "retry", f"{name}@1", "--json", "--timeout", "120", timeout=180)
                assert done.returncode == 0, f"{done.stderr}\n--- worker ---\n{worker.tail()}"
                assert json.loads(done.stdout)["status"] == "ready"
                version = reg.get(f"{name}@1")
                assert (version.status, version.artifact["digest"]) == ("ready", sha256_file(files[name]))

            # 4) Every ready version references whole, correct objects; leftovers are referenced by nothing.
            direct.invalidate_cache()
            objects = direct.find(f"{bucket}/store")
            finals = {o.rsplit("/", 1)[-1] for o in objects if "/sha256/" in o}
            temps = [o for o in objects if "/tmp/" in o]
            for o in objects:
                if "/sha256/" in o:
                    assert "sha256:" + hashlib.sha256(direct.cat_file(o)).hexdigest() == "sha256:" + o.rsplit(
                        "/", 1)[-1], f"object under a final name does not match it: {o}"
            referenced = set()
            for name in ("healthy", "errors", "cut"):
                v = reg.get(f"{name}@1")
                assert v.status == "ready"
                referenced |= {v.artifact["digest"][7:], *(f["digest"][7:] for f in v.artifact.get("files", []))}
            assert referenced <= finals, f"a ready version references a missing object: {referenced - finals}"
            assert not any(t.rsplit("/", 1)[-1][:64] in referenced for t in temps)
            uploads = direct.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
            swept = reg.store().sweep_tmp(0)
            direct.invalidate_cache()
            assert not [o for o in direct.find(f"{bucket}/store") if "/tmp/" in o], "sweep_tmp(0) left temp keys"
            # The upload S3 never finished is billed until aborted, and no object listing shows it.
            left = direct.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
            assert not [u["Key"] for u in left if "/tmp/" in u["Key"]], "sweep_tmp(0) left unfinished uploads"

            stored = Counter(e["data"]["name"] for e in events(db, "ArtifactStored"))
            failures = Counter(e["data"]["name"] for e in events(db, "ArtifactFailed"))
            assert stored == {"healthy": 1, "errors": 1, "cut": 1}, stored
            assert failures == {"errors": 1, "cut": 1}, failures
            checked = verify_log(db)
            report = reg.audit()
            assert report.ok, report.to_json()
    finally:
        worker.stop()
        proxy.close()

    figures.add("storage faults: S3 500s answered", proxy.counts["500 answered"])
    figures.add("storage faults: uploads cut mid-way (S3 went away)", proxy.counts["uploads cut"])
    figures.add("storage faults: actor retries seen (with back-off)", len(_retry_delays(log)))
    figures.add("storage faults: ArtifactFailed recorded then retried to ready", 2)
    figures.add("storage faults: unfinished uploads and temp keys removed by sweep_tmp", swept)
    figures.add("storage faults: unfinished multipart uploads found before the sweep", len(uploads))
    figures.add("storage faults: events checked", checked)
