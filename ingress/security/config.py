"""Plain-data configuration of authentication, authorisation and limits (no environment reads).

Built by :mod:`bayou.settings` from ``BAYOU_*`` settings and handed to the node inside
:class:`ingress.config.IngressConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

AuthMethod = Literal["certificate", "password_file", "jwt"]
CertUsername = Literal["cn", "san_dns", "san_email", "san_uri"]
JwtAlgorithm = Literal["RS256", "ES256", "HS256"]
DEFAULT_CHAIN: tuple[AuthMethod, ...] = ("certificate", "password_file", "jwt")
JWT_ALGORITHMS: tuple[JwtAlgorithm, ...] = ("RS256", "ES256", "HS256")


class JwtConfig(BaseModel):
    """JWT in the CONNECT password: which keys verify it and which claims name the client."""

    # HS256: a shared secret. RS256/ES256: a PEM public key, or a JWKS file (keys by ``kid``).
    secret: SecretStr | None = None
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: list(JWT_ALGORITHMS))
    audience: str | None = None
    issuer: str | None = None
    username_claim: str = "sub"
    groups_claim: str = "groups"
    leeway_seconds: float = 30.0


class AuthConfig(BaseModel):
    """How a CONNECT is authenticated: the methods, tried in ``chain`` order, and anonymity."""

    allow_anonymous: bool = False
    chain: list[AuthMethod] = Field(default_factory=lambda: list(DEFAULT_CHAIN))
    password_file: Path | None = None
    # Users whose last good password is remembered (as an HMAC under a per-process key), so a
    # reconnect skips the argon2 check; 0: every CONNECT is checked in full.
    password_cache_size: int = Field(default=100_000, ge=0)
    jwt: JwtConfig | None = None
    # TLS client certificates: the CA that signs them (on the TLS listener), whether a client
    # without one is refused at the handshake, and which field of the certificate names it.
    tls_cafile: Path | None = None
    tls_require_client_cert: bool = False
    cert_username: CertUsername = "cn"
    # As mosquitto's use_username_as_clientid: an authenticated client's id is its username,
    # so no user can take over (kick off) another user's session by reusing its client id.
    username_as_client_id: bool = False

    def methods(self) -> list[AuthMethod]:
        """The configured methods, in chain order."""
        configured: dict[AuthMethod, bool] = {
            "certificate": self.tls_cafile is not None,
            "password_file": self.password_file is not None,
            "jwt": self.jwt is not None,
        }
        return [m for m in self.chain if configured[m]]


class LimitsConfig(BaseModel):
    """What one node lets one client, one address and everyone together use (0 = no limit)."""

    max_connections: int = Field(default=100_000, ge=0)
    # New connections per second from one source address (token bucket of ``connect_burst``).
    connect_rate_per_source: float = Field(default=0.0, ge=0)
    connect_burst_per_source: int = Field(default=100, ge=1)
    # A socket that sends no CONNECT within this is closed (slowloris).
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    max_subscriptions_per_client: int = Field(default=1000, ge=0)
    # PUBLISH packets per second per client (token bucket of ``publish_burst``); over it the
    # node stops reading the client's socket until tokens are back.
    publish_rate_per_client: float = Field(default=0.0, ge=0)
    publish_burst_per_client: int = Field(default=1000, ge=1)
    max_payload_size: int = Field(default=0, ge=0)
    # Bytes queued to a client that does not read; above it QoS 0 messages to it are dropped
    # and QoS 1/2 wait in Kafka (catch-up), so a stalled reader cannot grow the node's memory.
    max_write_buffer: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)


class SecurityConfig(BaseModel):
    """Authentication, the ACL file and limits of one node."""

    auth: AuthConfig = Field(default_factory=AuthConfig)
    acl_file: Path | None = None
    limits: LimitsConfig = Field(default_factory=LimitsConfig)


class SecurityConfigError(Exception):
    """A password file, key, JWKS or ACL file that cannot be used; the message names the
    setting, the file and (where there is one) the line."""
