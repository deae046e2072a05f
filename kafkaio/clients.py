"""Settings of Bayou's confluent-kafka clients: one place, so every client connects alike."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from kafkaio.security import KafkaSecurity

# Errors that waiting does not cure: wrong credentials, a mechanism the broker does not offer,
# a certificate that does not verify. librdkafka retries them forever without saying so to
# the caller (a metadata request only times out), hence the error callback below.
_REFUSALS = (KafkaError._AUTHENTICATION, KafkaError._SSL)


class KafkaConnectError(RuntimeError):
    """Kafka cannot be reached or refused the connection; the message says which and why
    (never with a password: librdkafka's messages do not carry it)."""


def client_conf(bootstrap: str, client_id: str, security: KafkaSecurity) -> dict[str, Any]:
    """What every Bayou Kafka client (consumer, producer, admin) is given: the bootstrap
    servers, its name, and how it authenticates and encrypts (``security.protocol``,
    ``sasl.*``, ``ssl.*``)."""
    return {"bootstrap.servers": bootstrap, "client.id": client_id, **security.properties()}


def reader_conf(
    bootstrap: str,
    name: str,
    security: KafkaSecurity,
    *,
    read_committed: bool = False,
    fetch_wait_ms: int | None = None,
) -> dict[str, Any]:
    """A consumer that is assigned partitions itself: it never joins its group nor commits."""
    conf: dict[str, Any] = {
        **client_conf(bootstrap, f"bayou-{name}", security),
        # Required by librdkafka, unused: partitions are assigned, never committed.
        "group.id": f"bayou-{name}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
    }
    if fetch_wait_ms is not None:
        conf["fetch.wait.max.ms"] = fetch_wait_ms
    return conf


def connected_admin(
    bootstrap: str,
    security: KafkaSecurity,
    timeout: float = 15.0,
    client_id: str = "bayou-admin",
) -> AdminClient:
    """An admin client that has fetched the cluster metadata once.

    Raises :class:`KafkaConnectError` as soon as the broker refuses the credentials or the
    TLS handshake fails (within a second or so, rather than after ``timeout``), or when
    Kafka does not answer within ``timeout`` s.
    """
    refused: list[KafkaError] = []
    conf = {
        **client_conf(bootstrap, client_id, security),
        "error_cb": refused.append,
        # Errors only (librdkafka's level 3 logs a line per reconnect, 20 a second when the
        # brokers are down): what goes wrong is raised, as one KafkaConnectError line.
        "log_level": 2,
    }
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=0.5)
            return admin
        except KafkaException as exc:
            last = exc
        admin.poll(0)  # serves error_cb
        for err in refused:
            if err.code() in _REFUSALS:
                what = "authentication" if err.code() == KafkaError._AUTHENTICATION else "TLS"
                raise KafkaConnectError(
                    f"Kafka {what} failed at {bootstrap} ({security.describe()}): {err.str()}"
                ) from None
        refused.clear()
        if time.monotonic() > deadline:
            raise KafkaConnectError(
                f"Kafka at {bootstrap} did not answer within {timeout:.0f}s "
                f"({security.describe()}): {last.args[0]}"
            ) from None
