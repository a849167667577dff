"""Metrics whose values mix integers and floats in one fold page (acc=1, loss=0.25) on PostgreSQL: the
catalog's fold sends each column as one array, and an array of mixed Python types was refused."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.postgres


def test_integer_and_float_metrics_in_one_page(cli, home, make_artifact, new_postgres_database, monkeypatch):
    monkeypatch.setenv("MLEDGER_DATABASE", new_postgres_database())
    art = make_artifact("m.bin", b"weights\n")
    assert cli("register", "m", "--artifact", str(art))[0] == 0
    code, _, err = cli("metrics", "m@1", "epochs=3", "loss=0.25", "acc=1")
    assert code == 0, err
    code, out, err = cli("projections", "rebuild", "--json")  # the whole log folded as one page
    assert code == 0 and json.loads(out)["identical"], err
    code, out, _ = cli("show", "m@1", "--json")
    assert json.loads(out)["metrics"] == {"epochs": 3, "loss": 0.25, "acc": 1}
