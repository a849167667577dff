"""A folder artifact of many small files, registered through the SDK in a child process (security finding M8).

Prints, as JSON: files, the wall time of the ``register`` call, the child's peak RSS (``VmHWM``) before and
after the call, the size of the ``ArtifactStored`` payload, ``file_count`` and how many files the event lists.
Before this change a folder of ~9,000 files was refused after every byte was copied (the event exceeded
1 MiB) and 100,000 files ran past 2 minutes.

    .venv/bin/python scripts/bench_large_folder.py --files 100000 [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _benchlib import add_repo_to_path, log, small_files, temp_dir

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

from modelledger import Registry
reg = Registry.open(sys.argv[1])
before = hwm()
start = time.perf_counter()
v = reg.register("many", sys.argv[2])
took = time.perf_counter() - start
stored = [e for e in reg.log() if e.type == "ArtifactStored"][-1]
print(json.dumps({"status": v.status, "seconds": round(took, 2), "rss_before_mb": round(before / 2**20, 1),
                  "rss_peak_mb": round(hwm() / 2**20, 1),
                  "event_bytes": len(json.dumps(stored.data)), "file_count": stored.data.get("file_count"),
                  "files_in_event": len(stored.data.get("files") or [])}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="where to make the folder and the registry")
    args = parser.parse_args()
    add_repo_to_path()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with temp_dir(args.dir, "mledger-many-") as work:
        folder = os.path.join(work, "many")
        log(f"making {args.files:,} files")
        small_files(folder, args.files, seed=7)
        log("registering")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLEDGER_")}
        done = subprocess.run([sys.executable, "-c", CHILD, os.path.join(work, "home"), folder, root],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["files"] = args.files
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
