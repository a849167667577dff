"""A small registry with everything the pages show: two models with lineage, branches, aliases that moved,
a deleted version, metrics to sort by, an unsafe pickle, and a model whose every text is hostile markup."""

from __future__ import annotations

import json
import pickle
import secrets
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services import serve_on_a_free_port, subprocess_env

from modelledger import Registry

HERE = Path(__file__).parent

HOSTILE = '<script>alert("x")</script>'
HOSTILE_TAG = '"><img src=x onerror=alert(2)>'
HOSTILE_KEY = "</code><b>key</b>"
HOSTILE_ACTOR = "<i>mallory</i>"


class _Boom:
    """Pickles as a call to os.system: stored and flagged, never loaded."""

    def __reduce__(self):  # noqa: ANN204
        import os

        return (os.system, ("echo never",))


@dataclass(frozen=True)
class Built:
    home: Path
    before_promotion: int  # resnet@production was @1 here, before @2 existed
    head: int


def populate(home: Path, inputs: Path) -> Built:
    inputs.mkdir(parents=True, exist_ok=True)
    weights = inputs / "model.bin"
    weights.write_bytes(b"resnet weights v1\n" * 10)
    weights2 = inputs / "model-v2.bin"
    weights2.write_bytes(b"resnet weights v2\n" * 12)
    unsafe = inputs / "model.pkl"
    unsafe.write_bytes(pickle.dumps(_Boom(), protocol=2))
    with Registry.open(home, actor="alice@lab") as reg:
        v1 = reg.register("vision/resnet", artifact=str(weights), description="ResNet for the vision team",
                          params={"lr": 0.1, "layers": [{"units": 64}, {"units": 10}]}, tags={"task": "vision"})
        reg.metrics(v1, accuracy=0.81, loss=0.52)
        reg.alias(v1, "production")
        before = reg.head()
        v2 = reg.update(v1, params={"lr": 0.01}, artifact=str(weights2))
        reg.metrics(v2, accuracy=0.93, loss=0.31)
        reg.tag(v2, validated="true")
        reg.alias(v2, "production")
        v3 = reg.update(v1, optimizer={"name": "adam", "beta1": 0.9})
        reg.delete(v3, reason="diverged")
        d1 = reg.register("digits", artifact=str(unsafe), description="Digits classifier (pickled)",
                          tags={"task": "ocr"})
        reg.metrics(d1, accuracy=0.7)
    with Registry.open(home, actor=HOSTILE_ACTOR) as reg:
        x = reg.register("xss", artifact=str(weights), description=HOSTILE, tags={"note": HOSTILE_TAG},
                         params={HOSTILE_KEY: HOSTILE})
        reg.metrics(x, accuracy=0.5)
        return Built(home, before, reg.head())


class Server:
    """The web UI (web_app.py) in its own uvicorn process over the registry at ``home``."""

    def __init__(self, home: Path, token: str | None = None) -> None:
        # Which start answers (``serve_on_a_free_port``): the test app returns this start's nonce.
        nonce = secrets.token_hex(8)
        extra = {"WEB_TEST_TOKEN": token} if token else {}
        env = subprocess_env(home, WEB_TEST_NONCE=nonce, **extra)
        if not token:
            env.pop("WEB_TEST_TOKEN", None)

        def spawn(port: int) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "web_app:build", "--app-dir", str(HERE),
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def mine(port: int) -> bool | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/__test_nonce", timeout=2) as r:  # noqa: S310
                    return json.loads(r.read()).get("nonce") == nonce
            except OSError:
                return None

        self.port, self.proc = serve_on_a_free_port(spawn, mine, "uvicorn serving the web UI", interval=0.2)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # an open event stream can hold a graceful shutdown
            self.proc.kill()
            self.proc.wait()
