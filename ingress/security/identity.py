"""Credentials in, an identity or a refusal out: the authentication chain of a CONNECT.

Each method (password file, JWT, TLS client certificate) looks at the credentials and either
accepts them (an :class:`Identity`), refuses them (raises :class:`Refused`), or passes
(returns None: not credentials it knows, e.g. a password file that has no such user). The
chain tries the methods in order; the first to accept or refuse decides. When every method
passes, the client is anonymous, which is allowed only when configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# CONNACK return codes of MQTT 3.1.1 §3.2.2.3 used for refusals.
BAD_USERNAME_OR_PASSWORD = 4
NOT_AUTHORIZED = 5

# The metric label of a refusal (``bayou_auth_failures_total{reason}``): a fixed set, never
# client input. The client is not told which part was wrong (only CONNACK 4 or 5).
FailureReason = Literal[
    "no_credentials",  # nothing to authenticate with, anonymous not allowed
    "bad_credentials",  # unknown user or wrong password
    "bad_token",  # a JWT that does not verify (signature, audience, issuer, claims)
    "expired_token",  # a JWT past its expiry (or before its not-before)
    "bad_certificate",  # a client certificate without the configured name field
]
FAILURE_REASONS: tuple[FailureReason, ...] = (
    "no_credentials",
    "bad_credentials",
    "bad_token",
    "expired_token",
    "bad_certificate",
)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a CONNECT and its socket offer: client id, username, password, TLS certificate."""

    client_id: str
    username: str | None
    password: bytes | None
    # ``ssl.SSLSocket.getpeercert()`` of a verified client certificate (None: none offered).
    peer_cert: dict[str, Any] | None = None
    peer: str = "?"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is: a username (None when anonymous), groups, and the method used."""

    username: str | None
    groups: frozenset[str] = field(default_factory=frozenset)
    method: str = "anonymous"

    @property
    def anonymous(self) -> bool:
        """True for a client that authenticated with nothing."""
        return self.username is None


ANONYMOUS = Identity(None, frozenset(), "anonymous")


class Refused(Exception):
    """Authentication failed: CONNACK ``code`` (4 or 5), counted under ``reason``.

    ``detail`` is for the node's log only (never sent to the client).
    """

    def __init__(self, reason: FailureReason, detail: str, code: int = NOT_AUTHORIZED) -> None:
        super().__init__(detail)
        self.reason: FailureReason = reason
        self.detail = detail
        self.code = code


class Authenticator(Protocol):
    """One authentication method."""

    name: str

    def authenticate(self, creds: Credentials) -> Identity | None:
        """An identity, None to let the next method decide, or raise :class:`Refused`."""


class AuthChain:
    """The configured methods in order, then anonymous access if it is allowed."""

    def __init__(self, methods: Sequence[Authenticator], allow_anonymous: bool) -> None:
        self.methods = list(methods)
        self.allow_anonymous = allow_anonymous

    def authenticate(self, creds: Credentials) -> Identity:
        """The client's identity, or raise :class:`Refused`."""
        for method in self.methods:
            identity = method.authenticate(creds)
            if identity is not None:
                return identity
        if creds.username is None and creds.password is None and creds.peer_cert is None:
            if self.allow_anonymous:
                return ANONYMOUS
            raise Refused("no_credentials", "no credentials and anonymous access is off")
        if self.allow_anonymous and not self.methods:
            # Nothing configured checks credentials (a development stack): like mosquitto
            # with allow_anonymous and no password file, a username is just a name.
            return Identity(creds.username, frozenset(), "anonymous")
        raise Refused(
            "bad_credentials", "no method accepted the credentials", BAD_USERNAME_OR_PASSWORD
        )
