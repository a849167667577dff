"""A process that has imported ``mledger serve``'s modules once and forks a server child per request.

Under ``MLEDGER_TEST_FACE=http`` every CLI and SDK test starts its own ``mledger serve`` (``services.FaceServer``).
A cold start spent ~0.75 s of CPU before the server answered, nearly all of it importing (``python -X
importtime``: ``modelledger.server.run`` with uvicorn, FastAPI and the backends, and ``sqlite_utils`` alone
~0.65 s of that under the profiler), and the HTTP passes start ~660 servers. A child forked from this process
runs the same ``modelledger.cli.main(["serve", ...])`` in its own process with the test's environment and working
directory; only the imports are shared. A cold ``mledger serve`` is still started as a real command by the
server tests (``tests/server/``) and by ``FaceServer`` when no zygote can be used.

Protocol: one JSON object per line on stdin, one answer per line on stdout.

- ``{"op": "spawn", "argv": [...], "env": {...}, "cwd": "...", "stderr": "/path"}`` → ``{"pid": N}``: the child's
  stdin and stdout are ``/dev/null``, its stderr the file named;
- ``{"op": "status", "pid": N}`` → ``{"returncode": int | null}`` (null while it runs; a signal ``-SIG`` as
  ``subprocess`` reports it).

At EOF on stdin (the test process ended, or died) every child still running is killed and the zygote exits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

import sqlite_utils  # noqa: F401
import uvicorn  # noqa: F401
import uvicorn.lifespan.on  # noqa: F401
import uvicorn.loops.uvloop  # noqa: F401
import uvicorn.protocols.http.httptools_impl  # noqa: F401
import uvicorn.protocols.websockets.auto  # noqa: F401

import eventstore.sqlite  # noqa: F401

# What `mledger serve` imports before it answers (the import profile above), loaded once here.
import modelledger.cli  # noqa: F401
import modelledger.server.app  # noqa: F401
import modelledger.server.run  # noqa: F401

try:  # the PostgreSQL pass's servers
    import eventstore.postgres  # noqa: F401
    import projections.postgres.fold  # noqa: F401
except ImportError:
    pass

exited: dict[int, int] = {}
running: set[int] = set()


def _reap() -> None:
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        running.discard(pid)
        exited[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _child(request: dict) -> None:
    """In the forked child: the test's environment and directory, then the CLI's main; never returns."""
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        os.close(null)
        os.close(err)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["mledger", *request["argv"]]
        code = modelledger.cli.main(request["argv"]) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports whatever ended it on its stderr
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C ends the test process; EOF on stdin then ends us
    for line in sys.stdin:
        request = json.loads(line)
        _reap()
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                _child(request)
            running.add(pid)
            answer: dict = {"pid": pid}
        elif request["op"] == "status":
            pid = request["pid"]
            answer = {"returncode": exited.get(pid)} if pid not in running else {"returncode": None}
        else:
            answer = {"error": f"unknown op {request['op']!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    for pid in list(running):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap()
    return 0


if __name__ == "__main__":
    sys.exit(main())
