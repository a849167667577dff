"""The blob-store contract: what every artifact store must do, as one suite, and the servers it runs on.

Written against the store's public behaviour (the methods the registry calls: put/exists/open/size/delete,
ingest, manifest, pull, verify, iter_blobs, sweep_tmp) and the registry on top (register, pull, gc,
audit --deep), so a later blob interface with backends can sit behind the same tests. A backend is a URL
plus the environment that configures it (as a user's shell would); ``corrupt`` is the one hook that reaches
the bytes beside the store.

Servers: Azurite's blob service (``.ci/node_modules``, installed from ``.ci/package.json`` by ``.ci/run``)
and, for Aliyun OSS, moto behind a small forward proxy that records every request's Host header — the proof
that the requests really use virtual-hosted addressing (``bucket.endpoint``), which OSS requires.
"""

from __future__ import annotations

import http.client
import os
import queue
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from services import ROOT, unavailable

# Azurite's documented development account (public, the same in every Azurite install).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURE_VARS = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET",
              "AZURE_STORAGE_TENANT_ID", "AZURE_STORAGE_ANON")
OSS_VARS = ("MLEDGER_OSS_ENDPOINT", "OSS_ENDPOINT", "OSS_REGION", "OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET",
            "OSS_SESSION_TOKEN")
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
              "all_proxy")
AZURITE_BIN = ROOT / ".ci" / "node_modules" / ".bin" / "azurite-blob"


@dataclass
class Backend:
    """One store under test: its URL, the environment that configures it, and the hook that reaches its bytes."""

    name: str
    url: str
    corrupt: Callable[[str, bytes], None]  # (digest, new bytes): rewrites the stored bytes beside the store
    shared: bool = True  # visible to another process (memory:// is not)
    env: dict[str, str] = field(default_factory=dict)


def azurite_connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")


@contextmanager
def azurite(workdir: Path) -> Iterator[str]:
    """Azurite's blob service on a free port with its data in ``workdir``; yields a connection string."""
    if not AZURITE_BIN.exists() or shutil.which("node") is None:
        unavailable(f"Azurite ({AZURITE_BIN} missing or no node; `npm ci --prefix .ci` installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    # Port 0: Azurite binds a free port and prints it (no race between choosing a port and binding it).
    # --disableTelemetry: Azurite otherwise posts usage data to an outside host on every run.
    proc = subprocess.Popen([str(AZURITE_BIN), "--location", str(workdir), "--blobHost", "127.0.0.1",
                             "--blobPort", "0", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
                             "--silent"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=drain, daemon=True).start()
    port = None
    seen = []
    try:
        while port is None:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                break
            if not line:
                break
            seen.append(line.strip())
            m = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        if port is None:
            unavailable(f"Azurite (did not start: {' | '.join(seen[-3:]) or 'no output'})")
        yield azurite_connection_string(port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class HostRecordingProxy:
    """A forward HTTP proxy that sends every request to one upstream (moto) and records its Host header,
    Content-Encoding and checksum headers. The client resolves nothing: ``bucket.oss-test.localhost`` needs no DNS entry."""

    def __init__(self, upstream: str) -> None:
        up = urlsplit(upstream)
        self.upstream = (up.hostname or "127.0.0.1", up.port or 80)
        # (method, Host, Content-Encoding + the x-amz-checksum*/x-amz-sdk-checksum* headers it carried)
        self.requests: list[tuple[str, str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                target = urlsplit(self.path)
                path = (target.path or "/") + (f"?{target.query}" if target.query else "")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                checksums = [k.lower() for k in self.headers if "checksum" in k.lower()]
                proxy.requests.append((self.command, self.headers.get("Host", ""),
                                       " ".join([self.headers.get("Content-Encoding", ""), *checksums]).strip()))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection",
                                                                                     "connection")}
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    conn.request(self.command, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    declared = resp.getheader("Content-Length")
                    self.send_header("Content-Length", declared if self.command == "HEAD" and declared
                                     else str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


MYSQL_ADMIN = os.environ.get("MLEDGER_TEST_MYSQL", "mysql://root@127.0.0.1:3306/mysql")


def mysql_database() -> str:
    """A new empty MariaDB/MySQL database (random name) on the machine's server; its URL."""
    try:
        import pymysql
    except ImportError:
        unavailable("PyMySQL (the mysql extra)")
    admin = urlsplit(MYSQL_ADMIN)
    name = f"mledger_test_{uuid.uuid4().hex[:16]}"
    try:
        conn = pymysql.connect(host=admin.hostname, port=admin.port or 3306, user=admin.username or "root",
                               password=admin.password or "", connect_timeout=3, autocommit=True)
    except pymysql.Error as exc:
        unavailable(f"MariaDB/MySQL at {admin.hostname}:{admin.port} ({exc})")
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")  # the name is ours (hex), never input
    return f"mysql://{admin.username or 'root'}@{admin.hostname}:{admin.port or 3306}/{name}"


def drop_mysql_database(url: str) -> None:
    import pymysql

    u = urlsplit(url)
    name = u.path.lstrip("/")
    assert name.startswith("mledger_test_")
    with pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username or "root", connect_timeout=3,
                         autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def database_corrupt(url: str) -> Callable[[str, bytes], None]:
    """Rewrite a database blob's chunk rows with other bytes (its size and digest rows unchanged)."""
    def corrupt(digest: str, data: bytes) -> None:
        from workers.blobs.database import CHUNK, dialect_for

        sql = dialect_for(url)
        conn = sql.connect(url)
        try:
            cur = conn.cursor()
            cur.execute(sql.q("SELECT upload FROM blob_store WHERE digest = ?"), (digest,))
            (upload,) = cur.fetchone()
            sql.begin(conn)
            cur.execute(sql.q("DELETE FROM blob_chunks WHERE upload = ?"), (upload,))
            for seq, start in enumerate(range(0, len(data), CHUNK)):
                cur.execute(sql.q("INSERT INTO blob_chunks (upload, seq, data) VALUES (?, ?, ?)"),
                            (upload, seq, data[start:start + CHUNK]))
            sql.commit(conn)
        finally:
            conn.close()
    return corrupt


def new_name(prefix: str = "mledger") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def environ_for(names: tuple[str, ...]) -> dict[str, str]:
    return {k: os.environ[k] for k in names if k in os.environ}
