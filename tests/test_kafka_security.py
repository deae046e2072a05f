"""Kafka connection security on a real Apache Kafka: SASL (PLAIN, SCRAM-SHA-256/512) and TLS
for the ingress, the worker, ``bayou replay`` and ``bayou up``; wrong credentials fail fast
with a clear error; the password shows nowhere (repr, logs, output, error messages)."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from agents.global_tables import GlobalTable
from agents.runtime.global_follower import Follower
from bayou.net import free_port
from bayou.processes import stop_process
from bayou.settings import SettingsError, load_settings
from ingress.contract import H_MQTT_TOPIC
from kafkaio.admin import ensure_topics
from kafkaio.clients import KafkaConnectError, client_conf, connected_admin
from kafkaio.reader import BEGINNING, PartitionReader
from kafkaio.security import KafkaSecurity
from tests.apache_kafka import ApacheKafka
from tests.conftest import BAYOU, Proc, bayou_env, start_ingress, start_worker
from tests.helpers import Mqtt
from tests.test_bayou_up import Lines

pytestmark = pytest.mark.integration

USER = "bayou"


def password(k: ApacheKafka) -> str:
    return k.users[USER]


def kafka_env(
    k: ApacheKafka,
    protocol: str = "SASL_PLAINTEXT",
    mechanism: str | None = "SCRAM-SHA-512",
    pw: str | None = None,
) -> dict[str, str]:
    """The BAYOU_KAFKA_* settings of a connection to ``k``'s ``protocol`` listener."""
    env = {
        "BAYOU_KAFKA_BOOTSTRAP": k.bootstrap(protocol),
        "BAYOU_KAFKA_SECURITY_PROTOCOL": protocol,
    }
    if protocol.startswith("SASL_"):
        assert mechanism is not None
        env["BAYOU_KAFKA_SASL_MECHANISM"] = mechanism
        env["BAYOU_KAFKA_SASL_USERNAME"] = USER
        env["BAYOU_KAFKA_SASL_PASSWORD"] = password(k) if pw is None else pw
    if protocol.endswith("SSL"):
        assert k.tls is not None
        env["BAYOU_KAFKA_SSL_CAFILE"] = str(k.tls.cafile)
    return env


def security_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> KafkaSecurity:
    """The KafkaSecurity the settings make of ``env`` (read as a process would)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings().kafka_security()


def _reading(temperature: float) -> bytes:
    return json.dumps({"temperature": temperature, "humidity": 40.0, "ts": time.time()}).encode()


@pytest.fixture(scope="module")
def secure_stack(
    apache_kafka: ApacheKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Proc, Proc]]:
    """`bayou ingress` and `bayou worker` (the demo agent) over SASL_PLAINTEXT SCRAM-SHA-512."""
    d = tmp_path_factory.mktemp("secure-stack")
    env = kafka_env(apache_kafka)
    boot = env.pop("BAYOU_KAFKA_BOOTSTRAP")
    ingress = start_ingress(boot, d / "ingress.log", BAYOU_ALLOW_ANONYMOUS="true", **env)
    try:
        worker = start_worker(boot, d / "worker.log", d / "state", None, **env)
    except BaseException:
        stop_process(ingress.proc)
        raise
    yield ingress, worker
    stop_process(worker.proc)
    stop_process(ingress.proc)


def test_mqtt_to_the_worker_and_a_command_back_over_sasl_scram_sha_512(
    apache_kafka: ApacheKafka, secure_stack: tuple[Proc, Proc]
) -> None:
    ingress, worker = secure_stack
    device = Mqtt(ingress.mqtt_port, "d1").connect()
    operator = Mqtt(ingress.mqtt_port, f"ops-{uuid.uuid4().hex[:6]}").connect()
    try:
        operator.subscribe("devices/d1/commands", 1)
        device.publish("sensors/d1/telemetry", _reading(41.0)).wait_for_publish(10)
        command = json.loads(operator.expect(lambda m: m.topic == "devices/d1/commands").payload)
        assert (command["command"], command["device"]) == ("cool", "d1")
    finally:
        device.close()
        operator.close()
    for proc in (ingress, worker):
        assert password(apache_kafka) not in proc.log_text()


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SSL", None),
    ],
)
def test_admin_produce_and_consume_through_kafkaio(
    apache_kafka: ApacheKafka, monkeypatch: pytest.MonkeyPatch, protocol: str, mechanism: str | None
) -> None:
    env = kafka_env(apache_kafka, protocol, mechanism)
    boot = env["BAYOU_KAFKA_BOOTSTRAP"]
    security = security_of(env, monkeypatch)
    topic = f"sec.{protocol.lower()}.{uuid.uuid4().hex[:8]}"
    assert asyncio.run(ensure_topics(boot, [topic], 1, 1, security=security)) == [topic]
    producer = Producer(client_conf(boot, "test-producer", security))
    for i in range(3):
        producer.produce(topic, f"v{i}".encode(), b"k")
    assert producer.flush(15) == 0
    reader = PartitionReader(boot, f"test-{uuid.uuid4().hex[:6]}", security=security)
    try:
        reader.assign({(topic, 0): BEGINNING}, to_first_end=True)
        values = [r.value for batch in reader.read_to_end() for r in batch]
    finally:
        reader.close()
    assert values == [b"v0", b"v1", b"v2"]


def test_a_wrong_password_or_an_unknown_ca_is_a_clear_error_from_kafkaio(
    apache_kafka: ApacheKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = f"wrong-{secrets.token_hex(6)}"
    env = kafka_env(apache_kafka, pw=wrong)
    security = security_of(env, monkeypatch)
    with pytest.raises(KafkaConnectError) as err:
        connected_admin(env["BAYOU_KAFKA_BOOTSTRAP"], security, timeout=60)
    text = str(err.value)
    assert "Kafka authentication failed" in text and "invalid credentials" in text, text
    assert wrong not in text and "SCRAM-SHA-512 as user 'bayou'" in text
    # SASL_SSL without the test CA: the broker's certificate does not verify.
    no_ca = KafkaSecurity.model_validate({**security.model_dump(), "security_protocol": "SASL_SSL"})
    with pytest.raises(KafkaConnectError, match=r"Kafka TLS failed.*certificate verify failed"):
        connected_admin(apache_kafka.bootstrap("SASL_SSL"), no_ca, timeout=60)


def test_global_tables_follow_a_changelog_over_sasl(
    apache_kafka: ApacheKafka, secure_stack: tuple[Proc, Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's global-table follower (in process) on the demo app's changelog, which
    ``secure_stack`` has created."""
    env = kafka_env(apache_kafka, mechanism="SCRAM-SHA-256")
    follower = Follower(
        env["BAYOU_KAFKA_BOOTSTRAP"],
        [GlobalTable("demo", "temperature")],
        security=security_of(env, monkeypatch),
    )
    follower.start()
    try:
        follower.wait_caught_up(30)
    finally:
        follower.stop()


def _replay_records(k: ApacheKafka, security: KafkaSecurity, base: int) -> None:
    producer = Producer(client_conf(k.bootstrap("SASL_PLAINTEXT"), "test-replay-input", security))
    for i in range(3):
        ts = base + i * 60 + 1
        producer.produce(
            "bayou.telemetry", json.dumps({"temperature": 20.0 + i, "ts": ts}).encode(),
            b"rp-sasl", headers=[(H_MQTT_TOPIC, b"sensors/rp-sasl/telemetry")],
            timestamp=ts * 1000,
        )  # fmt: skip
    assert producer.flush(15) == 0


def test_replay_over_sasl(
    apache_kafka: ApacheKafka,
    secure_stack: tuple[Proc, Proc],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """(``secure_stack`` has created the topics.)"""
    env = kafka_env(apache_kafka)
    base = math.floor(time.time() / 60) * 60 - 3600  # an hour ago: no live record in range
    _replay_records(apache_kafka, security_of(env, monkeypatch), base)
    cmd = [*BAYOU, "replay", "--agents", "tests.agent_examples.thermostat"]
    cmd += ["--from", str(base), "--until", str(base + 600)]
    res = subprocess.run(
        cmd, env=bayou_env(**env), cwd=Path.cwd(), capture_output=True, text=True, timeout=90,
        check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "read 3 record(s) in range" in res.stdout, res.stdout
    assert password(apache_kafka) not in res.stdout + res.stderr


@pytest.mark.parametrize("command", ["ingress", "worker", "replay"])
def test_a_wrong_password_exits_at_once_naming_the_authentication_failure(
    apache_kafka: ApacheKafka, tmp_path: Path, command: str
) -> None:
    """Within the run's timeout (far below librdkafka's endless retries), exit code 1."""
    wrong = f"wrong-{secrets.token_hex(6)}"
    env = bayou_env(
        **kafka_env(apache_kafka, pw=wrong),
        BAYOU_ALLOW_ANONYMOUS="true",
        BAYOU_MQTT_PORT=str(free_port()),
        BAYOU_INGRESS_METRICS_PORT=str(free_port()),
        BAYOU_WORKER_METRICS_PORT=str(free_port()),
        BAYOU_STATE_DIR=str(tmp_path / "state"),
        BAYOU_LOG_LEVEL="DEBUG",
    )
    args = {
        "ingress": ["ingress"],
        "worker": ["worker"],
        "replay": ["replay", "--agents", "tests.agent_examples.thermostat", "--from", "0"],
    }[command]
    res = subprocess.run(
        [*BAYOU, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert res.returncode == 1, res.stdout + res.stderr
    first = next(line for line in res.stderr.splitlines() if line.startswith("bayou "))
    assert first.startswith(f"bayou {command}: Kafka authentication failed at "), res.stderr
    assert "invalid credentials" in first
    for secret in (wrong, password(apache_kafka)):
        assert secret not in res.stdout + res.stderr


def test_bayou_up_on_a_sasl_kafka_never_prints_the_password(
    apache_kafka: ApacheKafka, secure_stack: tuple[Proc, Proc], tmp_path: Path
) -> None:
    """`bayou up`'s banner says how it connects; its output and its parts' logs (under
    .bayou/logs) hold no password."""
    env = bayou_env(
        **kafka_env(apache_kafka),
        BAYOU_MQTT_PORT=str(free_port()),
        BAYOU_INGRESS_METRICS_PORT=str(free_port()),
        BAYOU_WORKER_METRICS_PORT=str(free_port()),
        BAYOU_STATE_DIR=str(tmp_path / "state"),
        BAYOU_LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [*BAYOU, "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        lines.until(r"Stop with Ctrl-C", 90)
        assert "Kafka security   SASL_PLAINTEXT, SCRAM-SHA-512 as user 'bayou'\n" in lines.seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / ".bayou/logs").iterdir()}
    assert {"ingress.log", "worker.log"} <= set(logs)
    for text in (lines.seen, *logs.values()):
        assert password(apache_kafka) not in text


def test_bayou_up_refuses_security_settings_without_a_kafka(tmp_path: Path) -> None:
    """The embedded broker (Tansu) speaks PLAINTEXT only."""
    env = bayou_env(
        BAYOU_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        BAYOU_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        BAYOU_KAFKA_SASL_USERNAME=USER,
        BAYOU_KAFKA_SASL_PASSWORD="hunter2-not-printed",
        BAYOU_MQTT_PORT=str(free_port()),
    )
    res = subprocess.run(
        [*BAYOU, "up"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "bayou up: BAYOU_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs BAYOU_KAFKA_BOOTSTRAP: the "
        "embedded broker speaks PLAINTEXT only (no SASL, no TLS)"
    )
    assert "hunter2" not in res.stdout + res.stderr


def test_settings_repr_and_configs_mask_the_passwords(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "ca.pem").write_text("-")
    (tmp_path / "c.pem").write_text("-")
    (tmp_path / "k.pem").write_text("-")
    for name, value in {
        "BAYOU_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",  # Kafka's spelling in either case
        "BAYOU_KAFKA_SASL_MECHANISM": "scram-sha-256",
        "BAYOU_KAFKA_SASL_USERNAME": USER,
        "BAYOU_KAFKA_SASL_PASSWORD": "pw-Secret-1",
        "BAYOU_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
        "BAYOU_KAFKA_SSL_CERTFILE": str(tmp_path / "c.pem"),
        "BAYOU_KAFKA_SSL_KEYFILE": str(tmp_path / "k.pem"),
        "BAYOU_KAFKA_SSL_KEY_PASSWORD": "key-Secret-2",
    }.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    security = s.kafka_security()
    shown = [
        repr(s), str(s), s.model_dump_json(), repr(security), security.describe(),
        repr(s.ingress_config("k:9093")), repr(s.worker_config("k:9093")),
    ]  # fmt: skip
    for text in shown:
        assert "pw-Secret-1" not in text and "key-Secret-2" not in text
    assert "**********" in repr(s)
    assert security.properties() == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": USER,
        "sasl.password": "pw-Secret-1",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "c.pem"),
        "ssl.key.location": str(tmp_path / "k.pem"),
        "ssl.key.password": "key-Secret-2",
    }
    assert client_conf("k:9093", "x", security)["sasl.password"] == "pw-Secret-1"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BAYOU_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "BAYOU_KAFKA_SASL_MECHANISM": "PLAIN",
          "BAYOU_KAFKA_SASL_PASSWORD": "pw-Secret-1"},
         "BAYOU_KAFKA_SASL_USERNAME is required with security protocol SASL_SSL"),
        ({"BAYOU_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "BAYOU_KAFKA_SASL_USERNAME": USER,
          "BAYOU_KAFKA_SASL_PASSWORD": "pw-Secret-1"},
         "BAYOU_KAFKA_SASL_MECHANISM is required with security protocol SASL_PLAINTEXT"),
        ({"BAYOU_KAFKA_SASL_PASSWORD": "pw-Secret-1"},
         "BAYOU_KAFKA_SASL_PASSWORD is set, but security protocol PLAINTEXT does not use SASL"),
        ({"BAYOU_KAFKA_SECURITY_PROTOCOL": "SSL", "BAYOU_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
         "BAYOU_KAFKA_SSL_CAFILE file '/nonexistent/ca.pem' does not exist or is not readable"),
        ({"BAYOU_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "BAYOU_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1",
          "BAYOU_KAFKA_SASL_USERNAME": USER, "BAYOU_KAFKA_SASL_PASSWORD": "pw-Secret-1"},
         "BAYOU_KAFKA_SASL_MECHANISM='SCRAM-SHA-1'"),
        ({"BAYOU_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "BAYOU_KAFKA_SASL_MECHANISM": "PLAIN",
          "BAYOU_KAFKA_SASL_USERNAME": USER, "BAYOU_KAFKA_SASL_PASSWORD": "pw-Secret-1",
          "BAYOU_KAFKA_SSL_KEY_PASSWORD": "key-Secret-2"},
         "BAYOU_KAFKA_SSL_KEY_PASSWORD is set without a key file"),
    ],
)  # fmt: skip
def test_bad_combinations_name_the_setting_and_never_the_password(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert named in str(err.value)
    assert "pw-Secret-1" not in str(err.value) and "key-Secret-2" not in str(err.value)
