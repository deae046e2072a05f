"""Closed-loop commands (issue 12 item 4): ``ctx.command(..., expect_response=s)``, the events of
``bayou.commands``, the tracker's status table, its metrics.

- Pure rules, list in, list out: command ids, response topics, folding events in any order,
  time-outs, app timers, the tracker app run by the engine without Kafka.
- End to end on the embedded Kafka with a real ``bayou ingress`` and ``bayou worker``: an
  MQTT 5 device answers on the Response Topic with the Correlation Data, a 3.1.1 device by the
  topic convention, a silent device's command is delivered then times out, a persistent
  session's is delivered when its device comes back, an offline device's is never delivered;
  another agent reads each status from the tracker's table; the worker's metrics count each
  status; a malformed event is dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from agents import App, Context, Out
from agents.commands import command_id, expire, fold
from agents.runtime.command_tracker import tracker_app
from agents.runtime.config import WorkerConfig
from agents.runtime.engine import AppEngine, record
from agents.testing import run_app
from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import metric_value
from ingress.contract import COMMANDS_TOPIC
from ingress.contract.commands import (
    acknowledged_event,
    command_id_of_response,
    delivered_event,
    is_command_id,
    refused_event,
    response_topic,
)
from ingress.wire.packets5 import decode_publish5
from tests.conftest import Proc, ingress_on, kafka_in
from tests.helpers import Mqtt, wait_until
from tests.mqtt5_client import Mqtt5, Raw5

# -- pure rules ------------------------------------------------------------------------------


def test_command_ids_are_deterministic_and_responses_are_recognised() -> None:
    a = command_id("app.agent", "bayou.telemetry/0/7")
    assert a == command_id("app.agent", "bayou.telemetry/0/7") and is_command_id(a)
    assert a != command_id("app.agent", "bayou.telemetry/0/8")
    assert a != command_id("other.agent", "bayou.telemetry/0/7")
    topic = response_topic("devices/d1/commands", a)
    assert topic == f"devices/d1/commands/response/{a}"
    assert command_id_of_response(topic) == a
    for not_one in (
        "devices/d1/commands/response",  # no id
        f"devices/d1/commands/reply/{a}",  # not the response level
        "devices/d1/commands/response/cmd-xyz",  # not an id
        f"devices/d1/commands/response/{a}/more",  # the id is not the last level
        f"devices/response/{a}x",
    ):
        assert command_id_of_response(not_one) is None, not_one


SENT = {"status": "sent", "app": "a", "agent": "g", "topic": "t", "device": "d",
        "sent_at_ms": 1_000, "deadline_ms": 6_000}  # fmt: skip


def _fold_all(events: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    entry: dict[str, Any] | None = None
    reached: list[str] = []
    for e in events:
        entry, got = fold(entry, e)
        reached += got
    assert entry is not None
    return entry, reached


def test_events_fold_into_a_status_in_any_order() -> None:
    delivered = json.loads(delivered_event("dev", 2_000))
    acked = json.loads(acknowledged_event("dev", 3_000, b'{"ok":true}'))
    entry, reached = _fold_all([SENT, delivered, acked])
    assert entry["status"] == "acknowledged" and reached == ["sent", "delivered", "acknowledged"]
    assert entry["response"] == '{"ok":true}' and entry["client_id"] == "dev"
    assert (entry["delivered_at_ms"], entry["acknowledged_at_ms"]) == (2_000, 3_000)
    # The device's events may be read before the worker's "sent": same entry, same counts.
    other, reached2 = _fold_all([delivered, acked, SENT])
    assert other == entry and sorted(reached2) == sorted(reached)
    # A second response and a repeated "sent" change nothing.
    again, more = _fold_all([SENT, delivered, acked, acked, {**SENT, "sent_at_ms": 9}])
    assert again == entry and more == reached
    with pytest.raises(ValueError, match="unknown"):
        fold(None, {"status": "lost"})


def test_a_refusal_is_final_at_once_and_an_answer_still_wins() -> None:
    refused = json.loads(refused_event("dev", 2_000, 0x87))
    entry, reached = _fold_all([SENT, refused])
    assert entry["status"] == "refused" and reached == ["sent", "refused"]
    assert (entry["refused_at_ms"], entry["reason_code"]) == (2_000, 0x87)
    assert entry["client_id"] == "dev"
    assert expire(entry, 10**12) is None  # final: never times out
    # Read before "sent", the same; a "delivered" (a resend taken later) moves nothing back.
    other, reached2 = _fold_all([refused, SENT, json.loads(delivered_event("dev", 2_500))])
    assert other["status"] == "refused" and sorted(reached2) == ["delivered", "refused", "sent"]
    # After a timeout the refusal changes nothing.
    timed_out = (expire(fold(None, SENT)[0], 7_000) or ({}, []))[0]
    assert fold(timed_out, refused)[0]["status"] == "timed_out"
    # The device answered after all: acknowledged.
    answered, r = fold(entry, json.loads(acknowledged_event("dev", 3_000, b"ok")))
    assert answered["status"] == "acknowledged" and r == ["acknowledged"]


def test_a_command_times_out_after_its_deadline_unless_answered_in_time() -> None:
    entry, _ = fold(None, SENT)
    assert expire(entry, 6_000) is None  # at the deadline: not yet
    timed_out, reached = expire(entry, 6_001) or ({}, [])
    assert timed_out["status"] == "timed_out" and reached == ["timed_out"]
    assert expire(timed_out, 99_000) is None  # final
    # A response the ingress stamped before the deadline, read after the time-out, wins.
    on_time, r1 = fold(timed_out, json.loads(acknowledged_event("d", 5_999, b"x")))
    assert on_time["status"] == "acknowledged" and r1 == ["acknowledged"]
    assert "timed_out_at_ms" not in on_time
    # One stamped after it is only noted.
    late, r2 = fold(timed_out, json.loads(acknowledged_event("d", 7_000, b"x")))
    assert late["status"] == "timed_out" and late["late_response_at_ms"] == 7_000 and r2 == []
    # Without its "sent" event the deadline is unknown: no time-out.
    assert expire(fold(None, json.loads(delivered_event("d", 1)))[0], 10**12) is None
    big = json.loads(acknowledged_event("d", 1, b"x" * 5000))
    assert "response" not in big and big["response_bytes"] == 5000
    assert "response" not in json.loads(acknowledged_event("d", 1, b"\xff"))


def test_ctx_command_with_expect_response_sets_the_response_topic_and_id() -> None:
    app = App("cl")

    @app.agent("sensors/{device}/telemetry")
    async def on(_r: Any, ctx: Context) -> None:
        ctx.command(f"devices/{ctx.key}/commands", {"command": "cool"}, expect_response=5)
        ctx.command(f"devices/{ctx.key}/commands", b"raw", expect_response=2.5)
        ctx.command(f"devices/{ctx.key}/commands", {"command": "plain"})

    tracked, raw, plain = run_app(app, [("sensors/d1/telemetry", {})])
    cid = tracked.command_id
    assert is_command_id(cid) and tracked.expect_response == 5 and tracked.qos == 1
    assert tracked.json() == {"command": "cool", "command_id": cid}
    props = dict(tracked.properties)
    assert props["mqtt.response_topic"] == f"devices/d1/commands/response/{cid}".encode()
    assert props["mqtt.correlation_data"] == cid.encode()
    assert raw.payload == b"raw" and is_command_id(raw.command_id) and raw.command_id != cid
    assert plain.command_id == "" and plain.expect_response is None and not plain.properties
    # The same input gives the same ids (a worker restarting sends the same commands).
    assert run_app(app, [("sensors/d1/telemetry", {})])[0].command_id == cid


@pytest.mark.parametrize(
    "kwargs",
    [{"expect_response": 0}, {"expect_response": math.inf}, {"expect_response": "5"},
     {"expect_response": 5, "response_topic": "x"},
     {"expect_response": 5, "correlation_data": b"x"}],
)  # fmt: skip
def test_bad_expect_response_dead_letters_the_record(kwargs: dict[str, Any]) -> None:
    app = App("bad")

    @app.agent("sensors/{device}/telemetry")
    async def on(_r: Any, ctx: Context) -> None:
        ctx.command("devices/d/commands", {}, **kwargs)

    (dead,) = run_app(app, [("sensors/d1/telemetry", {})])
    assert dead.kind == "deadletter" and "ValueError" in dead.reason


def test_app_timers_run_on_the_wall_clock_and_a_failing_one_is_dead_lettered() -> None:
    app = App("timers")
    seen: list[float] = []

    @app.agent("x/#")
    async def on(_r: Any, ctx: Context) -> None:
        pass

    @app.timer(10)
    def tick(now: float, out: Out) -> None:
        seen.append(now)
        out.publish("ticks", {"now": now})

    @app.timer(10)
    def broken(now: float, out: Out) -> None:
        raise RuntimeError("boom")

    engine = AppEngine(app, lambda _a: "t")

    async def go() -> list[Any]:
        out = []
        for now in (100.0, 105.0, 110.0, 111.0):
            out += await engine.advance(now)
        return out

    out = asyncio.run(go())
    assert seen == [100.0, 110.0]  # every 10 s, not every loop
    kinds = [(o.kind, o.topic) for o in out]
    assert kinds == [("mqtt", "ticks"), ("deadletter", ""), ("mqtt", "ticks"), ("deadletter", "")]
    assert "broken raised RuntimeError: boom" in out[1].reason
    # run_app runs a timer once, at advance_to.
    seen.clear()
    run_app(app, [], advance_to=50.0)
    assert seen == [50.0]


def _tracker_run(events: list[tuple[str, bytes]], now: float) -> dict[str, Any]:
    """The tracker's table after ``events`` ((command id, event) of bayou.commands) and a
    check at ``now``, by the engine a worker runs."""
    app = tracker_app(WorkerConfig(kafka_bootstrap="unused:0"))
    engine = AppEngine(app, lambda _a: COMMANDS_TOPIC)
    recs = [record(COMMANDS_TOPIC, 0, i, k.encode(), v) for i, (k, v) in enumerate(events)]

    async def go() -> list[Any]:
        out = await engine.process(recs, None)
        return out + await engine.advance(now)

    out = asyncio.run(go())
    table = app.parts[("t", "status")]
    entries = dict(table.scan())  # type: ignore[attr-defined]
    entries["_out"] = out
    return entries


def test_the_tracker_keeps_a_status_per_command_and_dead_letters_bad_events() -> None:
    a, b, c = (command_id("x.y", str(i)) for i in range(3))
    sent = json.dumps(SENT).encode()
    table = _tracker_run(
        [
            (a, sent), (a, delivered_event("d", 2_000)),
            (a, acknowledged_event("d", 3_000, b"ok")),
            (b, sent), (b, delivered_event("d", 2_000)),
            (c, sent),
            (c, b"not json"), (c, b'{"status": "exploded"}'),
        ],
        now=7.0,
    )  # fmt: skip
    assert table[a]["status"] == "acknowledged" and table[a]["response"] == "ok"
    assert table[b]["status"] == "timed_out" and table[b]["delivered_at_ms"] == 2_000
    assert table[c]["status"] == "timed_out" and "delivered_at_ms" not in table[c]
    dead = table["_out"]
    assert [o.kind for o in dead] == ["deadletter", "deadletter"]
    assert "not JSON" in dead[0].reason and "known status" in dead[1].reason
    assert all(o.agent == "bayou-commands.events" for o in dead)
    # Final entries are forgotten after the retention (a day by default).
    later = _tracker_run([(a, sent), (a, acknowledged_event("d", 3_000, b""))], now=90_000.0)
    assert a not in later


def test_a_deleted_keys_partition_is_forgotten_once_its_delete_is_written() -> None:
    """The tracker deletes every command after its retention: the app's key → partition map
    must shrink with it (it grew by one entry per command before)."""
    app = App("forgets")
    status, other = app.table("status"), app.table("other")
    app._current_partition = 3
    for i in range(50):
        status.put(f"k{i}", i)
    other.put("k0", "kept elsewhere")
    status.changes(), other.changes()
    app._current_partition = None  # a timer's deletes: no record being processed
    for i in range(50):
        status.delete(f"k{i}")
    # The deletes still go to each key's partition's changelog, then the map forgets them,
    # except a key another table still holds.
    assert status.changes() == {3: {f"k{i}": None for i in range(50)}}
    assert app._key_partition == {"k0": 3}


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    """A broker of this module's own (overrides the session's): every worker on one Kafka
    shares the tracker's consumer group, so a session worker would take some of the
    bayou.commands partitions and count their commands where these tests do not look."""
    yield from kafka_in(tmp_path_factory, "kafka-commands")


@pytest.fixture(scope="module")
def ingress(kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """An ingress node on this module's broker."""
    yield from ingress_on(kafka, tmp_path_factory, "ingress-commands")


@pytest.fixture
def loop_worker(agents_worker: Callable[[str], Proc]) -> Proc:
    return agents_worker("tests.agent_examples.closed_loop")


def _issue(pub: Mqtt, listener: Mqtt, device: str, timeout: float) -> str:
    """Make the app send ``device`` a command (a hot reading); its id."""
    pub.publish(f"sensors/{device}/telemetry", json.dumps({"temperature": 35, "timeout": timeout}))
    got = listener.expect(lambda m: m.topic == f"issued/{device}", timeout=40)
    cid: str = json.loads(got.payload)["command_id"]
    return cid


def _status(asker: Mqtt, cid: str, want: str, timeout: float = 30) -> dict[str, Any]:
    """Ask the app's ``ask`` agent (which reads the tracker's table) until the command's
    status is ``want``."""
    last: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal last
        asker.publish(f"ask/{cid}", b"?")
        last = json.loads(asker.expect(lambda m: m.topic == f"answers/{cid}", timeout=10).payload)
        return last.get("status") == want

    try:
        wait_until(reached, timeout, f"command {cid} {want}")
    except TimeoutError:
        pytest.fail(f"command {cid}: status {last!r}, expected {want}")
    return last


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_commands_are_tracked_from_sent_to_acknowledged_or_timed_out(
    ingress: Proc, loop_worker: Proc
) -> None:
    run = uuid.uuid4().hex[:6]
    v5_dev, v3_dev, silent, offline = (f"{k}-{run}" for k in ("v5", "v3", "silent", "off"))
    clients: list[Any] = []
    try:
        app_side = Mqtt(ingress.mqtt_port, f"app-{run}").connect()
        clients.append(app_side)
        app_side.subscribe("issued/#")
        app_side.subscribe("answers/#")

        # An MQTT 5 device answers on the Response Topic with the Correlation Data.
        dev5 = Mqtt5(ingress.mqtt_port, v5_dev)
        clients.append(dev5)
        dev5.connect()
        assert dev5.subscribe(f"devices/{v5_dev}/commands") == [1]
        cid5 = _issue(app_side, app_side, v5_dev, 30)
        cmd = dev5.expect(timeout=30)
        assert cmd.response_topic == f"devices/{v5_dev}/commands/response/{cid5}"
        assert cmd.correlation_data == cid5.encode()
        assert json.loads(cmd.payload) == {"command": "cool", "command_id": cid5}
        _status(app_side, cid5, "delivered")
        dev5.publish(cmd.response_topic, b'{"done":true}',
                     CorrelationData=cmd.correlation_data).wait_for_publish(10)  # fmt: skip
        st = _status(app_side, cid5, "acknowledged")
        assert st["client_id"] == v5_dev and st["response"] == '{"done":true}'
        assert st["app"] == "closed_loop" and st["device"] == v5_dev
        assert st["sent_at_ms"] <= st["delivered_at_ms"] <= st["acknowledged_at_ms"]

        # A 3.1.1 device finds the id in the payload and answers by the topic convention.
        dev3 = Mqtt(ingress.mqtt_port, v3_dev).connect()
        clients.append(dev3)
        dev3.subscribe(f"devices/{v3_dev}/commands")
        cid3 = _issue(app_side, app_side, v3_dev, 30)
        got = json.loads(dev3.expect(timeout=30).payload)
        assert got["command_id"] == cid3
        dev3.publish(f"devices/{v3_dev}/commands/response/{got['command_id']}", b"ok")
        assert _status(app_side, cid3, "acknowledged")["response"] == "ok"

        # A device that takes the command (PUBACK) and never answers: delivered, then timed out.
        quiet = Mqtt(ingress.mqtt_port, silent).connect()
        clients.append(quiet)
        quiet.subscribe(f"devices/{silent}/commands")
        cid_s = _issue(app_side, app_side, silent, 3)
        quiet.expect(timeout=30)
        st = _status(app_side, cid_s, "timed_out")
        assert "delivered_at_ms" in st and st["timed_out_at_ms"] > st["deadline_ms"]

        # A persistent session whose device is away: the command waits in Kafka ("sent") and
        # is delivered when the device comes back and its session catches up.
        away = f"away-{run}"
        first = Mqtt(ingress.mqtt_port, away, clean_session=False).connect()
        first.subscribe(f"devices/{away}/commands")
        first.close()
        cid_a = _issue(app_side, app_side, away, 60)
        assert "delivered_at_ms" not in _status(app_side, cid_a, "sent")
        back = Mqtt(ingress.mqtt_port, away, clean_session=False).connect()
        clients.append(back)
        assert json.loads(back.expect(timeout=30).payload)["command_id"] == cid_a
        assert _status(app_side, cid_a, "delivered")["client_id"] == away

        # An MQTT 5 device refuses the PUBLISH (PUBACK 0x87): refused at once, never delivered.
        refuser = f"refuse-{run}"
        raw = Raw5(ingress.mqtt_port, refuser)
        clients.append(raw)
        raw.subscribe(f"devices/{refuser}/commands", 0x01)
        cid_r = _issue(app_side, app_side, refuser, 60)
        pkt = raw.read(30)
        pub = decode_publish5(pkt.flags, pkt.body)
        assert pub.properties is not None and pub.properties.correlation_data == cid_r.encode()
        raw.send(b"\x40\x03" + pub.packet_id.to_bytes(2, "big") + b"\x87")
        st = _status(app_side, cid_r, "refused")
        assert (st["reason_code"], st["client_id"]) == (0x87, refuser)
        assert "delivered_at_ms" not in st

        # Nobody subscribed: never delivered, timed out.
        cid_o = _issue(app_side, app_side, offline, 2)
        st = _status(app_side, cid_o, "timed_out")
        assert "delivered_at_ms" not in st

        # The worker counted each status for the app that sent the commands.
        def count(status: str) -> float:
            labels = {"app": "closed_loop", "status": status}
            return metric_value(loop_worker.metrics_port, "bayou_agent_commands_total",
                                labels) or 0.0  # fmt: skip

        assert count("sent") >= 5 and count("delivered") >= 4
        assert count("acknowledged") >= 2 and count("timed_out") >= 2 and count("refused") >= 1
        for kind, least in (("acknowledged", 2), ("refused", 1)):
            got_ingress = metric_value(ingress.metrics_port, "bayou_ingress_command_events_total",
                                       {"kind": kind})  # fmt: skip
            assert (got_ingress or 0) >= least, kind
    finally:
        for c in clients:
            c.close()


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_malformed_command_event_is_dead_lettered_and_tracking_goes_on(
    kafka: EmbeddedKafka, ingress: Proc, loop_worker: Proc
) -> None:
    labels = {"app": "bayou-commands", "agent": "events", "reason": "agent_error"}
    before = metric_value(loop_worker.metrics_port, "bayou_agent_dead_letters_total", labels) or 0
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    p.produce(COMMANDS_TOPIC, b"not json", key=command_id("x.y", uuid.uuid4().hex))
    assert p.flush(10) == 0
    wait_until(
        lambda: (metric_value(loop_worker.metrics_port, "bayou_agent_dead_letters_total", labels)
                 or 0) > before,
        30, "the malformed event dead-lettered",
    )  # fmt: skip
    run = uuid.uuid4().hex[:6]
    app_side = Mqtt(ingress.mqtt_port, f"app2-{run}").connect()
    try:
        app_side.subscribe("issued/#")
        app_side.subscribe("answers/#")
        cid = _issue(app_side, app_side, f"gone-{run}", 1)
        _status(app_side, cid, "timed_out")
    finally:
        app_side.close()
