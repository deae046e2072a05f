"""TLS client certificates: the client's name from the certificate its handshake verified.

The TLS listener checks the certificate against ``BAYOU_TLS_CAFILE`` during the handshake
(``ingress.wire.listeners.tls_context``); by the time a CONNECT arrives the certificate is
trusted, and this method only reads the configured field of it (``BAYOU_TLS_CERT_USERNAME``),
like mosquitto's ``use_identity_as_username``/``use_subject_as_username``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ingress.security.config import CertUsername
from ingress.security.identity import NOT_AUTHORIZED, Credentials, Identity, Refused

SETTING = "BAYOU_TLS_CERT_USERNAME"
# Keys of the subjectAltName entries in ``ssl.SSLSocket.getpeercert()``.
_SAN_TYPES: dict[CertUsername, str] = {"san_dns": "DNS", "san_email": "email", "san_uri": "URI"}


def peer_cert_of(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The verified client certificate of a connection (``getpeercert()``), or None: plain TCP,
    WebSocket, or a TLS client that sent none."""
    cert = transport.get_extra_info("peercert")
    # An empty dict is what ssl gives for a certificate it did not verify: treat as none.
    return cert if isinstance(cert, dict) and cert else None


def cert_username(cert: dict[str, Any], field: CertUsername) -> str | None:
    """The ``field`` of ``cert``: the subject's (first) common name, or the first subject
    alternative name of that type; None when the certificate has none."""
    if field == "cn":
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName" and value:
                    return str(value)
        return None
    wanted = _SAN_TYPES[field]
    for kind, value in cert.get("subjectAltName", ()):
        if kind == wanted and value:
            return str(value)
    return None


class CertificateAuth:
    """The client is who its verified certificate names (the CONNECT username is not used)."""

    name = "certificate"

    def __init__(self, cert_username: CertUsername) -> None:
        self.field = cert_username

    def authenticate(self, creds: Credentials) -> Identity | None:
        """The certificate's name; None without a certificate; Refused when it has no name."""
        if not creds.peer_cert:
            return None
        username = cert_username(creds.peer_cert, self.field)
        if username is None or "\x00" in username:
            raise Refused(
                "bad_certificate",
                f"client certificate has no {self.field} to name the client ({SETTING})",
                NOT_AUTHORIZED,
            )
        return Identity(username, frozenset(), self.name)
