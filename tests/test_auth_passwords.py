"""The password file, its authentication method, and ``bayou passwd`` (run as a process)."""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from pydantic import SecretStr

from ingress.security.config import JwtConfig, SecurityConfigError
from ingress.security.identity import BAD_USERNAME_OR_PASSWORD, AuthChain, Credentials, Refused
from ingress.security.jwt_auth import JwtAuth
from ingress.security.passwords import PasswordFile, PasswordFileAuth, username_problem

BAYOU = [sys.executable, "-m", "bayou.cli"]


def cheap() -> PasswordHasher:
    """The cheapest argon2id parameters: the tests verify many hashes on a shared machine."""
    return PasswordHasher.from_parameters(CHEAPEST)


def write_users(path: Path, users: dict[str, str], header: str = "") -> Path:
    pf = PasswordFile(path, cheap())
    for user, password in users.items():
        pf.add(user, password)
    path.write_text(header + pf.text())
    return path


def creds(username: str | None, password: bytes | None) -> Credentials:
    return Credentials("client", username, password)


# The file -------------------------------------------------------------------------------------


def test_file_round_trip_keeps_comments_and_order(tmp_path: Path) -> None:
    path = write_users(tmp_path / "pw", {"bob": "b", "alice": "a"}, "# users of site 1\n\n")
    pf = PasswordFile.load(path, cheap())
    assert pf.users() == ["bob", "alice"]
    assert pf.add("carol", "c") is True
    assert pf.add("bob", "new") is False  # replaced, not duplicated
    pf.remove("alice")
    pf.save()
    text = path.read_text()
    assert text.startswith("# users of site 1\n\nbob:$argon2id$")
    again = PasswordFile.load(path)
    assert again.users() == ["bob", "carol"]
    bob = again.hash_of("bob")
    assert bob is not None and PasswordHasher().verify(bob, "new")


def test_hashes_are_salted_argon2id(tmp_path: Path) -> None:
    pf = PasswordFile(tmp_path / "pw")
    pf.add("a", "same")
    pf.add("b", "same")
    ha, hb = pf.hash_of("a"), pf.hash_of("b")
    assert ha and hb and ha != hb
    assert ha.startswith("$argon2id$")
    # OWASP's minimum for argon2id, not argon2-cffi's 64 MiB / 4 lanes (7x the CPU per CONNECT).
    assert "$m=19456,t=2,p=1$" in ha


def test_remove_unknown_user_is_a_key_error(tmp_path: Path) -> None:
    pf = PasswordFile.load(write_users(tmp_path / "pw", {"a": "x"}))
    with pytest.raises(KeyError):
        pf.remove("b")


@pytest.mark.parametrize(
    ("username", "problem"),
    [
        ("", "empty"),
        ("a:b", "':'"),
        ("a\nb", "line break"),
        ("a\x00b", "U+0000"),
        (" a", "white space"),
        ("#a", "comment"),
        ("a\udcff", "UTF-8"),  # an undecodable byte of argv (surrogateescape)
    ],
)
def test_usernames_the_file_cannot_hold(username: str, problem: str) -> None:
    found = username_problem(username)
    assert found is not None and problem in found
    with pytest.raises(ValueError) as err:
        PasswordFile(Path("unused")).add(username, "pw")
    assert problem in str(err.value)


def test_usernames_the_file_can_hold() -> None:
    assert [username_problem(u) for u in ("alice", "dev ice-1", "Müller", "a@b.c")] == [None] * 4


def test_empty_password_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        PasswordFile(Path("unused")).add("alice", "")


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b"# fine\nalice\n", 2, "no ':'"),
        (b"alice:nothash\n", 1, "not an argon2 hash"),
        (b"alice:$7$101$abc$def\n", 1, "mosquitto_passwd"),
        (b"\n:$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA\n", 2, "empty"),
        (b"\xff\xfe:x\n", 1, "UTF-8"),
    ],
)
def test_bad_line_names_setting_file_and_line(
    tmp_path: Path, content: bytes, line: int, problem: str
) -> None:
    path = tmp_path / "pw"
    path.write_bytes(content)
    with pytest.raises(SecurityConfigError) as err:
        PasswordFile.load(path)
    assert f"BAYOU_AUTH_PASSWORD_FILE={path}, line {line}:" in str(err.value)
    assert problem in str(err.value)


def test_duplicate_user_is_a_bad_line(tmp_path: Path) -> None:
    path = write_users(tmp_path / "pw", {"alice": "a"})
    path.write_text(path.read_text() * 2)
    with pytest.raises(SecurityConfigError, match="line 2: user 'alice' appears twice"):
        PasswordFile.load(path)


def test_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match=r"BAYOU_AUTH_PASSWORD_FILE=.*cannot read it"):
        PasswordFileAuth(tmp_path / "absent")


# The method -----------------------------------------------------------------------------------


@pytest.fixture
def auth(tmp_path: Path) -> PasswordFileAuth:
    return PasswordFileAuth(write_users(tmp_path / "pw", {"alice": "wonder", "bob": "b"}))


def test_right_password_is_accepted(auth: PasswordFileAuth) -> None:
    identity = auth.authenticate(creds("alice", b"wonder"))
    assert identity is not None
    assert (identity.username, identity.groups, identity.method) == (
        "alice",
        frozenset(),
        "password_file",
    )
    assert auth.name == "password_file"


@pytest.mark.parametrize("password", [b"wrong", b"", None, b"wonder\n"])
def test_wrong_password_is_refused_with_code_4(
    auth: PasswordFileAuth, password: bytes | None
) -> None:
    with pytest.raises(Refused) as err:
        auth.authenticate(creds("alice", password))
    assert (err.value.reason, err.value.code) == ("bad_credentials", BAD_USERNAME_OR_PASSWORD)
    assert b"wonder" not in err.value.detail.encode()


def test_unknown_user_and_no_username_pass_to_the_next_method(auth: PasswordFileAuth) -> None:
    assert auth.authenticate(creds("mallory", b"wonder")) is None
    assert auth.authenticate(creds(None, b"wonder")) is None
    assert auth.authenticate(creds(None, None)) is None


def test_unknown_user_is_verified_against_a_dummy_hash_of_the_same_cost(
    auth: PasswordFileAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing is not asserted; the test shows that an unknown user costs one verification with
    the parameters of the file's hashes, as a known one does (argon2's verify is spied on)."""
    verified: list[str] = []
    real = PasswordHasher.verify

    def spy(self: PasswordHasher, hash_: str | bytes, password: str | bytes) -> bool:
        verified.append(str(hash_))
        return real(self, hash_, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    assert auth.authenticate(creds("mallory", b"x")) is None
    with pytest.raises(Refused):
        auth.authenticate(creds("alice", b"x"))
    unknown, known = verified
    assert unknown.split("$")[:4] == known.split("$")[:4]  # argon2id, version, m/t/p
    assert unknown != known


def _spy_verify(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each argon2 verification (the real one runs)."""
    verified: list[str] = []
    real = PasswordHasher.verify

    def spy(self: PasswordHasher, hash_: str | bytes, password: str | bytes) -> bool:
        verified.append(str(hash_))
        return real(self, hash_, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    return verified


def test_a_reconnect_with_the_same_password_skips_argon2_and_a_wrong_one_does_not(
    auth: PasswordFileAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified = _spy_verify(monkeypatch)
    for _ in range(3):
        assert auth.authenticate(creds("alice", b"wonder")) is not None
    assert len(verified) == 1
    with pytest.raises(Refused):
        auth.authenticate(creds("alice", b"wonderr"))
    assert len(verified) == 2
    assert auth.authenticate(creds("alice", b"wonder")) is not None
    assert len(verified) == 2


def test_a_changed_password_in_the_file_is_not_answered_from_memory(
    auth: PasswordFileAuth,
) -> None:
    assert auth.authenticate(creds("alice", b"wonder")) is not None
    pf = PasswordFile.load(auth.path, cheap())
    pf.add("alice", "new")
    pf.save()
    with pytest.raises(Refused):
        auth.authenticate(creds("alice", b"wonder"))
    assert auth.authenticate(creds("alice", b"new")) is not None


def test_the_memory_of_good_passwords_is_bounded_and_can_be_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_users(tmp_path / "pw", {"a": "1", "b": "2", "c": "3"})
    verified = _spy_verify(monkeypatch)
    small = PasswordFileAuth(path, cache_size=2)
    for user, pw in (("a", b"1"), ("b", b"2"), ("c", b"3"), ("a", b"1")):
        assert small.authenticate(creds(user, pw)) is not None
    assert len(verified) == 4  # "a" was forgotten when "c" came
    assert small.authenticate(creds("c", b"3")) is not None
    assert len(verified) == 4
    off = PasswordFileAuth(path, cache_size=0)
    verified.clear()
    for _ in range(2):
        assert off.authenticate(creds("a", b"1")) is not None
    assert len(verified) == 2


def test_file_changes_are_picked_up_and_a_bad_change_keeps_the_old_users(
    auth: PasswordFileAuth,
) -> None:
    pf = PasswordFile.load(auth.path, cheap())
    pf.add("carol", "c")
    pf.remove("bob")
    pf.save()
    assert auth.authenticate(creds("carol", b"c")) is not None
    assert auth.authenticate(creds("bob", b"b")) is None
    auth.path.write_text("broken line\n")
    assert auth.authenticate(creds("carol", b"c")) is not None  # logged, old users kept


def test_non_ascii_user_and_binary_password(tmp_path: Path) -> None:
    pf = PasswordFile(tmp_path / "pw", cheap())
    pf.add("Müller", b"\x00\xff binary")
    pf.save()
    auth = PasswordFileAuth(pf.path)
    assert auth.authenticate(creds("Müller", b"\x00\xff binary")) is not None


# bayou passwd ---------------------------------------------------------------------------------


def passwd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BAYOU, "passwd", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_passwd_add_creates_a_0600_file_that_the_node_accepts(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    done = passwd("add", str(path), "alice", "--password-stdin", stdin="s3cret\n")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "s3cret" not in path.read_text()
    auth = PasswordFileAuth(path)
    assert auth.authenticate(creds("alice", b"s3cret")) is not None
    with pytest.raises(Refused):
        auth.authenticate(creds("alice", b"s3cret\n"))  # the line ending is not the password


def test_passwd_add_replaces_and_keeps_the_mode(tmp_path: Path) -> None:
    path = write_users(tmp_path / "pw", {"alice": "old", "bob": "b"})
    path.chmod(0o640)
    done = passwd("add", str(path), "alice", "--password-stdin", stdin="new\n")
    assert done.returncode == 0, done.stderr
    assert "updated" in done.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert passwd("list", str(path)).stdout == "alice\nbob\n"
    auth = PasswordFileAuth(path)
    assert auth.authenticate(creds("alice", b"new")) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["pw"]  # no temporary file left


def test_passwd_add_through_a_symlink_keeps_the_symlink(tmp_path: Path) -> None:
    real = write_users(tmp_path / "real-pw", {"bob": "b"})
    link = tmp_path / "pw"
    link.symlink_to(real)
    done = passwd("add", str(link), "alice", "--password-stdin", stdin="a\n")
    assert done.returncode == 0, done.stderr
    assert link.is_symlink()
    assert PasswordFile.load(real).users() == ["bob", "alice"]


def test_passwd_remove_and_list(tmp_path: Path) -> None:
    path = write_users(tmp_path / "pw", {"alice": "a", "bob": "b"})
    assert passwd("remove", str(path), "alice").returncode == 0
    listed = passwd("list", str(path))
    assert (listed.returncode, listed.stdout) == (0, "bob\n")
    assert "$argon2" not in listed.stdout
    again = passwd("remove", str(path), "alice")
    assert again.returncode == 1
    assert "no user 'alice'" in again.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["add", "{f}", "a:b", "--password-stdin"], "pw\n", 2, "cannot hold ':'"),
        (["add", "{f}", "", "--password-stdin"], "pw\n", 2, "empty"),
        (["add", "{f}", "alice", "--password-stdin"], "", 2, "no password"),
        (["add", "{f}", "alice", "--password-stdin"], "\n", 2, "no password"),
        (["list", "{f}"], "", 2, "cannot read it"),
        (["remove", "{f}", "alice"], "", 2, "cannot read it"),
        (["add", "{d}/no/such/dir/pw", "alice", "--password-stdin"], "pw\n", 2, "cannot write"),
    ],
)
def test_passwd_errors(
    tmp_path: Path, args: list[str], stdin: str, code: int, message: str
) -> None:
    argv = [a.format(f=tmp_path / "absent", d=tmp_path) for a in args]
    done = passwd(*argv, stdin=stdin)
    assert done.returncode == code
    assert done.stderr.startswith("bayou passwd: ")
    assert message in done.stderr
    assert not (tmp_path / "absent").exists()


def test_passwd_refuses_a_bad_file_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("# ok\nalice:garbage\n")
    done = passwd("add", str(path), "bob", "--password-stdin", stdin="pw\n")
    assert done.returncode == 2
    assert "line 2" in done.stderr
    assert path.read_text() == "# ok\nalice:garbage\n"  # untouched


def _interactive(path: Path, answers: list[bytes]) -> tuple[int, bytes]:
    """Run ``bayou passwd add`` on a terminal (a pty), answering the prompts in order."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: bayou on the pty as its controlling terminal
        try:
            os.execv(sys.executable, [*BAYOU, "passwd", "add", str(path), "alice"])
        finally:
            os._exit(127)  # never run the rest of pytest in the child
    output = b""
    try:
        for answer in answers:
            while b"Password" not in output.rsplit(b"\n", 1)[-1]:
                output += os.read(fd, 1024)
            os.write(fd, answer)
            output += b"\n"  # the next prompt is after this line
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_passwd_prompts_twice_without_echo(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    code, output = _interactive(path, [b"typed\n", b"typed\n"])
    assert code == 0, output
    assert b"typed" not in output  # getpass turned echo off
    assert PasswordFileAuth(path).authenticate(creds("alice", b"typed")) is not None


def test_passwd_prompts_that_differ_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    code, output = _interactive(path, [b"one\n", b"two\n"])
    assert code == 1
    assert b"passwords differ" in output
    assert not path.exists()


# In the chain ---------------------------------------------------------------------------------


def test_in_a_chain_with_jwt(tmp_path: Path) -> None:
    """The file decides for its users; the others go on to the JWT method (default order)."""
    secret = "a-shared-secret-of-at-least-32-bytes!"
    token = jwt.encode({"sub": "pump-7", "exp": 4_000_000_000}, secret, algorithm="HS256")
    chain = AuthChain(
        [
            PasswordFileAuth(write_users(tmp_path / "pw", {"alice": "wonder"})),
            JwtAuth(JwtConfig(secret=SecretStr(secret))),
        ],
        allow_anonymous=True,
    )
    assert chain.authenticate(creds("alice", b"wonder")).method == "password_file"
    assert chain.authenticate(creds("pump-7", token.encode())).method == "jwt"
    assert chain.authenticate(creds(None, None)).anonymous
    with pytest.raises(Refused) as err:
        chain.authenticate(creds("alice", token.encode()))  # the file knows alice
    assert err.value.reason == "bad_credentials"
    with pytest.raises(Refused) as err:
        chain.authenticate(creds("mallory", b"guess"))  # nobody accepts: not anonymous
    assert (err.value.reason, err.value.code) == ("bad_credentials", BAD_USERNAME_OR_PASSWORD)
