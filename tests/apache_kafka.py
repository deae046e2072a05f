"""A real Apache Kafka for tests: N brokers in KRaft mode, from the jars of tools/kafka.

``make kafka-deps`` puts the broker's classpath in tools/kafka/target/lib (Maven Central,
pinned in tools/kafka/pom.xml). :class:`ApacheKafka` formats each node's storage with
``kafka.tools.StorageTool`` (SCRAM users included), starts ``kafka.Kafka`` per node on free
loopback ports with its data in a temporary directory, waits until every broker is in the
cluster metadata, and stops them by PID. Each node is a combined broker + controller.

With 3 nodes or more (the ``kafka3`` fixture) the defaults are a production-like cluster's:
internal topics (consumer offsets, transaction state) with replication factor 3 and
``min.insync.replicas=2``, topics created without a replication factor get 3. Failures are
injected by PID: :meth:`ApacheKafka.kill` (SIGKILL one node), :meth:`ApacheKafka.restart`
(the same node id, data directory and ports), :meth:`ApacheKafka.pause` /
:meth:`ApacheKafka.resume` (SIGSTOP / SIGCONT every node: a cluster that hangs, not one that
refuses connections). Liveness is detected quickly (broker session 6 s) and the log cleaner
looks for work every second, so compaction can be watched in a test.

Every broker has five listeners: PLAINTEXT (setup, and between brokers), SASL_PLAINTEXT and
SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and SSL, plus the controller's. TLS uses a
PEM keystore made by :func:`make_certs` (a CA and a certificate for 127.0.0.1/localhost).

Starting fails loudly (with the log tail of the broker), never skips: CI must run these tests.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bayou.net import free_port
from bayou.processes import die_with_parent, stop_process, stop_processes

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "tools" / "kafka" / "target" / "lib"
LISTENERS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaStartError(RuntimeError):
    """The broker could not be set up or did not come up; the message has its log tail."""


@dataclass(frozen=True)
class TlsFiles:
    """The CA certificate (for clients' ``ssl.ca.location``) and the brokers' PEM keystore."""

    cafile: Path
    keystore: Path


def make_certs(directory: Path) -> TlsFiles:
    """A CA, and a broker certificate it signs for 127.0.0.1 and localhost (one day)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bayou test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    cafile = directory / "ca.pem"
    cafile.write_bytes(ca.public_bytes(pem))
    # Kafka's PEM keystore: the private key (PKCS#8, unencrypted) and its certificate chain.
    keystore = directory / "broker.pem"
    keystore.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
        + ca.public_bytes(pem)
    )
    keystore.chmod(0o600)
    return TlsFiles(cafile, keystore)


@dataclass
class Node:
    """One combined broker + controller: its id, ports per listener, directory, process."""

    node_id: int
    ports: dict[str, int]
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "kafka.log"

    def port_was_taken(self) -> bool:
        """Its log says a listener could not bind (another process had the port)."""
        try:
            return "Address already in use" in self.log.read_text(errors="replace")
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class ApacheKafka:
    """A KRaft cluster of ``brokers`` nodes under ``workdir``, with SASL users ``users``
    (name → password; each gets PLAIN and both SCRAM mechanisms)."""

    workdir: Path
    users: dict[str, str]
    brokers: int = 1
    heap: str = "-Xmx512m"
    nodes: list[Node] = field(default_factory=list)
    tls: TlsFiles | None = None
    cluster_id: str = field(default_factory=lambda: _uuid())

    def bootstrap(self, listener: str = "PLAINTEXT") -> str:
        """The bootstrap servers of ``listener`` (every broker)."""
        return ",".join(f"127.0.0.1:{n.ports[listener]}" for n in self.nodes)

    def start(self, timeout: float = 90.0, attempts: int = 3) -> ApacheKafka:
        """Format and start every node; return once all brokers are in the metadata.

        The ports are free when chosen, but seconds of JVM starts pass before the brokers
        bind them, and under a busy suite another process's connection has taken one (seen
        in CI: "Address already in use"): then the nodes start again, on new ports and
        empty directories, up to ``attempts`` times."""
        classpath = _classpath()
        self.tls = make_certs(self.workdir / "tls")
        for attempt in range(1, attempts + 1):
            try:
                return self._start_on_new_ports(classpath, timeout)
            except KafkaStartError:
                if attempt == attempts or not any(n.port_was_taken() for n in self.nodes):
                    raise
                for node in self.nodes:
                    shutil.rmtree(node.directory, ignore_errors=True)
        raise AssertionError("unreachable")

    def _start_on_new_ports(self, classpath: str, timeout: float) -> ApacheKafka:
        names = (*LISTENERS, "CONTROLLER")
        self.nodes = [
            Node(i, {name: free_port() for name in names}, self.workdir / f"n{i}")
            for i in range(1, self.brokers + 1)
        ]
        try:
            # In parallel: each format is a JVM start of a few seconds.
            formats = [self._format(classpath, node) for node in self.nodes]
            try:
                for node, proc in zip(self.nodes, formats, strict=True):
                    try:
                        out, _ = proc.communicate(timeout=60)
                    except subprocess.TimeoutExpired:
                        raise KafkaStartError(f"formatting node {node.node_id} hung") from None
                    if proc.returncode != 0:
                        raise KafkaStartError(
                            f"formatting node {node.node_id} failed ({proc.returncode}):\n"
                            + out[-3000:]
                        )
            finally:
                # One failed: the others' formats are not waited for; stop them by PID.
                for proc in formats:
                    if proc.poll() is None:
                        stop_process(proc)
                    if proc.stdout is not None:
                        proc.stdout.close()
            for node in self.nodes:
                self._launch(classpath, node)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every node by PID: SIGTERM to all at once (one by one, the last nodes wait
        for a quorum that is gone), SIGKILL after ``timeout`` s. Paused nodes are resumed
        first (a stopped process would not act on SIGTERM)."""
        self.resume()
        stop_processes([n.proc for n in self.nodes], timeout)
        for node in self.nodes:
            node.proc = None

    def kill(self, index: int) -> int:
        """SIGKILL node ``index`` (0-based; its id is ``index + 1``) and reap it; its PID."""
        node = self.nodes[index]
        assert node.proc is not None, f"node {node.node_id} is not running"
        pid = node.proc.pid
        os.kill(pid, signal.SIGKILL)
        node.proc.wait(timeout=30)
        node.proc = None
        return pid

    def restart(self, index: int, timeout: float = 90.0) -> None:
        """Start node ``index`` again (same id, data directory and ports) after :meth:`kill`;
        return once every node is in the metadata again."""
        node = self.nodes[index]
        assert node.proc is None, f"node {node.node_id} is still running"
        self._launch(_classpath(), node)
        # Its own listener, not the cluster's metadata: right after a kill the others may
        # still list the dead broker.
        self._wait_ready(timeout, only=node)

    def pause(self) -> None:
        """SIGSTOP every running node: connections stay open, nothing answers."""
        for node in self.nodes:
            if node.proc is not None:
                os.kill(node.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT every running node (harmless when they are not stopped)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)

    def running(self) -> list[int]:
        """The indices of the nodes whose process runs."""
        return [i for i, n in enumerate(self.nodes) if n.proc is not None and n.proc.poll() is None]

    def _java(self, classpath: str, node: Node) -> list[str]:
        log4j = node.directory / "log4j2.properties"
        return [
            _java_binary(), self.heap, "-Xms128m", "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
        ]  # fmt: skip

    def _format(self, classpath: str, node: Node) -> subprocess.Popen[str]:
        node.directory.mkdir(parents=True, exist_ok=True)
        (node.directory / "log4j2.properties").write_text(_LOG4J)
        props = node.directory / "server.properties"
        props.write_text(self._properties(node))
        scram = [
            arg
            for name, password in self.users.items()
            for mech in SCRAM
            for arg in ("--add-scram", f"{mech}=[name={name},password={password}]")
        ]
        cmd = [
            *self._java(classpath, node), "kafka.tools.StorageTool", "format",
            "--config", str(props), "--cluster-id", self.cluster_id, "--ignore-formatted", *scram,
        ]  # fmt: skip
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, preexec_fn=die_with_parent,
        )  # fmt: skip

    def _launch(self, classpath: str, node: Node) -> None:
        props = node.directory / "server.properties"
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(
                [*self._java(classpath, node), "kafka.Kafka", str(props)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent, start_new_session=True,
            )  # fmt: skip

    def _wait_ready(self, timeout: float, only: Node | None = None) -> None:
        servers = self.bootstrap() if only is None else f"127.0.0.1:{only.ports['PLAINTEXT']}"
        admin = AdminClient({"bootstrap.servers": servers, "log_level": 0})
        try:
            self._wait_brokers(admin, timeout)
        finally:
            del admin  # its threads end with it

    def _wait_brokers(self, admin: AdminClient, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise KafkaStartError(
                        f"Kafka node {node.node_id} exited with {node.proc.returncode}; "
                        f"log {node.log}:\n{node.log_tail()}"
                    )
            try:
                if len(admin.list_topics(timeout=2).brokers) == len(self.nodes):
                    return
            except Exception:
                pass  # not up yet
            if time.monotonic() > deadline:
                tails = "\n".join(f"-- node {n.node_id}:\n{n.log_tail()}" for n in self.nodes)
                raise KafkaStartError(f"Kafka not ready after {timeout:.0f}s:\n{tails}")
            time.sleep(0.3)

    def _properties(self, node: Node) -> str:
        assert self.tls is not None
        ports = node.ports
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.ports['CONTROLLER']}" for n in self.nodes)
        rf = min(3, len(self.nodes))
        plain_users = " ".join(f'user_{u}="{p}"' for u, p in self.users.items())
        every = (*LISTENERS, "CONTROLLER")
        lines = [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            "controller.listener.names=CONTROLLER",
            "listeners=" + ",".join(f"{n}://127.0.0.1:{ports[n]}" for n in every),
            "advertised.listeners=" + ",".join(f"{n}://127.0.0.1:{ports[n]}" for n in LISTENERS),
            "listener.security.protocol.map="
            + ",".join(f"{n}:{n}" for n in LISTENERS) + ",CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"sasl.enabled.mechanisms={','.join(MECHANISMS)}",
            f"log.dirs={node.directory / 'data'}",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={min(2, rf)}",
            "group.initial.rebalance.delay.ms=0",
            # Tests use short consumer-group session timeouts (failover within seconds).
            "group.min.session.timeout.ms=1000",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.tls.keystore}",
            "ssl.client.auth=none",
        ]  # fmt: skip
        if len(self.nodes) >= 3:
            lines += [
                # A production-like cluster: acks=all means two replicas have the record.
                "min.insync.replicas=2",
                f"default.replication.factor={rf}",
                # Fewer internal partitions than the default 50: a 2-core CI creates them.
                "offsets.topic.num.partitions=8",
                "transaction.state.log.num.partitions=8",
                # A SIGKILLed broker is fenced (leaders move, ISR shrinks) within ~6 s.
                "broker.session.timeout.ms=6000",
                "broker.heartbeat.interval.ms=1000",
                # The log cleaner looks for dirty compacted logs every second (default 15 s).
                "log.cleaner.backoff.ms=1000",
            ]
        for listener in ("sasl_plaintext", "sasl_ssl"):
            lines.append(
                f"listener.name.{listener}.plain.sasl.jaas.config="
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            )
            for mech in SCRAM:
                lines.append(
                    f"listener.name.{listener}.{mech.lower()}.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        return "\n".join(lines) + "\n"


# The broker's own log to stdout (its kafka.log): INFO, as Kafka's default config.
_LOG4J = """\
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting
    with "-" (as Kafka's own Uuid.randomUuid: the storage tool would read it as an option;
    one cluster start in 64 failed so)."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaStartError("java is not installed; run `make kafka-deps`")
    return java


def _classpath() -> str:
    jars = sorted(LIB.glob("*.jar")) if LIB.is_dir() else []
    if not any(j.name.startswith("kafka_2.13-") for j in jars):
        raise KafkaStartError(f"no Kafka jars in {LIB}; run `make kafka-deps`")
    return ":".join(str(j) for j in jars)
