"""The ACL file (``BAYOU_ACL_FILE``, TOML or YAML): read, validated, turned into :class:`Rule` s.

Every problem is reported as ``BAYOU_ACL_FILE=<path>: line <n>: rule <i>: <what is wrong>``
(several joined by ``; ``). tomllib keeps no line numbers, so for TOML the line is found in the
text (the i-th ``[[rules]]`` header, or the key's line inside that block); for YAML it comes
from the nodes' marks. Evaluation is in :mod:`ingress.security.acl`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ingress.contract.topics import TopicError, validate_topic_filter
from ingress.security.config import SecurityConfigError

Permission = Literal["allow", "deny"]
Action = Literal["publish", "subscribe", "all"]
SubjectKind = Literal["user", "group", "anonymous", "everyone"]
PERMISSIONS: tuple[Permission, ...] = ("allow", "deny")
ACTIONS: tuple[Action, ...] = ("publish", "subscribe", "all")
SUBJECTS: tuple[SubjectKind, ...] = ("user", "group", "anonymous", "everyone")
PLACEHOLDERS = ("%u", "%c")
_RULE_KEYS = ("permission", "action", "topics", *SUBJECTS)
_TOP_LEVEL = ("default", "rules")
_YAML_SUFFIXES = (".yaml", ".yml")
_SETTING = "BAYOU_ACL_FILE"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of the file: who (subject), allow or deny, which operations, which topics."""

    index: int  # 1-based position in the file
    line: int | None  # line of its header ([[rules]] / "- "), None when unknown
    permission: Permission
    action: Action
    topics: tuple[str, ...]  # MQTT topic filters, %u / %c not yet substituted
    subject: SubjectKind
    name: str | None = None  # the user or group name (None for anonymous / everyone)

    def describe(self) -> str:
        """The rule in one line, for ``bayou acl check`` and logs."""
        who = self.subject if self.name is None else f"{self.subject} {self.name!r}"
        where = f" (line {self.line})" if self.line is not None else ""
        topics = ", ".join(self.topics)
        return f"rule {self.index}{where}: {self.permission} {self.action} [{topics}] for {who}"


@dataclass(frozen=True, slots=True)
class AclFile:
    """The rules of one ACL file in file order, and what applies when none matches."""

    default: Permission = "deny"
    rules: tuple[Rule, ...] = ()


def load_acl_file(path: Path) -> AclFile:
    """Read and validate ``path``; raise SecurityConfigError naming the file, line and rule."""
    where = f"{_SETTING}={path}"
    suffix = path.suffix.lower()
    if suffix != ".toml" and suffix not in _YAML_SUFFIXES:
        raise SecurityConfigError(
            f"{where}: unknown file type {suffix or '(none)'!r}; name it *.toml, *.yaml or *.yml"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SecurityConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise SecurityConfigError(f"{where}: is a directory, not an ACL file") from None
    except UnicodeDecodeError as exc:
        raise SecurityConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise SecurityConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if suffix in _YAML_SUFFIXES:
        data, lines = _parse_yaml(text, where)
    else:
        data, lines = _parse_toml(text, where)
    return parse_acl(data, lines, where)


class Lines:
    """Where things are in the file: the line of the top-level ``default``, of each rule's
    header and of each key inside a rule (None where it cannot be told)."""

    def __init__(self) -> None:
        self.default: int | None = None
        self.rules: list[int] = []
        self.keys: list[dict[str, int]] = []
        self.duplicates: list[list[str]] = []  # YAML: keys given twice in rule i

    def of(self, index: int, key: str | None = None) -> int | None:
        """The line of rule ``index`` (1-based), or of ``key`` in it when known."""
        if index > len(self.rules):
            return None
        if key is not None and key in self.keys[index - 1]:
            return self.keys[index - 1][key]
        return self.rules[index - 1]


def parse_acl(data: object, lines: Lines, where: str) -> AclFile:
    """Validate already-parsed ACL data; ``where`` prefixes every error message."""
    if data is None:  # an empty YAML file: no rules, default deny
        data = {}
    if not isinstance(data, Mapping):
        raise SecurityConfigError(f"{where}: the top level must be a table, not {_kind(data)}")
    problems: list[str] = []
    for key in data:
        if key not in _TOP_LEVEL:
            problems.append(
                f"unknown top-level key {str(key)!r} (allowed: {', '.join(_TOP_LEVEL)})"
            )
    default = data.get("default", "deny")
    if default not in PERMISSIONS:
        at = f"line {lines.default}: " if lines.default is not None else ""
        problems.append(f'{at}\'default\' must be "deny" or "allow", not {default!r}')
    raw = data.get("rules", [])
    rules: list[Rule] = []
    if not isinstance(raw, list):
        problems.append(f"'rules' must be an array of tables ([[rules]]), not {_kind(raw)}")
        raw = []
    for i, item in enumerate(raw, start=1):
        rule = _rule(i, item, lines, problems)
        if rule is not None:
            rules.append(rule)
    if problems:
        message = f"{where}: " + "; ".join(problems)
        raise SecurityConfigError(" ".join(message.split("\n")))
    return AclFile(default=default, rules=tuple(rules))


def _rule(i: int, item: object, lines: Lines, problems: list[str]) -> Rule | None:
    """Rule ``i``, or None after appending what is wrong with it to ``problems``."""
    before = len(problems)

    def bad(what: str, key: str | None = None) -> None:
        line = lines.of(i, key)
        at = f"line {line}: " if line is not None else ""
        problems.append(f"{at}rule {i}: {what}")

    if not isinstance(item, Mapping):
        bad(f"must be a table of fields, not {_kind(item)}")
        return None
    for key in item:
        if key not in _RULE_KEYS:
            bad(f"unknown key {str(key)!r} (allowed: {', '.join(_RULE_KEYS)})", str(key))
    if i <= len(lines.duplicates):
        for key in lines.duplicates[i - 1]:
            bad(f"key {key!r} is given twice", key)
    permission = item.get("permission")
    if permission is None:
        bad('\'permission\' is required: "allow" or "deny"')
    elif permission not in PERMISSIONS:
        bad(f'\'permission\' must be "allow" or "deny", not {permission!r}', "permission")
    action = item.get("action")
    if action is None:
        bad('\'action\' is required: "publish", "subscribe" or "all"')
    elif action not in ACTIONS:
        bad(f"'action' must be one of {', '.join(ACTIONS)}, not {action!r}", "action")
    subjects = [s for s in SUBJECTS if s in item]
    subject: SubjectKind | None = None
    name: str | None = None
    if not subjects:
        bad(
            'no subject: give exactly one of user = "name", group = "name", '
            "anonymous = true, everyone = true"
        )
    elif len(subjects) > 1:
        bad(f"more than one subject ({', '.join(subjects)}): give exactly one", subjects[1])
    else:
        subject = subjects[0]
        value = item[subject]
        if subject in ("user", "group"):
            if not isinstance(value, str) or not value:
                bad(f"'{subject}' must be a non-empty string, not {value!r}", subject)
            name = value
        elif value is not True:
            bad(f"'{subject}' can only be true (leave it out otherwise), not {value!r}", subject)
    topics = item.get("topics")
    if topics is None:
        bad("'topics' is required: a list of MQTT topic filters, e.g. [\"sensors/%c/#\"]")
    elif not isinstance(topics, list) or not topics:
        bad(f"'topics' must be a non-empty list of topic filters, not {topics!r}", "topics")
    else:
        for topic in topics:
            problem = _topic_problem(topic, subject)
            if problem is not None:
                bad(f"topic {topic!r}: {problem}", "topics")
    if len(problems) > before or subject is None:
        return None
    assert permission in PERMISSIONS and action in ACTIONS and isinstance(topics, list)
    return Rule(i, lines.of(i), permission, action, tuple(topics), subject, name)


def _topic_problem(topic: object, subject: SubjectKind | None) -> str | None:
    if not isinstance(topic, str):
        return f"must be a string, not {_kind(topic)}"
    # Validated with the placeholders as one ordinary level character each, so that
    # "sensors/%c/#" is checked as "sensors/x/#" and "a%c+" still fails.
    try:
        validate_topic_filter(topic.replace("%u", "x").replace("%c", "x"))
    except TopicError as exc:
        return str(exc).replace("'x'", repr(topic))
    if "%u" in topic and subject == "anonymous":
        return "uses %u, but anonymous clients have no username: it would match nothing"
    return None


_RULES_HEADER = re.compile(r"^\s*\[\[\s*rules\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def _parse_toml(text: str, where: str) -> tuple[object, Lines]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SecurityConfigError(f"{where}: not valid TOML: {exc}") from None
    lines = Lines()
    # tomllib keeps no positions: find them in the text. Good for the file's usual shape
    # ([[rules]] blocks of key = value lines); otherwise the message just has no line.
    current: dict[str, int] | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        if _RULES_HEADER.match(line):
            lines.rules.append(n)
            current = {}
            lines.keys.append(current)
        elif _TABLE_HEADER.match(line):
            current = None
        elif (key := _KEY.match(line)) is not None:
            if current is not None:
                current.setdefault(key.group(1), n)
            elif not lines.rules and key.group(1) == "default":
                lines.default = n
    rules = data.get("rules")
    if not isinstance(rules, list) or len(rules) != len(lines.rules):
        lines.rules, lines.keys = [], []  # an inline array, e.g. rules = [{...}]
    return data, lines


def _parse_yaml(text: str, where: str) -> tuple[object, Lines]:
    import yaml  # PyYAML: a dependency of amqtt, so always installed with Bayou

    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        at = ""
        if exc.problem_mark is not None:
            at = f" (at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})"
        raise SecurityConfigError(f"{where}: not valid YAML: {exc.problem}{at}") from None
    except yaml.YAMLError as exc:
        raise SecurityConfigError(f"{where}: not valid YAML: {exc}") from None
    lines = Lines()
    if not isinstance(root, yaml.MappingNode):
        return data, lines
    for key_node, value_node in root.value:
        if key_node.value == "default":
            lines.default = key_node.start_mark.line + 1
        elif key_node.value == "rules" and isinstance(value_node, yaml.SequenceNode):
            for item in value_node.value:
                lines.rules.append(item.start_mark.line + 1)
                keys: dict[str, int] = {}
                twice: list[str] = []
                if isinstance(item, yaml.MappingNode):
                    for k, _ in item.value:
                        name = str(k.value)
                        if name in keys:
                            twice.append(name)  # safe_load keeps the last one silently
                        keys[name] = k.start_mark.line + 1
                lines.keys.append(keys)
                lines.duplicates.append(twice)
    return data, lines


def _kind(value: Any) -> str:
    names = {str: "a string", list: "a list", dict: "a table", bool: "a boolean", int: "a number"}
    return names.get(type(value), type(value).__name__)
