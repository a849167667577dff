"""``mledger worker``: dramatiq worker processes serving the Redis broker, plus the sweep.

The sweep re-sends the ingest job of every version whose outcome event is missing (a message lost while
Redis was down, a crash between commit and send) and removes temporary files that killed writers left in
the store. It runs once at start (everything pending) and then every ``interval`` seconds (versions
pending for longer than that).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from typing import Any

import dramatiq

from eventstore.errors import ModelLedgerError, ValidationError

from .config import Config
from .registry import Registry

log = logging.getLogger("modelledger.worker")
TMP_MAX_AGE = 3600.0


def _serve(config: Config, threads: int, stop: Any, sweep_interval: float | None) -> None:
    with Registry(config, client="worker") as reg:
        if reg.embedded:
            raise ValidationError("mledger worker serves a Redis broker: set MLEDGER_BROKER=redis://host:port/db")
        reg.broker.emit_after("process_boot")
        worker = dramatiq.Worker(reg.broker, worker_threads=threads, worker_timeout=100)
        worker.start()
        if sweep_interval is not None:
            # Where this worker's registry lives (MLEDGER_DATABASE), the password masked.
            log.info("serving registry %s in %s", reg.registry_id[:12], config.database_label)
            log.info("reading artifact sources for others only under MLEDGER_SOURCES: %s", reg.sources.describe())
        try:
            first = True
            while not stop.is_set():
                if sweep_interval is not None:
                    _sweep_once(reg, 0.0 if first else sweep_interval)
                    first = False
                stop.wait(sweep_interval or 1.0)
        finally:
            worker.stop(timeout=10_000)


def _sweep_once(reg: Registry, older_than: float) -> None:
    try:
        sent = reg.sweep(older_than=older_than)
        reg.send_webhook_jobs()  # subscriptions behind the log: deliveries resume from their cursors
        swept = reg.store().sweep_tmp(TMP_MAX_AGE)
        if sent or swept:
            log.info("sweep: re-sent %d pending ingest(s), removed %d stale temp file(s) or unfinished upload(s)",
                     sent, swept)
    except ModelLedgerError as exc:
        # Redis or the store is away: the next sweep tries again.
        log.warning("sweep: %s", exc)


def _child(config: Config, threads: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _serve(config, threads, stop, None)


def run(config: Config, *, processes: int = 1, threads: int = 4, sweep_interval: float = 30.0,
        stop: threading.Event | None = None) -> int:
    if processes < 1 or threads < 1:
        raise ValidationError("--processes and --threads must be at least 1")
    if sweep_interval <= 0:
        raise ValidationError("--sweep-interval must be positive")
    if config.broker == "embedded":
        raise ValidationError("mledger worker serves a Redis broker: set MLEDGER_BROKER=redis://host:port/db")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Children are spawned, not forked: an S3 filesystem or a SQLite connection must not cross a fork.
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_child, args=(config, threads), daemon=True) for _ in range(processes - 1)]
    for child in children:
        child.start()
    try:
        _serve(config, threads, stop, sweep_interval)
    finally:
        for child in children:
            child.terminate()
        deadline = time.monotonic() + 15
        for child in children:
            child.join(max(0.1, deadline - time.monotonic()))
    return 0
