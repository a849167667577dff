"""Cold start of the read commands: wall time of one ``mledger`` process, from exec to exit.

A read (``show``, ``list``, ``log``) should cost little more than starting Python: the target is
``mledger show REF`` ≤ 150 ms. Each command runs as a fresh process (the installed ``mledger`` script of
this venv) on a small registry made here with ``mledger register``; ``python -c pass`` (the same
interpreter, with the same ``site``) is the floor. After one warm-up run of each (the file cache, the
``.pyc`` files), the commands are run round-robin — one of each per round, so a burst of load on a shared
machine hits every row alike — and the median and p90 of ``--runs`` rounds are printed.

    .venv/bin/python scripts/bench_coldstart.py              # 30 rounds
    .venv/bin/python scripts/bench_coldstart.py --runs 50 --json coldstart.json
    git archive main | tar -x -C /tmp/before              # another checkout, measured in the same rounds:
    .venv/bin/python scripts/bench_coldstart.py --baseline /tmp/before

The children run with bytecode caching on (``PYTHONDONTWRITEBYTECODE`` removed), as an installed
``mledger`` runs: the warm-up writes the ``.pyc`` files of a source checkout. Without them every run
compiles the project's modules again (that alone added ~0.1 s per command here).

With ``--remote`` (the default) the same ``show``/``list``/``log`` also run over HTTP (``MLEDGER_URL``
+ a reader token) against a ``mledger serve`` this script starts on the same registry, so the remote rows
include the request and the server's answer: the issue's target is the remote ``mledger show`` ≤ 150 ms.
``--no-remote`` leaves them out.

It measures wall time only (what a user waits for); ``python -X importtime -c "import modelledger.cli"``
says where the import part of it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from _benchlib import log, machine, median, percentile, temp_dir

TARGET_MS = 150.0
# The commands measured (argv after `mledger`); the first is the one with the target.
COMMANDS: list[tuple[str, list[str]]] = [
    ("mledger show m@1", ["show", "m@1"]),
    ("mledger show m", ["show", "m"]),
    ("mledger list", ["list"]),
    ("mledger log --json", ["log", "--json"]),
    ("mledger history m@1", ["history", "m@1"]),
    ("mledger --help", ["--help"]),
]
# Over HTTP (MLEDGER_URL): the first is the one with the target.
REMOTE: list[tuple[str, list[str]]] = [
    ("remote: mledger show m@1", ["show", "m@1"]),
    ("remote: mledger list", ["list"]),
    ("remote: mledger log --json", ["log", "--json"]),
]
TARGETS = (COMMANDS[0][0], REMOTE[0][0])


def _mledger() -> str:
    """The ``mledger`` console script next to this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("mledger")
    if not script.exists():
        raise SystemExit(f"no {script}: install the project in this venv (pip install -e .)")
    return str(script)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one process: CPU (user + system) moves less than wall time with the machine's
    load, so it says better whether a change helped; wall time is what the target is about."""
    cpu = _cpu()
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return elapsed, (_cpu() - cpu) * 1000


def _checkout_launcher(root: str) -> list[str]:
    """What the console script does, with another checkout of the project first on ``sys.path`` (ahead of
    this venv's editable install, whose finder comes after the path)."""
    code = f"import sys; sys.path.insert(0, {root!r}); from modelledger.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def _make_registry(home: str, work: str, env: dict[str, str]) -> None:
    """A small registry: 2 models, 3 versions with tags, metrics and an alias (about a dozen events)."""
    mledger = _mledger()
    for i, text in enumerate((b"weights v1\n", b"weights v2\n", b"other\n")):
        path = os.path.join(work, f"w{i}.bin")
        with open(path, "wb") as f:
            f.write(text)
    steps = [
        ["register", "m", "--artifact", os.path.join(work, "w0.bin"), "--tag", "team=a", "--params", '{"lr": 0.1}'],
        ["register", "m", "--artifact", os.path.join(work, "w1.bin"), "--params", '{"lr": 0.01}'],
        ["register", "other", "--artifact", os.path.join(work, "w2.bin")],
        ["metrics", "m@1", "acc=0.91"],
        ["metrics", "m@2", "acc=0.93"],
        ["alias", "m@2", "production"],
    ]
    for step in steps:
        _run([mledger, *step], env)


@contextmanager
def _nothing(env: dict[str, str]) -> Iterator[dict[str, str]]:
    yield env


def _measure(args: argparse.Namespace, env: dict[str, str], remote_env: dict[str, str]
             ) -> tuple[dict[str, list[float]], dict[str, list[float]], list[tuple[str, list[str], dict[str, str]]]]:
    mledger = _mledger()
    cases = [("python -c pass (floor)", [sys.executable, "-c", "pass"], env)]
    cases += [(label, [mledger, *argv], env) for label, argv in COMMANDS]
    if args.remote:
        cases += [(label, [mledger, *argv], remote_env) for label, argv in REMOTE]
    if args.baseline:
        if not os.path.isfile(os.path.join(args.baseline, "modelledger", "cli.py")):
            raise SystemExit(f"--baseline {args.baseline}: no modelledger/cli.py there")
        before = _checkout_launcher(os.path.abspath(args.baseline))
        cases += [(f"baseline: {label}", [*before, *argv], env) for label, argv in COMMANDS]
        if args.remote:
            cases += [(f"baseline: {label}", [*before, *argv], remote_env) for label, argv in REMOTE]
    for _, argv, case_env in cases:  # warm-up: file cache, .pyc files, the catalog's first catch-up
        _run(argv, case_env)
    samples: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    log(f"{args.runs} rounds of {len(cases)} commands")
    for _ in range(args.runs):
        for label, argv, case_env in cases:
            wall, used = _run(argv, case_env)
            samples[label].append(wall)
            cpu[label].append(used)
    return samples, cpu, cases


@contextmanager
def _server(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``mledger serve`` on the bench's registry, with a reader token: the environment of a remote CLI."""
    mledger = _mledger()
    made = subprocess.run([mledger, "token", "create", "bench-coldstart", "--role", "reader", "--json"], env=env,
                          capture_output=True, text=True, check=True)
    secret = json.loads(made.stdout)["secret"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([mledger, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit("mledger serve exited")
            try:
                with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("mledger serve did not answer in 60 s") from None
                time.sleep(0.2)
        yield {**env, "MLEDGER_URL": url, "MLEDGER_TOKEN": secret}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="rounds (each runs every command once); at least 20")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--tmp", help="parent folder of the temporary registry (default: the system's)")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another checkout of the project (e.g. `git archive main`): its commands run in the "
                         "same rounds, with this interpreter")
    ap.add_argument("--remote", action=argparse.BooleanOptionalAction, default=True,
                    help="also the reads over HTTP, against a `mledger serve` started here (default: yes)")
    args = ap.parse_args()
    if args.runs < 20:
        raise SystemExit("--runs: at least 20")

    with temp_dir(args.tmp, "coldstart-") as work:
        home = os.path.join(work, "home")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MLEDGER_") and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
        env.update(MLEDGER_HOME=home, MLEDGER_ACTOR="bench@coldstart")
        log(f"registry in {home}")
        _make_registry(home, work, env)
        with _server(env) if args.remote else _nothing(env) as remote_env:
            samples, cpu, cases = _measure(args, env, remote_env)
    facts = machine()
    floor = median(samples[cases[0][0]])
    print("modelledger cold start (wall time of one process, exec to exit)")
    print(f"machine: nproc {facts['nproc']}, CPython {facts['python']}, loadavg {facts['loadavg']}")
    print(f"{args.runs} rounds, commands interleaved; wall time (median, p90, min) and the child's CPU time "
          f"(user + system, median); target: `mledger show REF` ≤ {TARGET_MS:.0f} ms wall, locally and over HTTP "
          "(the remote rows include the server's answer)\n")
    width = max(len(label) for label, _, _ in cases) + 1
    print(f"{'command':<{width}} {'median':>9} {'p90':>9} {'min':>9} {'− floor':>9} {'CPU':>9}  target")
    rows = []
    for label, _, _ in cases:
        values = samples[label]
        med = median(values)
        verdict = ""
        if label in TARGETS:
            verdict = f"≤ {TARGET_MS:.0f} ms  {'OK' if med <= TARGET_MS else 'MISS'}"
        print(f"{label:<{width}} {med:>6.1f} ms {percentile(values, 90):>6.1f} ms {min(values):>6.1f} ms "
              f"{med - floor:>6.1f} ms {median(cpu[label]):>6.1f} ms  {verdict}")
        rows.append({"command": label, "median_ms": med, "p90_ms": percentile(values, 90),
                     "min_ms": min(values), "cpu_median_ms": median(cpu[label]), "runs": len(values)})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": facts, "target_ms": TARGET_MS, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
