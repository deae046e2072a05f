"""Bayou's settings: the one place configuration is read (environment, ``BAYOU_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agents.runtime.config import WorkerConfig
from bayou.net import port_in_use
from ingress.config import IngressConfig
from ingress.contract import (
    COMMANDS_TOPIC,
    DEADLETTER_TOPIC,
    DEFAULT_TOPIC,
    OUTBOUND_TOPIC,
    RETAINED_TOPIC,
    SESSIONS_TOPIC,
)
from ingress.routing.rules import DEMO_ROUTES, EgressRule, RouteRule
from ingress.routing.rules_file import RoutesFileError, load_routes_file
from ingress.security.config import (
    DEFAULT_CHAIN,
    JWT_ALGORITHMS,
    AuthConfig,
    AuthMethod,
    CertUsername,
    JwtAlgorithm,
    JwtConfig,
    LimitsConfig,
    SecurityConfig,
)
from kafkaio.security import KafkaSecurity, SaslMechanism, SecurityProtocol

# The demo app's changelog (agents.runtime.store.changelog_topic("demo")); spelt out so that reading
# the settings imports no agent runtime.
DEMO_CHANGELOG_TOPIC = "bayou.changelog.demo"
# The command tracker's changelog (agents.runtime.command_tracker, app "bayou-commands").
TRACKER_CHANGELOG_TOPIC = "bayou.changelog.bayou-commands"


class SettingsError(Exception):
    """A setting with a bad value; the message names the environment variable."""


class PortTakenError(Exception):
    """A port Bayou must listen on is taken; the message names the port and the setting."""


class RouteRules(NamedTuple):
    """The route rules in force: inbound, outbound (egress) and the default topic."""

    inbound: list[RouteRule]
    egress: list[EgressRule]
    default_topic: str


class Settings(BaseSettings):
    """Every Bayou setting, read from ``BAYOU_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BAYOU_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset = start the embedded broker"
    )
    # How every Kafka client connects (docs/security.md); checked together in load_settings().
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=0, le=65535)
    ingress_processes: int = Field(default=1, ge=1, le=256)
    # Set by `bayou ingress` on the processes it starts itself (not for users).
    ingress_child: bool = False
    metrics_host: str = "127.0.0.1"
    ingress_metrics_port: int = Field(default=9464, ge=0, le=65535)
    # `bayou up --prometheus`: where its Prometheus listens (0: a free port).
    prometheus_port: int = Field(default=9090, ge=0, le=65535)
    worker_metrics_port: int = Field(default=9465, ge=0, le=65535)
    worker_session_timeout_ms: int = Field(default=6_000, ge=1_000)
    worker_processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    worker_transaction_timeout_ms: int = Field(default=30_000, ge=1_000, le=900_000)
    worker_max_clock_skew_seconds: float = Field(default=300.0, ge=0)
    # How long a Kafka fetch of the ingress and the worker waits for data before an empty
    # answer. Apache Kafka answers as soon as data arrives, so a long wait costs no latency and
    # spares ~200 empty fetches a second per reader and broker; the embedded broker holds every
    # fetch for the whole wait, so `bayou up` runs its children with 5 ms there. None: 500.
    kafka_fetch_wait_ms: int | None = Field(default=None, ge=1, le=10_000)
    topic_partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    default_topic: str = DEFAULT_TOPIC
    outbound_topic: str = OUTBOUND_TOPIC
    deadletter_topic: str = DEADLETTER_TOPIC
    retained_topic: str = RETAINED_TOPIC
    sessions_topic: str = SESSIONS_TOPIC
    commands_topic: str = COMMANDS_TOPIC
    # Closed-loop commands: whether workers run the command tracker, and how long a final
    # status (acknowledged, timed out) stays in its table.
    worker_track_commands: bool = True
    command_retention_seconds: float = Field(default=86_400.0, gt=0)
    max_packet_size: int = Field(default=1024 * 1024, ge=16, le=268_435_455)
    max_inflight_messages: int = Field(default=1000, ge=1, le=65535)
    receive_maximum: int = Field(default=65535, ge=1, le=65535)
    topic_alias_maximum: int = Field(default=64, ge=0, le=65535)
    max_keep_alive: int = Field(default=0, ge=0, le=65535)
    replay_max_seconds: int = Field(default=86_400, ge=0)
    share_session_timeout_ms: int = Field(default=6_000, ge=1_000, le=300_000)
    routes_file: Path | None = Field(
        default=None, description="TOML or YAML file of route rules; unset = the demo routes"
    )
    tls_port: int | None = Field(default=None, ge=0, le=65535)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    ws_port: int | None = Field(default=None, ge=0, le=65535)
    # Authentication (docs/security.md). None: `bayou up` allows anonymous clients (and says
    # so), `bayou ingress` does not.
    allow_anonymous: bool | None = None
    auth_chain: Annotated[list[AuthMethod], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CHAIN)
    )
    auth_password_file: Path | None = None
    auth_password_cache_size: int = Field(default=100_000, ge=0)
    auth_jwt_secret: SecretStr | None = None
    auth_jwt_public_key_file: Path | None = None
    auth_jwt_jwks_file: Path | None = None
    auth_jwt_algorithms: Annotated[list[JwtAlgorithm], NoDecode] = Field(
        default_factory=lambda: list(JWT_ALGORITHMS)
    )
    auth_jwt_audience: str | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_username_claim: str = "sub"
    auth_jwt_groups_claim: str = "groups"
    auth_jwt_leeway_seconds: float = Field(default=30.0, ge=0)
    tls_cafile: Path | None = None
    tls_require_client_cert: bool = False
    tls_cert_username: CertUsername = "cn"
    username_as_client_id: bool = False
    acl_file: Path | None = None
    # Limits (0 = none).
    max_connections: int = Field(default=100_000, ge=0)
    connect_rate_per_source: float = Field(default=0.0, ge=0)
    connect_burst_per_source: int = Field(default=100, ge=1)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    max_subscriptions_per_client: int = Field(default=1000, ge=0)
    publish_rate_per_client: float = Field(default=0.0, ge=0)
    publish_burst_per_client: int = Field(default=1000, ge=1)
    max_payload_size: int = Field(default=0, ge=0)
    max_write_buffer: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    state_dir: Path = Path(".bayou/state")
    demo_threshold: float = 30.0
    demo_window_seconds: float = Field(default=10.0, gt=0)
    demo_alert_cooldown_seconds: float = Field(default=60.0, ge=0)
    demo_grace_seconds: float = Field(default=2.0, ge=0)
    fleet_devices: int = Field(default=20, ge=1)
    fleet_hot_devices: int = Field(default=3, ge=0)
    fleet_interval_seconds: float = Field(default=1.0, gt=0)
    webhook_retries: int = Field(default=2, ge=0, le=20, description="tries after the first")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    webhook_backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    log_level: str = "WARNING"
    # `bayou dashboards push` (docs/dashboards.md): a Grafana service account token.
    grafana_token: SecretStr | None = None

    _route_rules: RouteRules | None = PrivateAttr(default=None)

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        # `sasl_ssl` and `scram-sha-512` as well as Kafka's own spelling.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("auth_chain", "auth_jwt_algorithms", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        # `BAYOU_AUTH_CHAIN=password_file,jwt` rather than JSON.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def kafka_security(self) -> KafkaSecurity:
        """How the Kafka clients authenticate and encrypt (see :func:`load_settings` for the
        checks of the combination)."""
        return KafkaSecurity(
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=self.kafka_ssl_key_password,
        )

    def security_config(self, *, allow_anonymous_default: bool = False) -> SecurityConfig:
        """Authentication, ACL and limits of an ingress node (BAYOU_ALLOW_ANONYMOUS unset:
        ``allow_anonymous_default``)."""
        jwt = None
        if self.auth_jwt_secret or self.auth_jwt_public_key_file or self.auth_jwt_jwks_file:
            jwt = JwtConfig(
                secret=self.auth_jwt_secret,
                public_key_file=self.auth_jwt_public_key_file,
                jwks_file=self.auth_jwt_jwks_file,
                algorithms=self.auth_jwt_algorithms,
                audience=self.auth_jwt_audience,
                issuer=self.auth_jwt_issuer,
                username_claim=self.auth_jwt_username_claim,
                groups_claim=self.auth_jwt_groups_claim,
                leeway_seconds=self.auth_jwt_leeway_seconds,
            )
        anonymous = self.allow_anonymous
        auth = AuthConfig(
            allow_anonymous=allow_anonymous_default if anonymous is None else anonymous,
            chain=self.auth_chain,
            password_file=self.auth_password_file,
            password_cache_size=self.auth_password_cache_size,
            jwt=jwt,
            tls_cafile=self.tls_cafile,
            tls_require_client_cert=self.tls_require_client_cert,
            cert_username=self.tls_cert_username,
            username_as_client_id=self.username_as_client_id,
        )
        limits = LimitsConfig(
            max_connections=self.max_connections,
            connect_rate_per_source=self.connect_rate_per_source,
            connect_burst_per_source=self.connect_burst_per_source,
            connect_timeout_seconds=self.connect_timeout_seconds,
            max_subscriptions_per_client=self.max_subscriptions_per_client,
            publish_rate_per_client=self.publish_rate_per_client,
            publish_burst_per_client=self.publish_burst_per_client,
            max_payload_size=self.max_payload_size,
            max_write_buffer=self.max_write_buffer,
        )
        return SecurityConfig(auth=auth, acl_file=self.acl_file, limits=limits)

    def route_rules(self) -> RouteRules:
        """The rules of BAYOU_ROUTES_FILE, or the demo routes when it is unset (read once).

        Raises SettingsError naming BAYOU_ROUTES_FILE, the file, the rule and the field.
        """
        if self._route_rules is not None:
            return self._route_rules
        if self.routes_file is None:
            rules = RouteRules(list(DEMO_ROUTES), [], self.default_topic)
        else:
            try:
                loaded = load_routes_file(self.routes_file)
            except RoutesFileError as exc:
                raise SettingsError(f"BAYOU_ROUTES_FILE={exc}") from None
            default = self.default_topic
            if loaded.default_topic is not None:
                if "default_topic" in self.model_fields_set and default != loaded.default_topic:
                    raise SettingsError(
                        f"BAYOU_DEFAULT_TOPIC={default!r} and default_topic="
                        f"{loaded.default_topic!r} in BAYOU_ROUTES_FILE={self.routes_file} "
                        "disagree; set only one"
                    )
                default = loaded.default_topic
            rules = RouteRules(loaded.inbound, loaded.outbound, default)
        self._check_client_writable(rules)
        self._route_rules = rules
        return rules

    def _check_client_writable(self, rules: RouteRules) -> None:
        """Refuse rules that let MQTT clients write where only Bayou and agents write: a
        client's publish in ``bayou.sessions`` or ``bayou.retained`` would forge state, in
        ``bayou.outbound`` or a changelog it would pass for an agent's result."""
        reserved = {
            self.sessions_topic,
            self.retained_topic,
            self.outbound_topic,
            self.commands_topic,
        }
        where = f"BAYOU_ROUTES_FILE={self.routes_file}: "
        targets = [(f"{where}route {r.name!r}", r.kafka_topic) for r in rules.inbound]
        default = f"{where}default_topic" if self.routes_file else "BAYOU_DEFAULT_TOPIC"
        targets.append((default, rules.default_topic))
        for what, topic in targets:
            if topic in reserved or topic.startswith("bayou.changelog."):
                raise SettingsError(
                    f"{what} sends MQTT publishes to "
                    f"{topic!r}, which only Bayou's ingress nodes and agents may write; "
                    "route it to another topic"
                )

    def ingress_config(self, bootstrap: str, *, node_id: str = "ingress-1") -> IngressConfig:
        """The ingress node's view of the settings."""
        rules = self.route_rules()
        return IngressConfig(
            kafka_bootstrap=bootstrap,
            kafka_security=self.kafka_security(),
            mqtt_host=self.mqtt_host,
            mqtt_port=self.mqtt_port,
            metrics_host=self.metrics_host,
            metrics_port=self.ingress_metrics_port or None,
            routes=rules.inbound,
            egress_routes=rules.egress,
            default_topic=rules.default_topic,
            outbound_topics=[self.outbound_topic],
            node_id=node_id,
            reuse_port=self.ingress_processes > 1,
            retained_topic=self.retained_topic,
            sessions_topic=self.sessions_topic,
            commands_topic=self.commands_topic,
            max_packet_size=self.max_packet_size,
            max_inflight_out=self.max_inflight_messages,
            fetch_wait_ms=self.fetch_wait_ms(),
            receive_maximum=self.receive_maximum,
            topic_alias_maximum=self.topic_alias_maximum,
            max_keep_alive=self.max_keep_alive,
            replay_max_seconds=self.replay_max_seconds,
            share_session_timeout_ms=self.share_session_timeout_ms,
            tls_port=self.tls_port,
            tls_certfile=self.tls_certfile,
            tls_keyfile=self.tls_keyfile,
            ws_port=self.ws_port,
            security=self.security_config(),
        )

    def fetch_wait_ms(self) -> int:
        """BAYOU_KAFKA_FETCH_WAIT_MS, or 500 (librdkafka's own default) when unset."""
        return 500 if self.kafka_fetch_wait_ms is None else self.kafka_fetch_wait_ms

    def worker_config(self, bootstrap: str) -> WorkerConfig:
        """The agent worker's view of the settings."""
        return WorkerConfig(
            kafka_bootstrap=bootstrap,
            kafka_security=self.kafka_security(),
            metrics_host=self.metrics_host,
            metrics_port=self.worker_metrics_port or None,
            session_timeout_ms=self.worker_session_timeout_ms,
            fetch_max_wait_ms=self.fetch_wait_ms(),
            processing_guarantee=self.worker_processing_guarantee,
            transaction_timeout_ms=self.worker_transaction_timeout_ms,
            max_clock_skew_seconds=self.worker_max_clock_skew_seconds,
            outbound_topic=self.outbound_topic,
            deadletter_topic=self.deadletter_topic,
            commands_topic=self.commands_topic,
            track_commands=self.worker_track_commands,
            command_retention_seconds=self.command_retention_seconds,
            state_dir=self.state_dir,
            threshold=self.demo_threshold,
            window_seconds=self.demo_window_seconds,
            alert_cooldown_seconds=self.demo_alert_cooldown_seconds,
            grace_seconds=self.demo_grace_seconds,
            routes=[(r.mqtt, r.kafka_topic) for r in self.route_rules().inbound],
            webhook_retries=self.webhook_retries,
            webhook_timeout_seconds=self.webhook_timeout_seconds,
            webhook_backoff_seconds=self.webhook_backoff_seconds,
        )

    def all_topics(self) -> list[str]:
        """Every Kafka topic the embedded stack needs, created explicitly at start."""
        rules = self.route_rules()
        topics = [
            rules.default_topic,
            self.outbound_topic,
            self.deadletter_topic,
            self.commands_topic,
        ]
        topics += [r.kafka_topic for r in rules.inbound]
        topics += [r.kafka_topic for r in rules.egress]
        return list(dict.fromkeys([*topics, *sorted(self.compacted_topics())]))

    def compacted_topics(self) -> frozenset[str]:
        """The topics that keep the latest value per key: retained messages, sessions, and the
        state changelog of the built-in demo app (``bayou.changelog.<app>`` of app ``demo``,
        :mod:`agents.demo`), which a worker without ``--agents`` runs, and the command
        tracker's (agents.runtime.command_tracker)."""
        return frozenset(
            (self.retained_topic, self.sessions_topic, DEMO_CHANGELOG_TOPIC,
             TRACKER_CHANGELOG_TOPIC)
        )  # fmt: skip


_SECRETS = frozenset(
    name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)
)


def load_settings() -> Settings:
    """Read the settings and the routes file; a bad value raises SettingsError naming it."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            # A password is never repeated back, not even a malformed one.
            shown = "'**********'" if field in _SECRETS else repr(err.get("input"))
            problems.append(f"BAYOU_{field.upper()}={shown}: {err['msg']}")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
    kafka = settings.kafka_security().problems()
    if kafka:
        raise SettingsError(
            "invalid setting " + "; ".join(f"BAYOU_KAFKA_{f.upper()} {msg}" for f, msg in kafka)
        )
    settings.route_rules()  # before anything starts: a bad routes file is a bad setting
    return settings


def check_ports_free(settings: Settings, which: tuple[str, ...]) -> None:
    """Raise PortTakenError naming the port and its setting if one of ``which`` is taken.

    ``which`` names settings without their ``_port`` suffix: ``mqtt``, ``ingress_metrics``,
    ``worker_metrics``. Checked before starting anything, so the error is one clear line.
    """
    for name in which:
        port: int = getattr(settings, f"{name}_port")
        host = settings.mqtt_host if name == "mqtt" else settings.metrics_host
        if port and port_in_use(host, port):
            what = name.replace("_", " ").replace("mqtt", "MQTT")
            raise PortTakenError(
                f"{what} port {host}:{port} is already in use; "
                f"set BAYOU_{name.upper()}_PORT to a free port"
            )
