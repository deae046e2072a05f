"""The password file: lines ``username:<argon2id hash>``, and the method that checks them.

The format is mosquitto's ``password_file`` (``#`` comments and blank lines allowed), with
argon2id hashes (argon2-cffi) in place of mosquitto's PBKDF2 ones. ``bayou passwd`` edits the
file; the node reads it at start and again whenever it changes on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from ingress.security.config import SecurityConfigError
from ingress.security.identity import BAD_USERNAME_OR_PASSWORD, Credentials, Identity, Refused

log = logging.getLogger(__name__)

SETTING = "BAYOU_AUTH_PASSWORD_FILE"
NEW_FILE_MODE = 0o600


def new_hasher() -> PasswordHasher:
    """The argon2id parameters of new hashes: OWASP's recommended minimum (19 MiB, 2 passes,
    1 lane), about 20 ms of CPU per check here. argon2-cffi's default (64 MiB, 3 passes, 4
    lanes) costs 150 ms: a node would accept about 11 password CONNECTs a second on 2 cores
    (docs/performance.md, connect_auth). Existing hashes keep the parameters they carry."""
    return PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


def username_problem(username: str) -> str | None:
    """Why ``username`` cannot be in a password file, or None when it can."""
    if not username:
        return "the username is empty"
    if ":" in username:
        return "a username cannot hold ':' (it ends the username in the file)"
    if "\n" in username or "\r" in username:
        return "a username cannot hold a line break"
    if "\x00" in username:
        return "a username cannot hold U+0000 (MQTT forbids it in strings)"
    if username != username.strip():
        return "a username cannot start or end with white space"
    if username.startswith("#"):
        return "a username cannot start with '#' (the line would be a comment)"
    try:
        username.encode("utf-8")
    except UnicodeEncodeError:
        return "the username is not valid UTF-8"
    return None


@dataclass
class _Entry:
    username: str
    hash: str


class PasswordFile:
    """The lines of a password file; comments and order are kept when it is saved again."""

    def __init__(self, path: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self.hasher = hasher or new_hasher()
        self._lines: list[str | _Entry] = []

    @classmethod
    def load(cls, path: Path, hasher: PasswordHasher | None = None) -> PasswordFile:
        """Read ``path``; SecurityConfigError (setting, file, line) when it cannot be used."""
        pf = cls(path, hasher)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SecurityConfigError(f"{SETTING}={path}: cannot read it: {exc.strerror}") from None
        seen: set[str] = set()
        for number, raw in enumerate(data.splitlines(), start=1):
            pf._lines.append(pf._parse(raw, number, seen))
        return pf

    def _parse(self, raw: bytes, number: int, seen: set[str]) -> str | _Entry:
        where = f"{SETTING}={self.path}, line {number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecurityConfigError(f"{where}: not valid UTF-8") from None
        if not line.strip() or line.lstrip().startswith("#"):
            return line
        username, colon, hash_ = line.partition(":")
        if not colon:
            raise SecurityConfigError(f"{where}: expected `username:hash`, found no ':'")
        problem = username_problem(username)
        if problem:
            raise SecurityConfigError(f"{where}: {problem}")
        if username in seen:
            raise SecurityConfigError(f"{where}: user {username!r} appears twice")
        hash_ = hash_.strip()
        try:
            extract_parameters(hash_)
        except (InvalidHashError, ValueError):
            raise SecurityConfigError(
                f"{where}: the hash of {username!r} is not an argon2 hash (a mosquitto_passwd "
                "file? set the password again with `bayou passwd add`)"
            ) from None
        seen.add(username)
        return _Entry(username, hash_)

    def users(self) -> list[str]:
        """The usernames, in file order."""
        return [e.username for e in self._lines if isinstance(e, _Entry)]

    def hash_of(self, username: str) -> str | None:
        """The stored hash of ``username`` (None: no such user)."""
        for e in self._lines:
            if isinstance(e, _Entry) and e.username == username:
                return e.hash
        return None

    def add(self, username: str, password: str | bytes) -> bool:
        """Set ``username``'s password (a new salted hash); True when the user was new.

        ValueError for a username the file cannot hold or an empty password.
        """
        problem = username_problem(username)
        if problem:
            raise ValueError(problem)
        if not password:
            raise ValueError("the password is empty")
        hash_ = self.hasher.hash(password)
        for e in self._lines:
            if isinstance(e, _Entry) and e.username == username:
                e.hash = hash_
                return False
        self._lines.append(_Entry(username, hash_))
        return True

    def remove(self, username: str) -> None:
        """Remove ``username``; KeyError when the file has no such user."""
        for i, e in enumerate(self._lines):
            if isinstance(e, _Entry) and e.username == username:
                del self._lines[i]
                return
        raise KeyError(username)

    def text(self) -> str:
        """The file's content."""
        lines = [e if isinstance(e, str) else f"{e.username}:{e.hash}" for e in self._lines]
        return "".join(f"{line}\n" for line in lines)

    def save(self) -> None:
        """Write the file atomically (a temporary file renamed over it), so a node reading it
        never sees half a file. A new file is mode 0600; an existing one keeps its mode."""
        # A symlinked file (a config management or secrets mount) stays a symlink: replace
        # its target.
        target = self.path.resolve() if self.path.is_symlink() else self.path
        try:
            old = target.stat()
            mode, owner = stat.S_IMODE(old.st_mode), (old.st_uid, old.st_gid)
        except FileNotFoundError:
            mode, owner = NEW_FILE_MODE, None
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), mode)
                if owner is not None:
                    # Root editing a file the node's user owns: keep it readable by the node.
                    with contextlib.suppress(PermissionError):
                        os.fchown(f.fileno(), *owner)
                f.write(self.text())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)


class PasswordFileAuth:
    """Username and password checked against a password file (``BAYOU_AUTH_PASSWORD_FILE``).

    A user the file does not know is passed on (None) to the next method; a wrong password
    is refused. ``authenticate`` spends one argon2 verification (about 20 ms of CPU, outside
    the GIL), so call it off the event loop (it is thread-safe). A user's last good password
    is remembered as an HMAC under a key that lives only in this process, with the hash it
    matched, for ``cache_size`` users (least recently used forgotten first): a device that
    reconnects is checked in microseconds, and a changed password (another hash in the file)
    no longer matches.
    """

    name = "password_file"

    def __init__(self, path: Path, cache_size: int = 100_000) -> None:
        self.path = path
        self._file = PasswordFile.load(path)
        self._stamp = self._stat()
        self._dummy = self._dummy_hash()
        self._cache_size = cache_size
        self._key = secrets.token_bytes(32)
        self._good: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _dummy_hash(self) -> str:
        # Unknown users are verified against this, hashed with the parameters of the file's
        # own hashes, so the time taken does not tell an unknown user from a wrong password.
        users = self._file.users()
        hasher = new_hasher()
        if users:
            first = self._file.hash_of(users[0])
            assert first is not None
            hasher = PasswordHasher.from_parameters(extract_parameters(first))
        return hasher.hash(secrets.token_bytes(16))

    def reload_if_changed(self) -> None:
        """Read the file again when it changed on disk; a bad new version keeps the old one."""
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._file = PasswordFile.load(self.path)
        except SecurityConfigError as exc:
            log.error("%s; keeping the users read before", exc)
            return
        self._dummy = self._dummy_hash()
        log.info("%s=%s reloaded: %d users", SETTING, self.path, len(self._file.users()))

    def authenticate(self, creds: Credentials) -> Identity | None:
        """The user's identity, None for no username or an unknown user, Refused otherwise."""
        if creds.username is None:
            return None
        self.reload_if_changed()
        stored = self._file.hash_of(creds.username)
        password = creds.password or b""
        if stored is None:
            _verify(self._dummy, password)
            return None
        mac = hmac.new(self._key, creds.username.encode() + b"\0" + password, hashlib.sha256)
        digest = mac.digest()
        if self._remembered(creds.username, digest, stored):
            return Identity(creds.username, frozenset(), self.name)
        if not _verify(stored, password):
            raise Refused(
                "bad_credentials",
                f"wrong password for user {creds.username!r} ({SETTING})",
                BAD_USERNAME_OR_PASSWORD,
            )
        self._remember(creds.username, digest, stored)
        return Identity(creds.username, frozenset(), self.name)

    def _remembered(self, username: str, digest: bytes, stored: str) -> bool:
        with self._lock:
            hit = self._good.get(username)
            if hit is None:
                return False
            self._good.move_to_end(username)
        return hit[1] == stored and hmac.compare_digest(hit[0], digest)

    def _remember(self, username: str, digest: bytes, stored: str) -> None:
        if not self._cache_size:
            return
        with self._lock:
            self._good[username] = (digest, stored)
            self._good.move_to_end(username)
            while len(self._good) > self._cache_size:
                self._good.popitem(last=False)


def _verify(hash_: str, password: bytes) -> bool:
    try:
        return PasswordHasher().verify(hash_, password)  # the parameters come from the hash
    except (VerificationError, InvalidHashError):
        return False
