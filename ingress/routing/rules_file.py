"""Route rules read from one file (TOML, or YAML), validated by the models in ingress.routing.rules.

The file has ``[[inbound]]`` tables (RouteRule: MQTT topic pattern → Kafka topic + key),
``[[outbound]]`` tables (EgressRule: Kafka topic + key → MQTT topic) and an optional top-level
``default_topic``. Every problem is reported in one line that names the file, the rule (by name,
or by position when it has no usable name) and the field: see docs/routing.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ingress.routing.rules import EgressRule, RouteRule, RuleError, check_kafka_topic

_M = TypeVar("_M", bound=BaseModel)
_TOP_LEVEL = ("default_topic", "inbound", "outbound")
_YAML_SUFFIXES = (".yaml", ".yml")


class RoutesFileError(Exception):
    """A routes file that cannot be used; the one-line message names the file, rule and field."""


@dataclass(frozen=True)
class RoutesFile:
    """The rules of one routes file, in file order (the first matching rule wins)."""

    inbound: list[RouteRule] = field(default_factory=list)
    outbound: list[EgressRule] = field(default_factory=list)
    default_topic: str | None = None


def load_routes_file(path: Path) -> RoutesFile:
    """Read and validate ``path``; raise RoutesFileError naming the file, rule and field."""
    suffix = path.suffix.lower()
    if suffix != ".toml" and suffix not in _YAML_SUFFIXES:
        raise RoutesFileError(
            f"{path}: unknown file type {suffix or '(none)'!r}; name it *.toml, *.yaml or *.yml"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RoutesFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RoutesFileError(f"{path}: is a directory, not a routes file") from None
    except UnicodeDecodeError as exc:
        raise RoutesFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise RoutesFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    yaml = suffix in _YAML_SUFFIXES
    data = _parse_yaml(path, text) if yaml else _parse_toml(path, text)
    return parse_routes(data, str(path), yaml=yaml)


def parse_routes(data: object, source: str, *, yaml: bool = False) -> RoutesFile:
    """Validate already-parsed routes data; ``source`` names it in errors (the file name)."""
    if data is None:  # an empty YAML file
        data = {}
    if not isinstance(data, Mapping):
        raise RoutesFileError(f"{source}: the top level must be a table, not {_kind(data)}")
    problems: list[str] = []
    unknown = [str(k) for k in data if k not in _TOP_LEVEL]
    for k in unknown:
        problems.append(f"unknown top-level key {k!r} (allowed: {', '.join(_TOP_LEVEL)})")
    default_topic = data.get("default_topic")
    if default_topic is not None:
        if not isinstance(default_topic, str):
            problems.append(f"field 'default_topic': must be a string, not {_kind(default_topic)}")
        else:
            try:
                check_kafka_topic(default_topic)
            except ValueError as exc:
                problems.append(f"field 'default_topic': {exc}")
    seen: dict[str, str] = {}  # rule name → the rule that has it
    inbound = _section(data, "inbound", RouteRule, problems, seen, yaml=yaml)
    outbound = _section(data, "outbound", EgressRule, problems, seen, yaml=yaml)
    if problems:
        message = f"{source}: " + "; ".join(problems)
        raise RoutesFileError(" ".join(message.split("\n")))
    return RoutesFile(inbound=inbound, outbound=outbound, default_topic=default_topic)


def _section(
    data: Mapping[object, object],
    section: str,
    model: type[_M],
    problems: list[str],
    seen: dict[str, str],
    *,
    yaml: bool,
) -> list[_M]:
    """The valid rules of one section; appends a line to ``problems`` per bad field."""
    raw = data.get(section, [])
    if not isinstance(raw, list):
        shape = "a list of mappings" if yaml else f"an array of tables ([[{section}]])"
        problems.append(f"{section!r} must be {shape}, not {_kind(raw)}")
        return []
    rules: list[_M] = []
    for i, item in enumerate(raw, start=1):
        label = _label(section, i, item)
        if not isinstance(item, Mapping):
            problems.append(f"{label}: must be a table of fields, not {_kind(item)}")
            continue
        try:
            rules.append(model.model_validate(item))
        except ValidationError as exc:
            problems += [f"{label}: {p}" for p in _field_problems(exc, model, yaml=yaml)]
        name = item.get("name")
        if isinstance(name, str) and name:
            if name in seen:
                problems.append(
                    f"{label}: field 'name': {name!r} is already the name of {seen[name]}"
                )
            else:
                seen[name] = f"{section} rule #{i}"
    return rules


def _parse_toml(path: Path, text: str) -> object:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutesFileError(f"{path}: not valid TOML: {exc}") from None


def _parse_yaml(path: Path, text: str) -> object:
    import yaml  # PyYAML: a dependency of amqtt, so always installed with Bayou

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" (at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})"
        raise RoutesFileError(f"{path}: not valid YAML: {exc.problem}{where}") from None
    except yaml.YAMLError as exc:
        raise RoutesFileError(f"{path}: not valid YAML: {exc}") from None


def _label(section: str, index: int, item: object) -> str:
    name = item.get("name") if isinstance(item, Mapping) else None
    if isinstance(name, str) and name:
        return f"{section} rule {name!r}"
    return f"{section} rule #{index}"


def _field_problems(exc: ValidationError, model: type[BaseModel], *, yaml: bool) -> list[str]:
    out: list[str] = []
    for err in exc.errors():
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, RuleError):
            out.append(f"field {cause.field!r}: {cause.detail}")
            continue
        name = ".".join(str(p) for p in err["loc"]) or "?"
        kind = err["type"]
        if kind == "missing":
            detail = "is required"
        elif kind == "extra_forbidden":
            detail = f"unknown field (allowed: {', '.join(model.model_fields)})"
        else:
            detail = err["msg"].removeprefix("Value error, ")
            if not isinstance(cause, ValueError):
                detail += f", got {err['input']!r}"
            if yaml and kind == "string_type" and isinstance(err["input"], dict):
                detail += ' (in YAML, quote templates: "{device}")'
        out.append(f"field {name!r}: {detail}")
    return out


def _kind(value: object) -> str:
    names = {str: "a string", list: "a list", dict: "a table", bool: "a boolean", int: "a number"}
    return names.get(type(value), type(value).__name__)
