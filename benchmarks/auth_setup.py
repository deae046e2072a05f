"""Authentication for ``connect_auth``: each broker's password file, made with its own tool,
and restarting a broker with authentication required or with anonymous access.

mosquitto: ``mosquitto_passwd -b -c`` (mosquitto 2's default hash, sha512-pbkdf2), then
``allow_anonymous false`` and ``password_file``. Bayou: ``bayou passwd add --password-stdin``
(argon2id), then ``BAYOU_AUTH_PASSWORD_FILE`` and ``BAYOU_ALLOW_ANONYMOUS=false``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from benchmarks.brokers import Bayou, Broker, BrokerError, Mosquitto, find_bayou

USERNAME = "bench-device"
# Not a secret: the brokers are private, on 127.0.0.1, and gone after the run.
PASSWORD = "bench-password-0123456789"


def find_mosquitto_passwd() -> str:
    """Path of ``mosquitto_passwd`` (Debian's mosquitto package installs it in /usr/bin)."""
    found = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if os.access("/usr/bin/mosquitto_passwd", os.X_OK) else None
    )
    if not found:
        raise BrokerError("mosquitto_passwd not found: install the Debian mosquitto package")
    return found


def _run(cmd: list[str], what: str, stdin: str | None = None) -> None:
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False, timeout=60)
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip()
        raise BrokerError(f"{what} exited {out.returncode}: {detail}")


def password_file(broker: Broker) -> Path:
    """The broker's password file with the one benchmark user, made once per broker."""
    if isinstance(broker, Mosquitto):
        path = broker.workdir / "passwd"
        if not path.exists():
            cmd = [find_mosquitto_passwd(), "-b", "-c", str(path), USERNAME, PASSWORD]
            _run(cmd, "mosquitto_passwd")
        return path
    if isinstance(broker, Bayou):
        path = broker.workdir / "passwd"
        if not path.exists():
            cmd = [find_bayou(), "passwd", "add", str(path), USERNAME, "--password-stdin"]
            _run(cmd, "bayou passwd add", stdin=PASSWORD + "\n")
        return path
    raise BrokerError(f"connect_auth does not know how to configure {broker.name}")


def restart_with_auth(broker: Broker, required: bool, full_check: bool = False) -> float:
    """Restart ``broker`` requiring a password (``required``) or allowing anonymous clients
    (as the harness starts it); seconds until it listened again. ``full_check``: Bayou does
    not remember good passwords (every CONNECT pays argon2, as on a node just started)."""
    pf = password_file(broker) if required else None
    if isinstance(broker, Mosquitto):
        broker.password_file = pf
    elif isinstance(broker, Bayou):
        env = {} if pf is None else {
            "BAYOU_AUTH_PASSWORD_FILE": str(pf), "BAYOU_ALLOW_ANONYMOUS": "false",
        }  # fmt: skip
        if pf is not None and full_check:
            env["BAYOU_AUTH_PASSWORD_CACHE_SIZE"] = "0"
        broker.extra_env = env
    return broker.restart()
