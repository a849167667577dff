"""Upload rate of one large file into each artifact store, in the same run: local files, S3 (moto's server)
and Azure Blob (Azurite, through adlfs).

    .venv/bin/python scripts/bench_stores.py [--mib 256] [--repeats 3] [--tmpdir DIR]

Each repeat stores the same file into a fresh bucket/container/folder (so nothing is deduplicated) through
``BlobStore.put_file`` — hash pass, upload to a temp name while hashing, publish (local: link; S3 and Azure:
server-side copy) — in alternating order across repeats. Prints the median MB/s per store and its ratio to
local. moto and Azurite run on this machine, so the figures measure the client path plus an emulator on the
same two cores, not a cloud service. Needs Azurite in .ci/node_modules (``npm ci --prefix .ci``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.store import BlobStore  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise

AZURITE = ROOT / ".ci" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def start_azurite(workdir: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([str(AZURITE), "--location", workdir, "--blobHost", "127.0.0.1", "--blobPort", "0",
                             "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    else:
        raise SystemExit("Azurite did not start")
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    return proc, conn


def make_file(path: str, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tmpdir", default=None)
    args = ap.parse_args()

    import adlfs
    import s3fs
    from moto.server import ThreadedMotoServer

    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="bench-stores-") as tmp:
        src = os.path.join(tmp, "model.bin")
        make_file(src, args.mib)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        moto.start()
        host, port = moto.get_host_and_port()
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_ENDPOINT_URL_S3=f"http://{host}:{port}", FSSPEC_S3_ENDPOINT_URL=f"http://{host}:{port}")
        azurite, conn = start_azurite(os.path.join(tmp, "azurite"))
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = conn
        try:
            def local() -> str:
                return os.path.join(tmp, f"store-{uuid.uuid4().hex[:8]}")

            def s3() -> str:
                bucket = f"bench-{uuid.uuid4().hex[:8]}"
                s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
                return f"s3://{bucket}/artifacts"

            def azure() -> str:
                container = f"bench-{uuid.uuid4().hex[:8]}"
                adlfs.AzureBlobFileSystem(connection_string=conn, skip_instance_cache=True).mkdir(container)
                return f"az://{container}/artifacts"

            stores = {"local": local, "s3 (moto)": s3, "azure (Azurite)": azure}
            rates: dict[str, list[float]] = {name: [] for name in stores}
            size = args.mib * (1 << 20)
            for r in range(args.repeats):
                order = list(stores) if r % 2 == 0 else list(reversed(stores))
                for name in order:
                    store = BlobStore(stores[name]())
                    t0 = time.perf_counter()
                    blob = store.put_file(src)
                    elapsed = time.perf_counter() - t0
                    assert blob.size == size and store.verify(blob.digest)
                    rates[name].append(size / elapsed / 1e6)
            base = statistics.median(rates["local"])
            print(f"upload of a {args.mib} MiB file, median of {args.repeats} (MB/s; ratio to local):")
            for name, values in rates.items():
                med = statistics.median(values)
                print(f"  {name:<16} {med:8.1f} MB/s   {med / base:5.2f}x   runs: "
                      + ", ".join(f"{v:.0f}" for v in values))
        finally:
            azurite.terminate()
            azurite.wait(10)
            moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
