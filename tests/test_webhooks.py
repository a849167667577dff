"""Webhooks that do not lose events: a receiver that was down gets every missed event, in order, signed,
once each; a delivering process killed mid-way loses none; only allowed URLs; replay from a position."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from services import mledger_command, subprocess_env, wait_for

from eventstore.errors import ArtifactError, NotFoundError, ValidationError
from eventstore.webhooks import Replay, sign
from modelledger.registry import Registry

KEY = "test-operator-key-0123456789"


class Receiver:
    """A small HTTP server on a fixed port that records what it is sent (and can be slow, or not there)."""

    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.port, self.delay = port, delay
        self.got: list[tuple[dict, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(outer.delay)
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body) | {"_raw": body.decode()}))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hooks_env(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("MLEDGER_WEBHOOK_KEY", KEY)
    monkeypatch.setenv("MLEDGER_WEBHOOK_URLS", f"http://127.0.0.1:{port}/")
    return port


def _fifty_events(reg: Registry, artifact: Path) -> None:
    reg.register("churn", str(artifact))  # model_version.created (and ModelRegistered, ArtifactStored: not asked)
    for i in range(49):
        reg.tag("churn@1", {"step": str(i)})  # model_version_tag.set


def test_a_receiver_that_was_down_gets_all_fifty_in_order_signed_once(home: Path, artifact: Path, hooks_env: int) -> None:
    with Registry.open(home) as reg:
        hook, secret = reg.create_webhook("ci", f"http://127.0.0.1:{hooks_env}/hook",
                                          ["model_version.created", "model_version_tag.set"])
        _fifty_events(reg, artifact)
        with pytest.raises(ArtifactError, match="did not answer"):
            reg.deliver_webhooks()  # nothing listens: the receiver is down
        receiver = Receiver(hooks_env)
        try:
            assert reg.deliver_webhooks() == {"ci": 50}
            assert reg.deliver_webhooks() == {"ci": 0}  # nothing is sent twice
        finally:
            receiver.stop()
    assert len(receiver.got) == 50
    positions = [body["position"] for _, body in receiver.got]
    assert positions == sorted(positions) and len(set(positions)) == 50
    assert [body["entity"] + "." + body["action"] for _, body in receiver.got] == \
        ["model_version.created"] + ["model_version_tag.set"] * 49
    for headers, body in receiver.got:
        delivery, stamp = headers["x-mlflow-delivery-id"], headers["x-mlflow-timestamp"]
        assert headers["x-mlflow-signature"] == sign(secret, delivery, stamp, body["_raw"])
        assert delivery == f"{hook.webhook_id}-{body['position']}"
    # The log keeps who subscribed, and how far each delivery got — never the secret.
    with Registry.open(home) as reg:
        history = list(reg.log())
        assert secret not in json.dumps([e.to_json() for e in history])
        assert reg.webhook("ci").cursor >= max(positions)


def test_replay_from_a_position(home: Path, artifact: Path, hooks_env: int) -> None:
    receiver = Receiver(hooks_env)
    try:
        with Registry.open(home) as reg:
            hook, _ = reg.create_webhook("replayed", f"http://127.0.0.1:{hooks_env}/", ["Tagged"])
            _fifty_events(reg, artifact)
            assert reg.deliver_webhooks() == {"replayed": 49}
            tenth = receiver.got[9][1]["position"]
            reg.change_webhook(Replay(hook.webhook_id, tenth))
            assert reg.deliver_webhooks() == {"replayed": 39}
    finally:
        receiver.stop()
    assert [b["position"] for _, b in receiver.got[49:]] == [b["position"] for _, b in receiver.got[10:49]]


def test_a_delivery_killed_midway_loses_nothing(home: Path, artifact: Path, hooks_env: int) -> None:
    with Registry.open(home) as reg:
        reg.create_webhook("killed", f"http://127.0.0.1:{hooks_env}/", ["model_version.created",
                                                                         "model_version_tag.set"])
        _fifty_events(reg, artifact)
    receiver = Receiver(hooks_env, delay=0.1)
    try:
        env = subprocess_env(home, MLEDGER_WEBHOOK_KEY=KEY, MLEDGER_WEBHOOK_URLS=os.environ["MLEDGER_WEBHOOK_URLS"])
        proc = subprocess.Popen([*mledger_command(), "webhook", "deliver"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: len(receiver.got) >= 10, 60, "ten deliveries")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        receiver.delay = 0.0
        with Registry.open(home) as reg:
            reg.deliver_webhooks()
    finally:
        receiver.stop()
    positions = [b["position"] for _, b in receiver.got]
    assert len(set(positions)) == 50  # every event arrived
    first_seen = list(dict.fromkeys(positions))
    assert first_seen == sorted(first_seen)  # in order
    # At most the events after the last recorded cursor came twice, under the same delivery id.
    assert len(positions) - 50 <= 50


def test_two_deliveries_at_once_without_a_broker_send_each_event_once(home: Path, artifact: Path,
                                                                       hooks_env: int) -> None:
    """Two `mledger webhook deliver` processes started together on the same subscription (no broker, so no
    Redis lease): the claim in the log lets one send while the other finds it held; the receiver gets each
    event once, in order, and the two runs' counts add up to what it got."""
    with Registry.open(home) as reg:
        reg.create_webhook("both", f"http://127.0.0.1:{hooks_env}/", ["model_version.created",
                                                                       "model_version_tag.set"])
        reg.register("churn", str(artifact))
        for i in range(39):
            reg.tag("churn@1", {"step": str(i)})
    receiver = Receiver(hooks_env, delay=0.02)  # ~1 s of sending: the two runs overlap
    try:
        env = subprocess_env(home, MLEDGER_WEBHOOK_KEY=KEY, MLEDGER_WEBHOOK_URLS=os.environ["MLEDGER_WEBHOOK_URLS"])
        procs = [subprocess.Popen([*mledger_command(), "webhook", "deliver", "--json"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        receiver.stop()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    positions = [b["position"] for _, b in receiver.got]
    assert len(positions) == 40 and positions == sorted(set(positions))  # each once, in log order
    assert sum(json.loads(out)["delivered"]["both"] for out, _ in outs) == 40
    with Registry.open(home) as reg:
        hook = reg.webhook("both")
        assert hook.cursor >= max(positions) and hook.claim_until == 0  # released
        assert reg.deliver_webhooks() == {"both": 0}


def test_a_claim_is_taken_only_to_send_and_a_held_one_stops_another_delivery(home: Path, artifact: Path,
                                                                             hooks_env: int) -> None:
    from eventstore.webhooks import ClaimDelivery, execute_webhook

    receiver = Receiver(hooks_env)
    try:
        with Registry.open(home) as reg:
            hook, _ = reg.create_webhook("held", f"http://127.0.0.1:{hooks_env}/", ["Tagged"])
            reg.register("quiet", str(artifact))  # not asked for: nothing to send, so no claim either
            head = reg.head()
            assert reg.deliver_webhooks() == {"held": 0} and reg.head() == head
            reg.tag("quiet@1", {"k": "v"})
            # Another live delivery (a process of another host) holds the claim for a minute.
            now = int(time.time() * 1000)
            execute_webhook(reg.recorder, ClaimDelivery(hook.webhook_id, "f" * 32, now + 60_000, now, "elsewhere:1"),
                            {"actor": "test"})
            assert reg.deliver_webhooks() == {"held": 0} and receiver.got == []
            # Its holder releases it: the next delivery sends.
            execute_webhook(reg.recorder, ClaimDelivery(hook.webhook_id, "f" * 32, 0, now, "elsewhere:1"),
                            {"actor": "test"})
            assert reg.deliver_webhooks() == {"held": 1}
            # A claim left by a process of this host that is gone is taken over at once.
            dead = subprocess.Popen(["true"])
            dead.wait()
            reg.tag("quiet@1", {"k": "w"})
            now = int(time.time() * 1000)
            execute_webhook(reg.recorder, ClaimDelivery(hook.webhook_id, "e" * 32, now + 60_000, now,
                                                        f"{socket.gethostname()}:{dead.pid}"), {"actor": "test"})
            assert reg.deliver_webhooks() == {"held": 1}
    finally:
        receiver.stop()
    assert len(receiver.got) == 2


def test_only_allowed_urls_and_known_events(home: Path, hooks_env: int, cli) -> None:
    with Registry.open(home) as reg:
        with pytest.raises(ValidationError, match="did not allow"):
            reg.create_webhook("evil", "http://169.254.169.254/latest", ["model_version.created"])
        with pytest.raises(ValidationError, match="unknown event"):
            reg.create_webhook("typo", f"http://127.0.0.1:{hooks_env}/", ["model_version.createdd"])
        assert reg.head() == 0  # nothing appended
    code, out, err = cli("webhook", "create", "ok", "--url", f"http://127.0.0.1:{hooks_env}/x",
                         "--event", "model_version_alias.created", "--json")
    assert code == 0 and json.loads(out)["secret"].startswith("whs_")
    code, out, _ = cli("webhook", "list", "--json")
    assert [w["name"] for w in json.loads(out)["webhooks"]] == ["ok"]


def _cursor(home: Path, name: str) -> int:
    with Registry.open(home) as reg:
        return reg.webhook(name).cursor


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([*mledger_command(), "worker", "--threads", "2", "--sweep-interval", "1"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.redis
def test_a_redis_worker_killed_mid_delivery_loses_none(home: Path, artifact: Path, hooks_env: int, redis_url: str,
                                                       tmp_path: Path) -> None:
    """Delivery through dramatiq on the real Redis and real `mledger worker` processes: the first worker is
    SIGKILLed mid-delivery, a second one takes over from the recorded cursor. The receiver gets every event,
    in order, signed; what it gets twice (sent after the last recorded cursor) has the same delivery id and
    body, which is what a receiver deduplicates on, so it processes each event once."""
    with Registry.open(home) as reg:  # no broker in this process: the worker's sweep sends the jobs
        hook, secret = reg.create_webhook("ci", f"http://127.0.0.1:{hooks_env}/hook",
                                          ["model_version.created", "model_version_tag.set"])
        _fifty_events(reg, artifact)
        wanted = [e.position for e in reg.log() if e.type in ("VersionRegistered", "Tagged")]
    assert len(wanted) == 50
    receiver = Receiver(hooks_env, delay=0.1)
    env = subprocess_env(home, MLEDGER_BROKER=redis_url, MLEDGER_WEBHOOK_KEY=KEY,
                         MLEDGER_WEBHOOK_URLS=os.environ["MLEDGER_WEBHOOK_URLS"])
    log = tmp_path / "worker.log"
    first = _start_worker(env, log)
    second = None
    try:
        wait_for(lambda: len(receiver.got) >= 15, 120, f"fifteen deliveries (worker log: {log})")
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        time.sleep(0.5)  # the request in flight at the kill finishes arriving (the receiver takes 0.1 s)
        at_kill = len(receiver.got)
        assert at_kill < 50, "the delivery finished before the kill: the test proved nothing"
        with Registry.open(home) as reg:
            recorded = reg.webhook("ci").cursor
        assert recorded > 0  # the cursor was recorded while it sent (at least once a second)
        receiver.delay = 0.0
        second = _start_worker(env, log)
        wait_for(lambda: {b["position"] for _, b in receiver.got} >= set(wanted), 120,
                 f"every event delivered (worker log: {log})")
        wait_for(lambda: _cursor(home, "ci") >= wanted[-1], 60, "the cursor at the end")
        time.sleep(2.5)  # two more sweeps: nothing is sent again once the cursor is at the end
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        receiver.stop()
    positions = [b["position"] for _, b in receiver.got]
    assert list(dict.fromkeys(positions)) == wanted  # every event, in log order (first arrivals)
    # One delivery at a time (the lease): each worker sent a strictly increasing run, the second one from the
    # cursor the first had recorded — nothing else came twice.
    before, after = positions[:at_kill], positions[at_kill:]
    assert before == sorted(set(before)) and after == sorted(set(after))
    assert after[0] == min(p for p in wanted if p > recorded) and after[-1] == wanted[-1]
    by_id: dict[str, str] = {}
    for headers, body in receiver.got:
        delivery, stamp = headers["x-mlflow-delivery-id"], headers["x-mlflow-timestamp"]
        assert delivery == f"{hook.webhook_id}-{body['position']}"
        assert headers["x-mlflow-signature"] == sign(secret, delivery, stamp, body["_raw"])
        first_body = by_id.setdefault(delivery, json.dumps(body["event"], sort_keys=True))
        assert first_body == json.dumps(body["event"], sort_keys=True)  # a re-send is the same event
    # What came twice was sent after the cursor recorded last before the kill: about a second's worth.
    again = [p for p in before if p > recorded]
    assert len(positions) - len(wanted) == len(again) <= 15


def test_the_subscription_index_follows_the_log(home: Path, hooks_env: int) -> None:
    """Listings read only the events since the previous listing (eventstore.webhooks.subscriptions): what
    other processes appended meanwhile is in the next listing, updates and deletions too."""
    from eventstore.webhooks import DeleteWebhook, UpdateWebhook

    url = f"http://127.0.0.1:{hooks_env}/in"
    with Registry.open(home) as reg:
        a, _ = reg.create_webhook("a", url, ["model_version.created"])
        assert [w.name for w in reg.webhooks()] == ["a"]
        b, _ = reg.create_webhook("b", url, ["Tagged"])
        reg.change_webhook(UpdateWebhook(a.webhook_id, status="DISABLED"))
        assert [(w.name, w.status) for w in reg.webhooks()] == [("a", "DISABLED"), ("b", "ACTIVE")]
        with Registry.open(home) as other:  # another writer of the same log
            other.create_webhook("c", url, ["Tagged"])
            other.change_webhook(DeleteWebhook(b.webhook_id))
        assert [w.name for w in reg.webhooks()] == ["a", "c"]
        assert reg.webhook("c").events == ("Tagged",)
        with pytest.raises(NotFoundError):
            reg.webhook("b")


def test_a_first_listing_reads_the_subscription_streams_not_the_log(home: Path, artifact: Path, hooks_env: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A process's first listing (each `mledger webhook` command is one) reads the subscriptions' own events
    through the streams' index, however long the log of models is."""
    with Registry.open(home) as reg:
        reg.create_webhook("a", f"http://127.0.0.1:{hooks_env}/", ["Tagged"])
        reg.register("m", str(artifact))
        for i in range(20):
            reg.tag("m", {"i": str(i)})
        reg.create_webhook("b", f"http://127.0.0.1:{hooks_env}/", ["Tagged"])
    with Registry.open(home) as reg:  # a new recorder: an empty index, as in a new process
        def whole_log(*args: object, **kwargs: object) -> None:
            raise AssertionError("a listing read the whole log")

        monkeypatch.setattr(reg.recorder, "read", whole_log)
        assert [w.name for w in reg.webhooks()] == ["a", "b"]


@pytest.mark.redis
def test_deliver_beside_redis_workers_takes_the_same_lease(home: Path, artifact: Path, hooks_env: int,
                                                           redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mledger webhook deliver` on a registry with a Redis broker: while a worker holds a subscription's
    lease it sends nothing (no event twice, none out of order); once the lease is free it delivers."""
    from workers.webhooks import lease

    with Registry.open(home) as reg:
        hook, _ = reg.create_webhook("ci", f"http://127.0.0.1:{hooks_env}/", ["model_version.created"])
        reg.register("churn", str(artifact))
    monkeypatch.setenv("MLEDGER_BROKER", redis_url)
    receiver = Receiver(hooks_env)
    try:
        with Registry.open(home) as reg:
            broker = reg.broker
            with lease(broker.client, broker.namespace, hook.webhook_id) as held:  # what a worker holds
                assert held is not None
                assert reg.deliver_webhooks() == {"ci": 0}
                assert receiver.got == []
            assert reg.deliver_webhooks() == {"ci": 1}
    finally:
        receiver.stop()
    assert [b["entity"] + "." + b["action"] for _, b in receiver.got] == ["model_version.created"]
