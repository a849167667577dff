"""Counting a PostgreSQL command's round trips in a test (the ones ``scripts/profile_pg.py`` counts)."""

from __future__ import annotations

import psycopg
import pytest


class RoundTrips:
    """Counts the waits for the server's answer, as ``scripts/profile_pg.py`` does (``Connection.wait`` on a
    reply: a plain execute, a pipeline's fetch of pending results, its sync or exit)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        wait = psycopg.Connection.wait

        def counting(conn: psycopg.Connection, gen, *args, **kwargs):  # noqa: ANN001, ANN202
            name = getattr(getattr(gen, "gi_code", None), "co_name", "")
            pipeline = conn._pipeline
            if name in ("_sync_gen", "_exit_gen") or (name == "_fetch_gen" and pipeline and pipeline.result_queue) \
                    or (name not in ("_fetch_gen", "_enter_gen") and pipeline is None):
                self.count += 1
            return wait(conn, gen, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "wait", counting)
