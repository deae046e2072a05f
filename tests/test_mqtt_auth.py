"""Authentication and authorisation end to end: a real `bayou ingress` with a password file
made by `bayou passwd`, JWTs, and an ACL file; real MQTT clients over real sockets.

CONNACK return codes are read off raw sockets (tests/raw_mqtt.py), so no client library hides
what the broker answered.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest

from bayou.embedded import EmbeddedKafka
from bayou.metrics_scrape import scrape
from bayou.net import free_port
from bayou.processes import stop_process
from ingress.wire import codec
from tests.conftest import BAYOU, Proc, bayou_env, start_ingress
from tests.helpers import Mqtt
from tests.pki import CA, write_pem
from tests.raw_mqtt import RawClient, connect_packet, subscribe_packet

pytestmark = pytest.mark.integration

SECRET = "test-secret-of-at-least-32-bytes-for-hs256"
USERS = {"dev1": "dev1-pw", "dev2": "dev2-pw", "alice": "alice-pw"}

ACL = """
default = "deny"

[[rules]]
permission = "allow"
action = "publish"
topics = ["sensors/%u/telemetry"]
everyone = true

[[rules]]
permission = "allow"
action = "subscribe"
topics = ["devices/%u/commands"]
everyone = true

[[rules]]
permission = "deny"
action = "subscribe"
topics = ["secret/#"]
group = "ops"

[[rules]]
permission = "allow"
action = "all"
topics = ["#"]
group = "ops"

[[rules]]
permission = "allow"
action = "subscribe"
topics = ["sensors/+/telemetry"]
user = "alice"
"""


def token(sub: str, groups: list[str], *, exp_in: float = 600, aud: str = "bayou") -> str:
    now = int(time.time())
    claims = {"sub": sub, "groups": groups, "aud": aud, "iat": now, "exp": now + int(exp_in)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def passwd_add(path: Path, user: str, password: str) -> None:
    subprocess.run(
        [*BAYOU, "passwd", "add", str(path), user, "--password-stdin"],
        input=password.encode(), env=bayou_env(), check=True, capture_output=True,
    )  # fmt: skip


def write_security_files(d: Path, acl: str = ACL) -> dict[str, str]:
    pw = d / "passwd"
    if not pw.exists():
        for user, password in USERS.items():
            passwd_add(pw, user, password)
    acl_path = d / "acl.toml"
    acl_path.write_text(acl)
    return {
        "BAYOU_ALLOW_ANONYMOUS": "false",
        "BAYOU_AUTH_PASSWORD_FILE": str(pw),
        "BAYOU_AUTH_JWT_SECRET": SECRET,
        "BAYOU_AUTH_JWT_ALGORITHMS": "HS256",
        "BAYOU_AUTH_JWT_AUDIENCE": "bayou",
        "BAYOU_ACL_FILE": str(acl_path),
    }


@pytest.fixture(scope="module")
def secured(kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    d = tmp_path_factory.mktemp("auth")
    env = write_security_files(d)
    p = start_ingress(
        kafka.bootstrap, d / "ingress.log", **env,
        BAYOU_MAX_SUBSCRIPTIONS_PER_CLIENT="3", BAYOU_MAX_PAYLOAD_SIZE="1000",
    )  # fmt: skip
    yield p
    stop_process(p.proc)


@pytest.fixture
def raw() -> Iterator[Callable[[int], RawClient]]:
    """Raw MQTT clients, each closed after the test."""
    made: list[RawClient] = []

    def make(port: int) -> RawClient:
        made.append(RawClient(port))
        return made[-1]

    yield make
    for c in made:
        c.close()


def counter(p: Proc, name: str, label: str, value: str) -> float:
    samples = scrape(p.metrics_port)
    assert samples is not None
    return samples.value(name, {label: value}) or 0.0


def ops(port: int, name: str = "") -> Mqtt:
    """A client of the ops group, authenticated with a JWT."""
    cid = name or f"ops-{uuid.uuid4().hex[:6]}"
    # MQTT 3.1.1 has no password without a username [MQTT-3.1.2-22]: the JWT's subject.
    return Mqtt(port, cid, username="opsbot", password=token("opsbot", ["ops"])).connect()


# Authentication --------------------------------------------------------------------------------


def test_no_credentials_refused_with_5(secured: Proc, raw: Callable[[int], RawClient]) -> None:
    before = counter(secured, "bayou_auth_failures_total", "reason", "no_credentials")
    c = raw(secured.mqtt_port)
    assert c.connect("anon-1") == 5
    assert c.closed()
    after = counter(secured, "bayou_auth_failures_total", "reason", "no_credentials")
    assert after == before + 1


@pytest.mark.parametrize(
    ("username", "password"), [("dev1", b"wrong"), ("nobody", b"dev1-pw"), ("dev1", b"")]
)
def test_wrong_credentials_refused_with_4(
    secured: Proc, raw: Callable[[int], RawClient], username: str, password: bytes
) -> None:
    before = counter(secured, "bayou_auth_failures_total", "reason", "bad_credentials")
    c = raw(secured.mqtt_port)
    # The same answer whether the user is unknown or the password wrong: no hint which.
    assert c.connect("c-bad", username=username, password=password) == 4
    assert c.closed()
    assert counter(secured, "bayou_auth_failures_total", "reason", "bad_credentials") == before + 1


def test_password_file_user_connects(secured: Proc, raw: Callable[[int], RawClient]) -> None:
    c = raw(secured.mqtt_port)
    assert c.connect("dev1", username="dev1", password=b"dev1-pw") == 0
    c.close()


def test_jwt_connects_and_expired_or_wrong_audience_is_refused(
    secured: Proc, raw: Callable[[int], RawClient]
) -> None:
    c = raw(secured.mqtt_port)
    assert c.connect("jwt-ok", username="opsbot", password=token("opsbot", ["ops"]).encode()) == 0
    c.close()
    before = counter(secured, "bayou_auth_failures_total", "reason", "expired_token")
    c = raw(secured.mqtt_port)
    assert (
        c.connect(
            "jwt-old", username="opsbot", password=token("opsbot", ["ops"], exp_in=-3600).encode()
        )
        == 4
    )
    assert counter(secured, "bayou_auth_failures_total", "reason", "expired_token") == before + 1
    c = raw(secured.mqtt_port)
    assert (
        c.connect("jwt-aud", username="opsbot", password=token("opsbot", [], aud="other").encode())
        == 4
    )


def test_failed_connect_publishes_no_will(secured: Proc, raw: Callable[[int], RawClient]) -> None:
    watch = ops(secured.mqtt_port)
    try:
        watch.subscribe("sensors/dev1/telemetry", 1)
        c = raw(secured.mqtt_port)
        will = ("sensors/dev1/telemetry", b"never", 1)
        assert c.connect("dev1-w", username="dev1", password=b"bad", will=will) == 4
        c.close()
        with pytest.raises(TimeoutError):
            watch.expect(lambda m: m.payload == b"never", timeout=2)
    finally:
        watch.close()


# Authorisation ---------------------------------------------------------------------------------


def test_denied_publish_is_acknowledged_counted_and_not_delivered(secured: Proc) -> None:
    watch = ops(secured.mqtt_port)
    dev = Mqtt(secured.mqtt_port, "dev1", username="dev1", password="dev1-pw").connect()
    try:
        watch.subscribe("sensors/#", 1)
        before = counter(secured, "bayou_acl_denied_total", "action", "publish")
        # dev1 may publish only its own telemetry; the forged one still gets its PUBACK.
        forged = dev.publish("sensors/dev2/telemetry", b"forged", qos=1)
        forged.wait_for_publish(10)
        assert forged.is_published()
        dev.publish("sensors/dev1/telemetry", b"mine", qos=1).wait_for_publish(10)
        got = watch.expect(lambda m: m.payload in (b"mine", b"forged"))
        assert (got.topic, got.payload) == ("sensors/dev1/telemetry", b"mine")
        assert counter(secured, "bayou_acl_denied_total", "action", "publish") == before + 1
    finally:
        dev.close()
        watch.close()


def test_denied_subscribe_gets_0x80_for_that_filter(
    secured: Proc, raw: Callable[[int], RawClient]
) -> None:
    c = raw(secured.mqtt_port)
    assert c.connect("dev2", username="dev2", password=b"dev2-pw") == 0
    c.send(subscribe_packet(7, [("devices/dev2/commands", 1), ("devices/dev1/commands", 1)]))
    suback = c.read()
    assert suback is not None and suback.type == codec.SUBACK
    assert suback.body == b"\x00\x07\x01\x80"
    c.close()


def test_receive_rules_apply_to_live_and_retained_messages(secured: Proc) -> None:
    pub = ops(secured.mqtt_port)
    watch = ops(secured.mqtt_port)
    tag = uuid.uuid4().hex[:6]
    try:
        # `deny subscribe secret/#` before `allow all #`: ops may subscribe to `#`...
        assert [int(getattr(x, "value", x)) for x in watch.subscribe("#", 1)] == [1]
        pub.publish(f"secret/{tag}", b"s", qos=1).wait_for_publish(10)
        pub.publish(f"public/{tag}", b"p", qos=1).wait_for_publish(10)
        # ...but never receives under secret/.
        got = watch.expect(lambda m: m.topic.endswith(tag))
        assert got.topic == f"public/{tag}"
        pub.publish(f"secret/r{tag}", b"rs", qos=1).wait_for_publish(10)
        pub.client.publish(f"secret/r{tag}", b"rs", qos=1, retain=True).wait_for_publish(10)
        pub.client.publish(f"public/r{tag}", b"rp", qos=1, retain=True).wait_for_publish(10)
    finally:
        pub.close()
        watch.close()
    late = ops(secured.mqtt_port)
    try:
        late.subscribe(f"+/r{tag}", 1)
        got = late.expect(lambda m: m.retain)
        assert got.topic == f"public/r{tag}"
        with pytest.raises(TimeoutError):
            late.expect(lambda m: m.topic == f"secret/r{tag}", timeout=2)
    finally:
        late.close()


def test_will_the_acl_denies_refuses_the_connect(
    secured: Proc, raw: Callable[[int], RawClient]
) -> None:
    before = counter(secured, "bayou_acl_denied_total", "action", "will")
    c = raw(secured.mqtt_port)
    will = ("status/dev1", b"offline", 1)
    assert c.connect("dev1-will", username="dev1", password=b"dev1-pw", will=will) == 5
    assert counter(secured, "bayou_acl_denied_total", "action", "will") == before + 1
    c = raw(secured.mqtt_port)
    ok = ("sensors/dev1/telemetry", b"offline", 1)
    assert c.connect("dev1-will", username="dev1", password=b"dev1-pw", will=ok) == 0
    c.send(b"\xe0\x00")  # DISCONNECT: no will
    c.close()


# Per-client limits -----------------------------------------------------------------------------


def test_subscriptions_beyond_the_limit_get_0x80(
    secured: Proc, raw: Callable[[int], RawClient]
) -> None:
    before = counter(secured, "bayou_limit_refusals_total", "limit", "max_subscriptions")
    c = raw(secured.mqtt_port)
    assert c.connect("ops-subs", username="opsbot", password=token("opsbot", ["ops"]).encode()) == 0
    c.send(subscribe_packet(1, [("a/1", 0), ("a/2", 0), ("a/3", 0), ("a/4", 0), ("a/1", 1)]))
    suback = c.read()
    assert suback is not None
    # Three allowed; the fourth refused; re-subscribing to one it has is not a new one.
    assert suback.body == b"\x00\x01\x00\x00\x00\x80\x01"
    after = counter(secured, "bayou_limit_refusals_total", "limit", "max_subscriptions")
    assert after == before + 1
    c.close()


def test_payload_over_the_limit_closes_the_client(
    secured: Proc, raw: Callable[[int], RawClient]
) -> None:
    before = counter(secured, "bayou_limit_refusals_total", "limit", "max_payload")
    c = raw(secured.mqtt_port)
    assert c.connect("ops-big", username="opsbot", password=token("opsbot", ["ops"]).encode()) == 0
    c.send(codec.encode_publish("big/x", b"x" * 1001, 1, 1))
    assert c.closed()
    assert counter(secured, "bayou_limit_refusals_total", "limit", "max_payload") == before + 1


def test_publish_rate_limit_slows_a_client_down_and_loses_nothing(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    p = start_ingress(
        kafka.bootstrap, tmp_path / "ingress.log",
        BAYOU_PUBLISH_RATE_PER_CLIENT="50", BAYOU_PUBLISH_BURST_PER_CLIENT="5",
    )  # fmt: skip
    tag = uuid.uuid4().hex[:6]
    sub = Mqtt(p.mqtt_port, f"s-{tag}").connect()
    pub = Mqtt(p.mqtt_port, f"p-{tag}").connect()
    try:
        sub.subscribe(f"rate/{tag}", 1)
        infos = [pub.publish(f"rate/{tag}", str(i).encode(), qos=1) for i in range(100)]
        for info in infos:
            info.wait_for_publish(30)
        got = {sub.expect(timeout=30).payload for _ in range(100)}
        assert got == {str(i).encode() for i in range(100)}
        assert counter(p, "bayou_limit_refusals_total", "limit", "publish_rate") >= 1
    finally:
        pub.close()
        sub.close()
        stop_process(p.proc)


# Delivery-time checks and configuration --------------------------------------------------------


def test_catch_up_applies_the_acl_in_force_at_delivery(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    """A persistent session resumed under a stricter ACL gets only what that ACL allows."""
    env = write_security_files(tmp_path)
    first = start_ingress(kafka.bootstrap, tmp_path / "a.log", **env)
    dash = Mqtt(first.mqtt_port, "alice-dash", False, username="alice", password="alice-pw")
    dash.connect()
    dash.subscribe("sensors/+/telemetry", 1)
    dash.close()
    for dev in ("dev1", "dev2"):
        c = Mqtt(first.mqtt_port, dev, username=dev, password=USERS[dev]).connect()
        c.publish(f"sensors/{dev}/telemetry", f"while-away-{dev}".encode(), qos=1).wait_for_publish(
            10
        )
        c.close()
    stop_process(first.proc)
    stricter = ACL.replace(
        '[[rules]]\npermission = "allow"\naction = "subscribe"\ntopics = ["sensors/+/telemetry"]',
        '[[rules]]\npermission = "deny"\naction = "subscribe"\ntopics = ["sensors/dev1/#"]\n'
        'user = "alice"\n\n[[rules]]\npermission = "allow"\naction = "subscribe"\n'
        'topics = ["sensors/+/telemetry"]',
    )
    assert stricter != ACL
    env = write_security_files(tmp_path, stricter)
    second = start_ingress(kafka.bootstrap, tmp_path / "b.log", **env)
    dash = Mqtt(second.mqtt_port, "alice-dash", False, username="alice", password="alice-pw")
    try:
        dash.connect()
        got = dash.expect(lambda m: m.payload.startswith(b"while-away"))
        assert got.payload == b"while-away-dev2"
        with pytest.raises(TimeoutError):
            dash.expect(lambda m: m.payload == b"while-away-dev1", timeout=3)
    finally:
        dash.close()
        stop_process(second.proc)


def _run_ingress(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BAYOU, "ingress"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_ingress_without_authentication_or_anonymous_refuses_to_start(tmp_path: Path) -> None:
    env = bayou_env(BAYOU_KAFKA_BOOTSTRAP="127.0.0.1:1")
    del env["BAYOU_ALLOW_ANONYMOUS"]
    done = _run_ingress(env, tmp_path)
    assert done.returncode == 2
    assert "BAYOU_ALLOW_ANONYMOUS" in done.stderr and "no authentication method" in done.stderr


def test_bad_acl_file_names_the_file_and_line(tmp_path: Path) -> None:
    acl = tmp_path / "acl.toml"
    acl.write_text('[[rules]]\npermission = "allow"\naction = "read"\ntopics = ["#"]\n'
                   "everyone = true\n")  # fmt: skip
    env = bayou_env(BAYOU_KAFKA_BOOTSTRAP="127.0.0.1:1", BAYOU_ACL_FILE=str(acl))
    done = _run_ingress(env, tmp_path)
    assert done.returncode == 2
    assert f"BAYOU_ACL_FILE={acl}" in done.stderr and "line 3: rule 1" in done.stderr


def test_routes_into_agent_only_topics_are_refused(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[inbound]]\nname = "sneaky"\nmqtt = "x/#"\nkafka_topic = "bayou.outbound"\n'
    )
    env = bayou_env(BAYOU_KAFKA_BOOTSTRAP="127.0.0.1:1", BAYOU_ROUTES_FILE=str(routes))
    done = _run_ingress(env, tmp_path)
    assert done.returncode == 2
    assert "sneaky" in done.stderr and "bayou.outbound" in done.stderr


def test_username_as_client_id_stops_one_user_taking_over_anothers_session(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    env = write_security_files(tmp_path)
    p = start_ingress(
        kafka.bootstrap, tmp_path / "ingress.log", **env, BAYOU_USERNAME_AS_CLIENT_ID="true"
    )
    try:
        victim = Mqtt(p.mqtt_port, "shared-id", username="dev1", password="dev1-pw").connect()
        # dev2 claims dev1's client id: it gets its own session (its username), nobody is
        # taken over, and %c in the ACL is dev2's username.
        other = Mqtt(p.mqtt_port, "shared-id", username="dev2", password="dev2-pw").connect()
        # A SUBSCRIBE round trip after dev2's CONNACK: a takeover would have closed it.
        granted = victim.subscribe("devices/dev1/commands", 1)
        assert [int(getattr(g, "value", g)) for g in granted] == [1]
        assert victim.client.is_connected() and other.client.is_connected()
        samples = scrape(p.metrics_port)
        assert samples is not None
        assert (samples.value("bayou_ingress_takeovers_total") or 0) == 0
        victim.close()
        other.close()
    finally:
        stop_process(p.proc)


def test_client_ca_without_a_tls_listener_is_a_bad_setting(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("unused")
    env = bayou_env(BAYOU_KAFKA_BOOTSTRAP="127.0.0.1:1", BAYOU_TLS_CAFILE=str(ca))
    done = _run_ingress(env, tmp_path)
    assert done.returncode == 2
    assert "BAYOU_TLS_CAFILE" in done.stderr and "BAYOU_TLS_PORT" in done.stderr


def test_tls_client_certificate_names_the_client_for_the_acl(
    kafka: EmbeddedKafka, tmp_path: Path
) -> None:
    """Over the TLS listener, a certificate's CN is the username: the ACL's %u applies to it,
    no password needed; a client without a certificate still needs credentials."""
    ca = CA.create("Bayou test CA")
    server_cert, server_key = ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"],
                                       server=True)  # fmt: skip
    ca_file = write_pem(tmp_path / "ca.pem", ca.cert, None)
    server_pem = write_pem(tmp_path / "server.pem", server_cert, server_key)
    cert, key = ca.issue("dev1")
    client_pem = write_pem(tmp_path / "dev1.pem", cert, key)
    tls_port = free_port()
    env = write_security_files(tmp_path)
    p = start_ingress(
        kafka.bootstrap, tmp_path / "ingress.log", **env, BAYOU_TLS_PORT=str(tls_port),
        BAYOU_TLS_CERTFILE=str(server_pem), BAYOU_TLS_CAFILE=str(ca_file),
    )  # fmt: skip
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        ctx.load_cert_chain(client_pem)
        with ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", tls_port), timeout=10),
            server_hostname="localhost",
        ) as s:
            s.sendall(connect_packet("dev1-tls"))
            assert s.recv(4) == b"\x20\x02\x00\x00"
            s.sendall(
                subscribe_packet(3, [("devices/dev1/commands", 1), ("devices/dev2/commands", 1)])
            )
            assert s.recv(6) == b"\x90\x04\x00\x03\x01\x80"
        plain = ssl.create_default_context(cafile=str(ca_file))
        with plain.wrap_socket(
            socket.create_connection(("127.0.0.1", tls_port), timeout=10),
            server_hostname="localhost",
        ) as s:
            s.sendall(connect_packet("no-cert"))
            assert s.recv(4) == b"\x20\x02\x00\x05"
    finally:
        stop_process(p.proc)
