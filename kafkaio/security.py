"""How Bayou's Kafka clients authenticate and encrypt: SASL (PLAIN, SCRAM) and TLS.

Plain data built from the settings (``BAYOU_KAFKA_SECURITY_PROTOCOL`` and friends) and handed
to every confluent-kafka client through :func:`kafkaio.clients.client_conf`, so the producer,
the consumers and the admin client of every process connect alike. The passwords are
:class:`~pydantic.SecretStr`: they show as ``**********`` in a repr, a log line or an error,
and leave their wrapper only in :meth:`KafkaSecurity.properties`, for librdkafka.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

_SASL: frozenset[str] = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_TLS: frozenset[str] = frozenset({"SSL", "SASL_SSL"})


class KafkaSecurity(BaseModel):
    """The security settings of a Kafka connection (default: PLAINTEXT, nothing else).

    Field names are those of the settings without their ``BAYOU_KAFKA_`` prefix, so that
    :meth:`problems` can name the setting at fault.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # TLS: the CA that signed the brokers' certificates (unset: the system's CAs), and a
    # client certificate for brokers that require one (mutual TLS).
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None

    @property
    def sasl(self) -> bool:
        """Whether the protocol authenticates with SASL."""
        return self.security_protocol in _SASL

    @property
    def tls(self) -> bool:
        """Whether the protocol encrypts with TLS."""
        return self.security_protocol in _TLS

    def problems(self) -> list[tuple[str, str]]:
        """What is wrong with the combination, as (field, message) pairs; empty when sound.

        Settings that the protocol would ignore count as wrong: a password set for a
        PLAINTEXT connection means the operator believes the connection is secured.
        """
        out: list[tuple[str, str]] = []
        proto = self.security_protocol
        sasl_fields = ("sasl_mechanism", "sasl_username", "sasl_password")
        if self.sasl:
            for name in sasl_fields:
                if not getattr(self, name):
                    out.append((name, f"is required with security protocol {proto}"))
        else:
            for name in sasl_fields:
                if getattr(self, name):
                    out.append((name, f"is set, but security protocol {proto} does not use SASL"))
        files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if not self.tls:
            for name in (*files, "ssl_key_password"):
                if getattr(self, name):
                    out.append((name, f"is set, but security protocol {proto} does not use TLS"))
            return out
        for name in files:
            path: Path | None = getattr(self, name)
            if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
                out.append((name, f"file {str(path)!r} does not exist or is not readable"))
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            missing = "ssl_keyfile" if self.ssl_keyfile is None else "ssl_certfile"
            out.append((missing, "is required with a client certificate (certfile and keyfile)"))
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            out.append(("ssl_key_password", "is set without a key file"))
        return out

    def properties(self) -> dict[str, str]:
        """The librdkafka properties (``security.protocol``, ``sasl.*``, ``ssl.*``).

        The only place the passwords are revealed: the dict goes to librdkafka and nowhere
        else (never log it).
        """
        props = {"security.protocol": self.security_protocol.lower()}
        if self.sasl:
            assert self.sasl_mechanism and self.sasl_username and self.sasl_password
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.username"] = self.sasl_username
            props["sasl.password"] = self.sasl_password.get_secret_value()
        if self.tls:
            files = {
                "ssl.ca.location": self.ssl_cafile,
                "ssl.certificate.location": self.ssl_certfile,
                "ssl.key.location": self.ssl_keyfile,
            }
            props.update({k: str(v) for k, v in files.items() if v is not None})
            if self.ssl_key_password is not None:
                props["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return props

    def describe(self) -> str:
        """One line for people (``bayou up``'s banner, error messages); no secret in it."""
        parts: list[str] = [self.security_protocol]
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as user {self.sasl_username!r}")
        if self.tls:
            parts.append(f"CA {self.ssl_cafile}" if self.ssl_cafile else "system CAs")
            if self.ssl_certfile:
                parts.append(f"client certificate {self.ssl_certfile}")
        return ", ".join(parts)


PLAINTEXT = KafkaSecurity()
