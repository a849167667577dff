"""The run ids MLflow's answers show, read from the log in position order by each server process
(``modelledger/server/mlflow_run_ids.py``): the same as the event at each position says, however the reading
is split (a few events per call, a bound on what is kept) and after the log grows. A real SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelledger import Registry
from modelledger.server import mlflow_run_ids
from modelledger.server.mlflow_run_ids import RunIds


def _truth(reg: Registry, positions: list[int]) -> list[str]:
    out = []
    for p in positions:
        e = reg.recorder.event_at(p)
        out.append(str(((e.data.get("origin") or {}).get("run_id")) or e.meta.get("run_id") or ""))
    return out


def _register(reg: Registry, tmp_path: Path, first: int, count: int) -> None:
    for k in range(first, first + count):
        f = tmp_path / f"m{k}.bin"
        f.write_bytes(b"MLBENCH %d" % k)
        reg.register("m", str(f), run_id=f"run-{k}" if k % 3 else None)
        reg.tag(f"m@{k + 1}", {"k": str(k)})  # events without a run id between the versions


@pytest.mark.parametrize("most", [1_000, 2])
def test_run_ids_are_those_of_the_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most: int) -> None:
    monkeypatch.setattr(mlflow_run_ids, "STEP", 7)
    monkeypatch.setattr(mlflow_run_ids, "PAGE", 3)
    monkeypatch.setattr(mlflow_run_ids, "MOST", most)
    with Registry.open(home=tmp_path / "home", broker="embedded", actor="t") as reg:
        _register(reg, tmp_path, 0, 9)
        index = RunIds()
        positions = [v.position for v in reg.model("m").versions]
        assert any(_truth(reg, positions)) and not all(_truth(reg, positions))
        # The newest first: far beyond what one call reads on, so part is read one row at a time.
        assert index.of(reg.recorder, positions[::-1]) == _truth(reg, positions[::-1])
        for _ in range(5):  # each call reads on a little further
            assert index.of(reg.recorder, positions) == _truth(reg, positions)
        if most > 2:
            assert index.upto >= max(positions) and not index.full
        else:
            assert index.full  # stopped reading on at the bound; still right, row by row
        _register(reg, tmp_path, 9, 3)  # the log grows
        positions = [v.position for v in reg.model("m").versions]
        assert index.of(reg.recorder, positions) == _truth(reg, positions)
        assert index.of(reg.recorder, [reg.recorder.head() + 5]) == [""]  # no event there (yet)
