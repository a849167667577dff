"""What a temporal-state table's key costs the PostgreSQL server while a rebuild writes its rows, kept in step
row by row (a primary key) or built once after the rows (a unique index, as ``projections/postgres/schema.py``
makes it).

    .venv/bin/python scripts/bench_state_keys.py [--rows-per-page N] [--pages N] [--rounds N]

Rows shaped like ``model_states`` (a model name of 100, a position, ~190 B of state JSON), each page sorted on
the name as the fold sorts it, written by ``COPY`` into a fresh table per round, in one transaction; the two
ways alternate which goes first. Printed: the server backend's CPU per row (``/proc/PID/schedstat``), median of
the rounds, and the ratio. A server on this host only. The database has a random name and is dropped.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pg import database  # noqa: E402
from profile_pg import server_cpu_of  # noqa: E402

MODES = ("key kept in step", "key built after")


def pages_of(rows_per_page: int, pages: int) -> list[str]:
    """The pages as COPY text, each sorted on the name."""
    rng, position, out = random.Random(1), 0, []
    for _ in range(pages):
        rows = []
        for _ in range(rows_per_page):
            position += 1
            state = ('["x",' + str(position) + ',{"a":"b"},0,12,13,"2026-01-01T00:00:00Z","me",'
                     '"2026-01-01T00:00:00Z",5,null,{"production":3}]')
            rows.append((f"model-{rng.randrange(100):03d}", position, state))
        rows.sort(key=lambda r: r[0])
        out.append("".join(f"{name}\t{pos}\t{state}\n" for name, pos, state in rows))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-page", type=int, default=20_000)
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    import psycopg

    pages = pages_of(args.rows_per_page, args.pages)
    rows = args.rows_per_page * args.pages
    spent: dict[str, list[float]] = {m: [] for m in MODES}
    with database("mledger_keys") as url, psycopg.connect(url, autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                conn.execute("DROP TABLE IF EXISTS states")
                key = ", PRIMARY KEY (name, position)" if mode == MODES[0] else ""
                conn.execute('CREATE TABLE states (name text COLLATE "C" NOT NULL, position bigint NOT NULL,'
                             f" state text NOT NULL{key})")
                before = server_cpu_of([pid])
                with conn.transaction():
                    for text in pages:
                        with conn.cursor().copy("COPY states (name, position, state) FROM STDIN") as copy:
                            copy.write(text)
                    if mode == MODES[1]:
                        conn.execute("CREATE UNIQUE INDEX states_key ON states (name, position)")
                after = server_cpu_of([pid])
                if before is None or after is None:
                    print("the server's CPU cannot be read from /proc here (a server on another host?)")
                    return 1
                spent[mode].append((after - before) / rows * 1e6)
    medians = {m: statistics.median(v) for m, v in spent.items()}
    for mode in MODES:
        print(f"{mode}: server CPU {medians[mode]:.2f} µs a row (rounds: "
              f"{', '.join(f'{x:.2f}' for x in spent[mode])})")
    print(f"built after / kept in step: {medians[MODES[1]] / medians[MODES[0]]:.2f} ({rows:,} rows, "
          f"{args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
