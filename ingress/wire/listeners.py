"""The optional listeners besides plain TCP: MQTT over TLS, and MQTT over WebSocket.

Both serve the same protocol objects as the TCP listener (``MQTTConnection``): TLS through
asyncio's own SSL transport, WebSocket through ``websockets`` and the adapter transport in
``ingress.wire.websocket``.
"""

from __future__ import annotations

import asyncio
import errno
import http
import logging
import ssl
import sys
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from ingress.config import IngressConfig
from ingress.wire.websocket import WebSocketTransport

log = logging.getLogger(__name__)

WS_PATH = "/mqtt"
WS_SUBPROTOCOL = "mqtt"
# How long stopping waits for the WebSocket closing handshakes.
_CLOSE_GRACE = 5.0


class ListenerError(Exception):
    """A listener cannot start; the message names the setting to change."""


class Listener(Protocol):
    """What the node keeps of a listener: something to close on stop."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


async def start_extra_listeners(
    config: IngressConfig, protocol_factory: Callable[[], asyncio.Protocol]
) -> list[Listener]:
    """Start the TLS and WebSocket listeners that ``config`` asks for (none, one or both).

    Raises ListenerError, naming the setting, when a certificate or key cannot be used or a
    port is taken; nothing is left listening then.
    """
    started: list[Listener] = []
    try:
        if config.tls_port is not None:
            auth = config.security.auth
            ctx = tls_context(
                config.tls_certfile, config.tls_keyfile, auth.tls_cafile,
                auth.tls_require_client_cert,
            )  # fmt: skip
            started.append(await _tls_listener(config, ctx, protocol_factory))
            log.info("MQTT over TLS on %s:%s", config.mqtt_host, config.tls_port)
        if config.ws_port is not None:
            started.append(await _ws_listener(config, protocol_factory))
            log.info("MQTT over WebSocket on ws://%s:%s%s", config.mqtt_host, config.ws_port,
                     WS_PATH)  # fmt: skip
    except BaseException:
        await close_listeners(started)
        raise
    return started


async def close_listeners(listeners: Iterable[Listener]) -> None:
    """Close ``listeners`` and wait (a few seconds at most) for their connections to end."""
    listeners = list(listeners)
    for listener in listeners:
        listener.close()
    try:
        async with asyncio.timeout(_CLOSE_GRACE):
            for listener in listeners:
                await listener.wait_closed()
    except TimeoutError:
        log.warning("listeners still closing after %.0f s; going on", _CLOSE_GRACE)


# TLS ------------------------------------------------------------------------------------------


def tls_context(
    certfile: Path | None,
    keyfile: Path | None,
    cafile: Path | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) with the certificate chain and key of the settings.

    ``keyfile`` unset: the key is in ``certfile``. With ``cafile``, clients may present a
    certificate signed by it (verified in the handshake); ``require_client_cert``: they must.
    Errors name BAYOU_TLS_CERTFILE, BAYOU_TLS_KEYFILE or BAYOU_TLS_CAFILE.
    """
    if require_client_cert and cafile is None:
        raise ListenerError(
            "BAYOU_TLS_REQUIRE_CLIENT_CERT is on but BAYOU_TLS_CAFILE is not set; set it to the "
            "PEM file of the CA that signs the client certificates"
        )
    if certfile is None:
        raise ListenerError(
            "BAYOU_TLS_PORT is set but BAYOU_TLS_CERTFILE is not; set it to a PEM file with the "
            "server certificate (and its chain)"
        )
    cert_pem = _read("BAYOU_TLS_CERTFILE", certfile)
    if "-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise ListenerError(f"BAYOU_TLS_CERTFILE={certfile}: no PEM certificate in it")
    if keyfile is None:
        if "PRIVATE KEY-----" not in cert_pem:
            raise ListenerError(
                f"BAYOU_TLS_KEYFILE is not set and BAYOU_TLS_CERTFILE={certfile} holds no "
                "private key; set BAYOU_TLS_KEYFILE to the PEM file of the key"
            )
    elif "PRIVATE KEY-----" not in _read("BAYOU_TLS_KEYFILE", keyfile):
        raise ListenerError(f"BAYOU_TLS_KEYFILE={keyfile}: no PEM private key in it")
    key_setting = f"BAYOU_TLS_KEYFILE={keyfile}" if keyfile else f"BAYOU_TLS_CERTFILE={certfile}"

    def no_password() -> str:
        # Without a callback, OpenSSL would prompt on the terminal for an encrypted key.
        raise ListenerError(f"{key_setting}: the private key is encrypted; give an unencrypted one")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile, keyfile, password=no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise ListenerError(
                f"{key_setting}: the private key does not match the certificate in "
                f"BAYOU_TLS_CERTFILE={certfile}"
            ) from None
        raise ListenerError(
            f"cannot load the certificate in BAYOU_TLS_CERTFILE={certfile} with the key in "
            f"{key_setting}: {exc.reason or exc}"
        ) from None
    if cafile is not None:
        _client_certs(ctx, cafile, require_client_cert)
    return ctx


def _client_certs(ctx: ssl.SSLContext, cafile: Path, required: bool) -> None:
    """Verify client certificates against ``cafile``; without one, a client is refused in the
    handshake (``required``) or goes on to authenticate otherwise (CERT_OPTIONAL)."""
    if "-----BEGIN CERTIFICATE-----" not in _read("BAYOU_TLS_CAFILE", cafile):
        raise ListenerError(f"BAYOU_TLS_CAFILE={cafile}: no PEM certificate in it")
    try:
        ctx.load_verify_locations(cafile=cafile)
    except ssl.SSLError as exc:
        raise ListenerError(
            f"BAYOU_TLS_CAFILE={cafile}: cannot load the CA certificates: {exc.reason or exc}"
        ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL


def _read(setting: str, path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise ListenerError(f"{setting}={path}: cannot read it: {exc.strerror}") from None


async def _tls_listener(
    config: IngressConfig, ctx: ssl.SSLContext, protocol_factory: Callable[[], asyncio.Protocol]
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    try:
        # The protocol sees the connection only once the handshake is done; a client that
        # fails it (plain MQTT on this port, a bad certificate) is dropped with a debug line.
        return await loop.create_server(
            protocol_factory, config.mqtt_host, config.tls_port, ssl=ctx,
            ssl_handshake_timeout=config.security.limits.connect_timeout_seconds,
            reuse_port=config.reuse_port or None,
        )  # fmt: skip
    except OSError as exc:
        raise _port_error(exc, "MQTT over TLS", config.mqtt_host, config.tls_port, "TLS") from None


def _port_error(exc: OSError, what: str, host: str, port: int | None, setting: str) -> Exception:
    if exc.errno == errno.EADDRINUSE:
        return ListenerError(
            f"{what} port {host}:{port} is already in use; set BAYOU_{setting}_PORT to a free port"
        )
    return ListenerError(f"{what} on {host}:{port} (BAYOU_{setting}_PORT): {exc.strerror}")


# WebSocket ------------------------------------------------------------------------------------


async def _ws_listener(
    config: IngressConfig, protocol_factory: Callable[[], asyncio.Protocol]
) -> Listener:
    async def handler(ws: ServerConnection) -> None:
        await WebSocketTransport(ws, protocol_factory()).run()

    try:
        server = await serve(
            handler,
            config.mqtt_host,
            config.ws_port,
            reuse_port=config.reuse_port or None,
            subprotocols=[Subprotocol(WS_SUBPROTOCOL)],
            process_request=_check_request,
            # A message may hold several packets; the framer enforces the packet size limit.
            max_size=2 * config.max_packet_size,
            # MQTT has its own keep-alive, enforced by the node; compression would add zlib
            # state to every connection.
            ping_interval=None,
            compression=None,
            logger=_QuietHandshakeLog(logging.getLogger("ingress.websocket"), {}),
        )
    except OSError as exc:
        raise _port_error(
            exc, "MQTT over WebSocket", config.mqtt_host, config.ws_port, "WS"
        ) from None
    return server


def _check_request(ws: ServerConnection, request: Request) -> Response | None:
    """Refuse other paths (404) and clients that do not offer the ``mqtt`` subprotocol (400)."""
    path = urlsplit(request.path).path
    if path != WS_PATH:
        return ws.respond(http.HTTPStatus.NOT_FOUND, f"MQTT over WebSocket is at {WS_PATH}\n")
    if "websocket" in request.headers.get("Upgrade", "").lower():
        offered = _offered_subprotocols(request.headers)
        if WS_SUBPROTOCOL not in offered:
            # [MQTT-6.0.0-3]: the client MUST offer "mqtt"; [MQTT-6.0.0-4]: the server returns it.
            return ws.respond(
                http.HTTPStatus.BAD_REQUEST,
                f"offer the WebSocket subprotocol {WS_SUBPROTOCOL!r} (MQTT 3.1.1 §6); "
                f"offered: {', '.join(offered) or 'none'}\n",
            )
    return None


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [
        p.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for p in value.split(",")
        if p.strip()
    ]


class _QuietHandshakeLog(logging.LoggerAdapter[logging.Logger]):
    """websockets logs every failed opening handshake (a port probe, a plain HTTP request) as
    an error with a traceback; that is the client's problem: one INFO line instead."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= logging.ERROR and msg == "opening handshake failed":
            kwargs.pop("exc_info", None)
            level, msg = logging.INFO, f"WebSocket opening handshake failed: {sys.exc_info()[1]!r}"
        super().log(level, msg, *args, **kwargs)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs  # keep websockets' own "extra"
