"""``bayou passwd``: add, remove and list the users of a password file (as ``mosquitto_passwd``).

Each function returns the process exit code after printing its message; the CLI only parses
arguments. 0: done; 1: the operation cannot be done (no such user, passwords differ); 2: the
file or the input is unusable.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TextIO

import typer

from ingress.security.config import SecurityConfigError
from ingress.security.passwords import PasswordFile, username_problem

passwd_app = typer.Typer(
    help="Manage a password file (BAYOU_AUTH_PASSWORD_FILE): add, remove and list users.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(message: str, code: int) -> int:
    typer.echo(f"bayou passwd: {message}", err=True)
    return code


def _load(path: Path, *, create: bool) -> PasswordFile | int:
    if create and not path.exists():
        return PasswordFile(path)
    try:
        return PasswordFile.load(path)
    except SecurityConfigError as exc:
        return _fail(str(exc), 2)


def _read_password(from_stdin: bool, stdin: TextIO) -> str | int:
    if from_stdin:
        # One line: the password, without its line ending (`echo secret | bayou passwd ...`).
        line = stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            return _fail("no password on standard input", 2)
        return password
    password = getpass.getpass("Password: ")
    if not password:
        return _fail("the password is empty", 2)
    if getpass.getpass("Password again: ") != password:
        return _fail("the passwords differ; nothing changed", 1)
    return password


def add_user(path: Path, username: str, from_stdin: bool, stdin: TextIO = sys.stdin) -> int:
    """Add ``username`` to the file (created mode 0600 if absent), or set its new password."""
    problem = username_problem(username)
    if problem:
        return _fail(f"{username!r}: {problem}", 2)
    pf = _load(path, create=True)
    if isinstance(pf, int):
        return pf
    password = _read_password(from_stdin, stdin)
    if isinstance(password, int):
        return password
    new = pf.add(username, password)
    try:
        pf.save()
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror}", 2)
    typer.echo(f"{'added' if new else 'updated the password of'} {username!r} in {path}")
    return 0


def remove_user(path: Path, username: str) -> int:
    """Remove ``username`` from the file; 1 when it is not there."""
    pf = _load(path, create=False)
    if isinstance(pf, int):
        return pf
    try:
        pf.remove(username)
    except KeyError:
        return _fail(f"no user {username!r} in {path}", 1)
    try:
        pf.save()
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror}", 2)
    typer.echo(f"removed {username!r} from {path}")
    return 0


def list_users(path: Path) -> int:
    """Print the usernames, one a line (never the hashes)."""
    pf = _load(path, create=False)
    if isinstance(pf, int):
        return pf
    for username in pf.users():
        typer.echo(username)
    return 0


_FILE = typer.Argument(help="The password file", show_default=False)
_USER = typer.Argument(help="The username (as the client sends it in CONNECT)")


@passwd_app.command("add")
def add_command(
    file: Path = _FILE,
    user: str = _USER,
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin"
    ),
) -> None:
    """Add a user, or set a new password for an existing one (prompts twice)."""
    raise typer.Exit(add_user(file, user, password_stdin))


@passwd_app.command("remove")
def remove_command(file: Path = _FILE, user: str = _USER) -> None:
    """Remove a user."""
    raise typer.Exit(remove_user(file, user))


@passwd_app.command("list")
def list_command(file: Path = _FILE) -> None:
    """List the usernames."""
    raise typer.Exit(list_users(file))
