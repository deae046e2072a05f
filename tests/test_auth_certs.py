"""TLS client certificates: real handshakes over loopback against the TLS listener (a CA, a
server and clients made with ``cryptography``), and the username read from the certificate."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bayou.net import free_port
from ingress.config import IngressConfig
from ingress.security.certs import CertificateAuth, cert_username, peer_cert_of
from ingress.security.config import AuthConfig, CertUsername, SecurityConfig
from ingress.security.identity import NOT_AUTHORIZED, Credentials, Identity, Refused
from ingress.wire.listeners import (
    ListenerError,
    close_listeners,
    start_extra_listeners,
    tls_context,
)
from tests.pki import CA, write_pem

HOST = "127.0.0.1"

# A certificate as ``getpeercert()`` gives it (the shape the method reads).
PEERCERT: dict[str, Any] = {
    "subject": ((("organizationName", "Bayou tests"),), (("commonName", "device-1"),)),
    "subjectAltName": (
        ("IP Address", "10.0.0.1"),
        ("DNS", "device-1.example"),
        ("DNS", "alias.example"),
        ("email", "device-1@example.com"),
        ("URI", "spiffe://example/device-1"),
    ),
}


# The username from a certificate (list in, list out) ------------------------------------------


@pytest.mark.parametrize(
    ("field", "username"),
    [
        ("cn", "device-1"),
        ("san_dns", "device-1.example"),  # the first of its type
        ("san_email", "device-1@example.com"),
        ("san_uri", "spiffe://example/device-1"),
    ],
)
def test_username_field(field: CertUsername, username: str) -> None:
    assert cert_username(PEERCERT, field) == username
    identity = CertificateAuth(field).authenticate(Credentials("c", None, None, PEERCERT))
    assert identity == Identity(username, frozenset(), "certificate")


def test_connect_username_does_not_override_the_certificate() -> None:
    creds = Credentials("c", "someone-else", b"pw", PEERCERT)
    identity = CertificateAuth("cn").authenticate(creds)
    assert identity is not None and identity.username == "device-1"


@pytest.mark.parametrize("cert", [None, {}])
def test_no_certificate_passes_to_the_next_method(cert: dict[str, Any] | None) -> None:
    assert CertificateAuth("cn").authenticate(Credentials("c", "u", b"p", cert)) is None


@pytest.mark.parametrize(
    ("field", "cert"),
    [
        ("cn", {"subject": ((("organizationName", "Bayou tests"),),)}),
        ("san_dns", {"subject": PEERCERT["subject"]}),
        ("san_email", {"subjectAltName": (("DNS", "x.example"),)}),
        ("san_uri", {"subjectAltName": ()}),
    ],
)
def test_certificate_without_the_field_is_refused_with_code_5(
    field: CertUsername, cert: dict[str, Any]
) -> None:
    with pytest.raises(Refused) as err:
        CertificateAuth(field).authenticate(Credentials("c", None, None, cert))
    assert (err.value.reason, err.value.code) == ("bad_certificate", NOT_AUTHORIZED)
    assert "BAYOU_TLS_CERT_USERNAME" in err.value.detail
    assert CertificateAuth(field).name == "certificate"


# Real handshakes ------------------------------------------------------------------------------


@dataclass
class Pki:
    """Files of a CA, a server certificate it signs, and clients' certificates."""

    dir: Path
    ca: CA
    ca_file: Path
    server: Path

    def client(
        self,
        cn: str | None,
        ca: CA | None = None,
        dns: list[str] | None = None,
        emails: list[str] | None = None,
        uris: list[str] | None = None,
    ) -> Path:
        cert, key = (ca or self.ca).issue(cn, dns=dns, emails=emails, uris=uris)
        return write_pem(self.dir / f"client-{cn}-{id(cert)}.pem", cert, key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CA.create("Bayou test CA")
    server_cert, server_key = ca.issue("localhost", dns=["localhost"], ips=[HOST], server=True)
    return Pki(
        tmp_path,
        ca,
        write_pem(tmp_path / "ca.pem", ca.cert, None),
        write_pem(tmp_path / "server.pem", server_cert, server_key),
    )


class Recorder(asyncio.Protocol):
    """Records the client certificate of each connection that completes the handshake."""

    def __init__(self, seen: asyncio.Queue[dict[str, Any] | None]) -> None:
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.seen.put_nowait(peer_cert_of(transport))
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"hello")


@dataclass
class Server:
    port: int
    seen: asyncio.Queue[dict[str, Any] | None]


async def serve(pki: Pki, require: bool) -> AsyncIterator[Server]:
    port = free_port()
    auth = AuthConfig(tls_cafile=pki.ca_file, tls_require_client_cert=require)
    config = IngressConfig(
        kafka_bootstrap="unused:9",  # only the TLS listener runs
        mqtt_host=HOST,
        tls_port=port,
        tls_certfile=pki.server,
        security=SecurityConfig(auth=auth),
    )
    seen: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    listeners = await start_extra_listeners(config, lambda: Recorder(seen))
    try:
        yield Server(port, seen)
    finally:
        await close_listeners(listeners)


@pytest.fixture
async def server(pki: Pki, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """The TLS listener; ``request.param``: whether it requires a client certificate."""
    async for s in serve(pki, require=request.param):
        yield s


REQUIRED = pytest.mark.parametrize("server", [True], indirect=True, ids=["required"])
OPTIONAL = pytest.mark.parametrize("server", [False], indirect=True, ids=["optional"])


def client_context(pki: Pki, cert: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    if cert is not None:
        ctx.load_cert_chain(cert)
    return ctx


async def exchange(server: Server, ctx: ssl.SSLContext) -> bytes:
    """Connect, read the server's greeting; raises when the server refused the handshake."""
    reader, writer = await asyncio.open_connection(HOST, server.port, ssl=ctx)
    try:
        data = await reader.read(5)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        return data
    finally:
        writer.close()
        # The server may already have dropped the connection mid-shutdown.
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


@REQUIRED
async def test_good_client_certificate_names_the_client(pki: Pki, server: Server) -> None:
    cert = pki.client("device-1", dns=["device-1.example"], emails=["d1@example.com"],
                      uris=["spiffe://example/device-1"])  # fmt: skip
    assert await exchange(server, client_context(pki, cert)) == b"hello"
    peer = await server.seen.get()
    assert peer is not None
    usernames = [
        CertificateAuth(f).authenticate(Credentials("c", None, None, peer))
        for f in ("cn", "san_dns", "san_email", "san_uri")
    ]
    assert [i.username for i in usernames if i] == [
        "device-1",
        "device-1.example",
        "d1@example.com",
        "spiffe://example/device-1",
    ]


@REQUIRED
async def test_certificate_without_cn_gets_through_tls_and_is_refused_by_the_method(
    pki: Pki, server: Server
) -> None:
    cert = pki.client(None, dns=["only-san.example"])
    assert await exchange(server, client_context(pki, cert)) == b"hello"
    peer = await server.seen.get()
    with pytest.raises(Refused):
        CertificateAuth("cn").authenticate(Credentials("c", None, None, peer))
    identity = CertificateAuth("san_dns").authenticate(Credentials("c", None, None, peer))
    assert identity is not None and identity.username == "only-san.example"


@pytest.mark.parametrize("server", [True, False], indirect=True, ids=["required", "optional"])
async def test_certificate_of_another_ca_fails_the_handshake(pki: Pki, server: Server) -> None:
    stranger = pki.client("device-1", ca=CA.create("Another CA"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await exchange(server, client_context(pki, stranger))
    assert server.seen.empty()  # the connection never reached the protocol


@REQUIRED
async def test_no_certificate_fails_the_handshake_when_required(pki: Pki, server: Server) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await exchange(server, client_context(pki, None))
    assert server.seen.empty()


@OPTIONAL
async def test_no_certificate_is_let_through_when_optional(pki: Pki, server: Server) -> None:
    assert await exchange(server, client_context(pki, None)) == b"hello"
    assert await server.seen.get() is None  # the password or JWT methods decide
    cert = pki.client("device-2")
    assert await exchange(server, client_context(pki, cert)) == b"hello"
    peer = await server.seen.get()
    identity = CertificateAuth("cn").authenticate(Credentials("c", None, None, peer))
    assert identity is not None and identity.username == "device-2"


async def test_plain_tcp_has_no_peer_certificate() -> None:
    seen: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    server = await asyncio.get_running_loop().create_server(lambda: Recorder(seen), HOST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        assert await reader.read(5) == b"hello"
        writer.close()
        await writer.wait_closed()
        assert await seen.get() is None
    finally:
        server.close()
        await server.wait_closed()


# The listener's configuration -----------------------------------------------------------------


def test_require_client_cert_needs_a_cafile(pki: Pki) -> None:
    with pytest.raises(ListenerError) as err:
        tls_context(pki.server, None, None, require_client_cert=True)
    assert "BAYOU_TLS_REQUIRE_CLIENT_CERT" in str(err.value)
    assert "BAYOU_TLS_CAFILE" in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it"),
        (b"not a certificate\n", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "cannot load"),
    ],
)
def test_unusable_cafile_names_the_setting(pki: Pki, content: bytes | None, message: str) -> None:
    cafile = pki.dir / "bad-ca.pem"
    if content is not None:
        cafile.write_bytes(content)
    with pytest.raises(ListenerError) as err:
        tls_context(pki.server, None, cafile)
    assert f"BAYOU_TLS_CAFILE={cafile}" in str(err.value)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("cafile", "require", "mode"),
    [(False, False, ssl.CERT_NONE), (True, False, ssl.CERT_OPTIONAL),
     (True, True, ssl.CERT_REQUIRED)],
)  # fmt: skip
def test_verify_mode(pki: Pki, cafile: bool, require: bool, mode: ssl.VerifyMode) -> None:
    ctx = tls_context(pki.server, None, pki.ca_file if cafile else None, require)
    assert ctx.verify_mode == mode
