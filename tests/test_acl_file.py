"""The ACL file: TOML and YAML load alike; errors name BAYOU_ACL_FILE, the file, line and rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ingress.security.acl import Acl
from ingress.security.config import SecurityConfigError
from ingress.security.identity import Identity

TOML = """# plant ACL
default = "deny"

[[rules]]
permission = "allow"
action = "publish"
topics = ["sensors/%c/#"]
everyone = true

[[rules]]
permission = "allow"
action = "subscribe"
topics = ["sensors/#"]
group = "dashboards"
"""

YAML = """default: deny
rules:
  - permission: allow
    action: publish
    topics: ["sensors/%c/#"]
    everyone: true
  - permission: allow
    action: subscribe
    topics: ["sensors/#"]
    group: dashboards
"""


def write(tmp_path: Path, text: str, name: str = "acl.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str, name: str = "acl.toml") -> str:
    path = write(tmp_path, text, name)
    with pytest.raises(SecurityConfigError) as err:
        Acl.load(path)
    message = str(err.value)
    assert message.startswith(f"BAYOU_ACL_FILE={path}: ")
    return message.removeprefix(f"BAYOU_ACL_FILE={path}: ")


@pytest.mark.parametrize(("name", "text"), [("acl.toml", TOML), ("acl.yaml", YAML)])
def test_toml_and_yaml_are_the_same(tmp_path: Path, name: str, text: str) -> None:
    acl = Acl.load(write(tmp_path, text, name))
    assert [r.line for r in acl.rules] == ([4, 10] if name == "acl.toml" else [3, 7])
    dash = acl.for_client(Identity("d", frozenset({"dashboards"})), "screen1")
    assert dash.subscribe("sensors/+/telemetry") and not dash.publish("sensors/x/t")
    assert dash.publish("sensors/screen1/t")


def test_empty_files_deny_everything(tmp_path: Path) -> None:
    for name in ("acl.toml", "acl.yaml"):
        acl = Acl.load(write(tmp_path, "", name))
        assert acl.file.default == "deny" and acl.rules == ()


RULE = """
[[rules]]
permission = "allow"
action = "publish"
topics = ["a/#"]
user = "alice"
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('permission = "allow"', 'permission = "maybe"'),
            "line 9: rule 2: 'permission' must be \"allow\" or \"deny\", not 'maybe'",
        ),
        (
            ('action = "publish"', 'action = "write"'),
            "line 10: rule 2: 'action' must be one of publish, subscribe, all, not 'write'",
        ),
        (('action = "publish"\n', ""), "line 8: rule 2: 'action' is required"),
        (
            ('user = "alice"', 'user = "alice"\ngroup = "ops"'),
            "line 13: rule 2: more than one subject (user, group): give exactly one",
        ),
        (('user = "alice"', ""), "line 8: rule 2: no subject"),
        (('user = "alice"', "anonymous = false"), "line 12: rule 2: 'anonymous' can only be true"),
        (
            ('user = "alice"', 'colour = "red"\nuser = "a"'),
            "line 12: rule 2: unknown key 'colour' (allowed: permission, action, topics, user",
        ),
        (
            ('topics = ["a/#"]', "topics = []"),
            "line 11: rule 2: 'topics' must be a non-empty list of topic filters, not []",
        ),
        (
            ('topics = ["a/#"]', 'topics = ["a/#/b"]'),
            "line 11: rule 2: topic 'a/#/b': '#' must be a whole last level",
        ),
        (
            ('topics = ["a/#"]', 'topics = ["a/%c+"]'),
            "line 11: rule 2: topic 'a/%c+': '+' must be a whole level",
        ),
        (('user = "alice"', 'user = ""'), "line 12: rule 2: 'user' must be a non-empty string"),
        (
            ('topics = ["a/#"]\nuser = "alice"', 'topics = ["u/%u"]\nanonymous = true'),
            "line 11: rule 2: topic 'u/%u': uses %u, but anonymous clients have no username",
        ),
    ],
)
def test_toml_errors_name_line_and_rule(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    bad = RULE.replace(*change)
    message = error(tmp_path, 'default = "deny"\n' + RULE.replace("\n", "", 1) + bad)
    assert message.startswith(expected), message


def test_bad_default_and_top_level(tmp_path: Path) -> None:
    assert error(tmp_path, 'default = "maybe"\n').startswith(
        "line 1: 'default' must be \"deny\" or \"allow\", not 'maybe'"
    )
    assert error(tmp_path, 'defaults = "deny"\n').startswith("unknown top-level key 'defaults'")
    assert "not valid TOML" in error(tmp_path, "default = \n")
    assert error(tmp_path, "x", "acl.json").startswith("unknown file type '.json'")
    with pytest.raises(SecurityConfigError, match="no such file"):
        Acl.load(tmp_path / "missing.toml")


def test_several_problems_in_one_message(tmp_path: Path) -> None:
    text = RULE.replace('"publish"', '"write"') + RULE.replace('"allow"', '"nope"')
    message = error(tmp_path, text)
    assert "line 4: rule 1: 'action'" in message and "line 9: rule 2: 'permission'" in message


def test_yaml_errors_name_line_and_rule(tmp_path: Path) -> None:
    bad = YAML.replace("action: subscribe", "action: read")
    assert error(tmp_path, bad, "acl.yml").startswith(
        "line 8: rule 2: 'action' must be one of publish, subscribe, all, not 'read'"
    )
    twice = YAML.replace("group: dashboards", "group: dashboards\n    group: ops")
    assert error(tmp_path, twice, "acl.yaml").startswith(
        "line 11: rule 2: key 'group' is given twice"
    )
    assert error(tmp_path, "default: deny\nrules: [1]\n", "acl.yaml").startswith(
        "line 2: rule 1: must be a table of fields, not a number"
    )
    assert "not valid YAML" in error(tmp_path, "rules: [\n", "acl.yaml")


def _bayou(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bayou.cli", *args], capture_output=True, text=True, check=False
    )


def test_bayou_acl_check_prints_the_deciding_rule(tmp_path: Path) -> None:
    """`bayou acl check` (a real process): exit 0 allow, 1 deny, 2 bad file or topic."""
    path = write(tmp_path, TOML)
    ok = _bayou("acl", "check", str(path), "--client", "dev1", "--publish", "sensors/dev1/t")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("allow: publish 'sensors/dev1/t'")
    assert "rule 1 (line 4): allow publish [sensors/%c/#] for everyone" in ok.stdout
    no = _bayou("acl", "check", str(path), "--user", "u", "--subscribe", "sensors/#")
    assert no.returncode == 1 and "no rule matched; default = 'deny'" in no.stdout
    dash = ("--user", "d", "--group", "dashboards", "--subscribe", "sensors/+/t")
    assert _bayou("acl", "check", str(path), *dash).returncode == 0
    bad = _bayou("acl", "check", str(write(tmp_path, 'default = "x"\n')), "--publish", "a")
    assert bad.returncode == 2 and "BAYOU_ACL_FILE=" in bad.stderr
    assert _bayou("acl", "check", str(path), "--publish", "a/#").returncode == 2
    assert _bayou("acl", "check", str(path)).returncode == 2
