"""Upload a large file through a real `mledger serve` and measure the server's memory (issue 11, point 4).

    .venv/bin/python scripts/http_upload_memory.py [--gib 2]

Starts `mledger serve` on a fresh registry, grants a writer token, writes a file of --gib GiB, uploads it
(HEAD, then a streamed PUT), registers it, then uploads the same bytes again. Prints the server's peak RSS
(VmHWM) before and after the upload, the upload rate beside a local `Registry.register` of the same file
(the ingest rate, measured in the same run), and how many bytes the second upload sent (0: the server had
them). Exit status 1 when the peak RSS grew by more than 100 MB.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelledger import Registry  # noqa: E402
from modelledger.server.client import upload_blob  # noqa: E402


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        big = Path(tmp) / "big.bin"
        block = os.urandom(1 << 20)
        with open(big, "wb") as f:
            for _ in range(int(args.gib * 1024)):
                f.write(block)
        size = big.stat().st_size
        with Registry.open(home, actor="bench") as reg:
            _state, secret = reg.create_token("bench", "writer")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, MLEDGER_HOME=str(home), PYTHONPATH=str(ROOT))
        exe = Path(sys.executable).parent / "mledger"
        proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=3600) as http:
                http.get("/api/v1/list")  # the first request loads what the routes import
                before = peak_rss(proc.pid)
                started = time.perf_counter()
                digest, _size, sent = upload_blob(http, big)
                upload_s = time.perf_counter() - started
                after = peak_rss(proc.pid)
                r = http.post("/api/v1/register", json={"name": "big", "artifact": {
                    "digest": digest, "size": size, "filename": "big.bin"}})
                r.raise_for_status()
                again_started = time.perf_counter()
                _d, _s, sent_again = upload_blob(http, big)
                again_s = time.perf_counter() - again_started
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        with Registry.open(Path(tmp) / "local", actor="bench") as reg:
            started = time.perf_counter()
            reg.register("big", str(big))
            local_s = time.perf_counter() - started
    grown = after - before
    mib = size / 2**20
    print(f"upload of {mib / 1024:.2f} GiB: server peak RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB "
          f"(growth {grown / 2**20:.1f} MiB; limit 100 MB)")
    print(f"upload {mib / upload_s:.0f} MiB/s (hash on the client + streamed PUT) vs local register "
          f"{mib / local_s:.0f} MiB/s: ratio {local_s / upload_s:.2f}")
    print(f"second upload of the same bytes: sent {'everything' if sent_again else 'nothing'} "
          f"({again_s:.1f} s, the client's hash only); first upload sent: {sent}")
    return 0 if grown <= 100 * 10**6 and sent and not sent_again else 1


if __name__ == "__main__":
    sys.exit(main())
