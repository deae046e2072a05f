"""Route rules (DESIGN §3): which Kafka topic and key an MQTT publish is written to, and which
MQTT topic a Kafka record without an ``mqtt.topic`` header is delivered to.

A rule's ``mqtt`` pattern is an MQTT topic filter whose single-level placeholders may be
named, e.g. ``sensors/{device}/telemetry``; its ``key`` template may use those names and
``{topic}`` (the whole MQTT topic, the default: it keeps per-topic order).

An egress rule maps a Kafka topic (and optionally a key pattern, in the same syntax) to an
MQTT topic template that may use ``{key}`` (the record key, UTF-8), ``{topic}`` (the Kafka
topic) and the names of the key pattern.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ingress.contract import DEFAULT_TOPIC, DEMO_TELEMETRY_TOPIC
from ingress.contract.topics import TopicError, validate_topic_filter, validate_topic_name

_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


class RuleError(ValueError):
    """A rule whose fields disagree; names the rule and the field (pydantic keeps it in ctx)."""

    def __init__(self, rule: str, field: str, detail: str) -> None:
        super().__init__(f"route {rule!r}: field {field!r}: {detail}")
        self.rule = rule
        self.field = field
        self.detail = detail


def check_kafka_topic(v: str) -> str:
    """Return ``v`` if it is a valid Kafka topic name, else raise ValueError."""
    if not _KAFKA_TOPIC.fullmatch(v):
        raise ValueError(f"not a valid Kafka topic name: {v!r}")
    return v


def _placeholders(pattern: str) -> list[str]:
    return [m.group(1) for lvl in pattern.split("/") if (m := _PLACEHOLDER.match(lvl))]


def _as_filter(pattern: str) -> str:
    return "/".join("+" if _PLACEHOLDER.match(lvl) else lvl for lvl in pattern.split("/"))


def _check_pattern(rule: str, field: str, pattern: str, reserved: tuple[str, ...]) -> list[str]:
    """Validate a pattern with named levels; return its names."""
    try:
        validate_topic_filter(_as_filter(pattern))
    except TopicError as exc:
        raise RuleError(rule, field, str(exc)) from None
    names = _placeholders(pattern)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RuleError(rule, field, f"names {dupes} more than once")
    taken = sorted(set(names) & set(reserved))
    if taken:
        raise RuleError(rule, field, f"{taken} is reserved; use another name")
    return names


def _check_template(
    rule: str, field: str, template: str, names: list[str], builtins: list[str], source: str | None
) -> str:
    """Validate a ``str.format`` template using ``names`` (from field ``source``) and ``builtins``.

    Returns the template filled with a sample value, so callers can check the result.
    """
    try:
        used = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:  # unbalanced braces
        raise RuleError(rule, field, f"{exc} in {template!r}") from None
    if "" in used:
        raise RuleError(rule, field, "'{}' has no name; use e.g. '{device}'")
    unknown = sorted(set(used) - set(names) - set(builtins))
    if unknown:
        extra = " or ".join("{" + b + "}" for b in builtins)
        if names:
            both = " and ".join("{" + b + "}" for b in builtins)
            verb = "is" if len(builtins) == 1 else "are"
            why = f"but {source} only names {names} ({both} {verb} always there)"
        elif source:
            why = f"but {source} names no levels, so only {extra} can be used"
        else:
            why = f"but the rule has no 'key' pattern, so only {extra} can be used"
        raise RuleError(rule, field, f"uses {unknown}, {why}")
    try:
        return template.format(**{n: "x" for n in [*names, *builtins]})
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise RuleError(rule, field, f"cannot fill {template!r}: {exc}") from None


def _compile(pattern: str, *, mqtt: bool) -> re.Pattern[str]:
    """A regex for a pattern with named levels ('{name}', '+', a last '#')."""
    parts: list[str] = []
    levels = pattern.split("/")
    tail = ""
    for lvl in levels:
        m = _PLACEHOLDER.match(lvl)
        if m:
            parts.append(f"(?P<{m.group(1)}>[^/]*)")
        elif lvl == "+":
            parts.append("[^/]*")
        elif lvl == "#":
            # '#' is last; it also matches the parent level itself ("a/#" matches "a").
            tail = "(?:/.*)?" if parts else ".*"
        else:
            parts.append(re.escape(lvl))
    rx = "/".join(parts) + tail
    if mqtt and (levels[0] in ("+", "#") or _PLACEHOLDER.match(levels[0])):
        rx = r"(?!\$)" + rx  # wildcards never match '$' topics [MQTT-4.7.2-1]
    return re.compile(rx + r"\Z", re.DOTALL)  # \Z: '$' would also match before a final '\n'


class RouteRule(BaseModel):
    """One MQTT topic pattern → Kafka topic + key template."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    mqtt: str
    kafka_topic: str
    key: str = "{topic}"

    @field_validator("kafka_topic")
    @classmethod
    def _kafka_topic_valid(cls, v: str) -> str:
        return check_kafka_topic(v)

    @model_validator(mode="after")
    def _pattern_and_key_agree(self) -> RouteRule:
        names = _check_pattern(self.name, "mqtt", self.mqtt, reserved=("topic",))
        _check_template(self.name, "key", self.key, names, ["topic"], "'mqtt'")
        return self

    def placeholders(self) -> list[str]:
        """Names of the ``{name}`` levels in the pattern, in order."""
        return _placeholders(self.mqtt)

    def filter(self) -> str:
        """The pattern as a plain MQTT topic filter (named levels become '+')."""
        return _as_filter(self.mqtt)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one publish goes."""

    kafka_topic: str
    key: bytes


class Router:
    """Resolves MQTT topics to Kafka topic and key; first matching rule wins.

    Results are cached per MQTT topic because devices publish to the same few topics
    over and over; the cache is bounded so hostile topic churn cannot grow it forever.
    """

    _CACHE_MAX = 100_000

    def __init__(self, rules: list[RouteRule], default_topic: str = DEFAULT_TOPIC) -> None:
        self.rules = rules
        self.default_topic = default_topic
        self._compiled = [(r, _compile(r.mqtt, mqtt=True)) for r in rules]
        self._cache: dict[str, Route] = {}

    def route(self, mqtt_topic: str) -> Route:
        """The Kafka topic and key for a publish to ``mqtt_topic``."""
        hit = self._cache.get(mqtt_topic)
        if hit is not None:
            return hit
        result = Route(self.default_topic, mqtt_topic.encode())
        for rule, rx in self._compiled:
            m = rx.match(mqtt_topic)
            if m:
                key = rule.key.format(topic=mqtt_topic, **m.groupdict())
                result = Route(rule.kafka_topic, key.encode())
                break
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[mqtt_topic] = result
        return result

    def kafka_topics(self) -> list[str]:
        """Every Kafka topic a publish can land in (the default first)."""
        seen = [self.default_topic]
        for r in self.rules:
            if r.kafka_topic not in seen:
                seen.append(r.kafka_topic)
        return seen


class EgressRule(BaseModel):
    """One Kafka topic (+ key pattern) → MQTT topic template, for records without mqtt.topic."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kafka_topic: str
    mqtt: str
    key: str | None = Field(
        default=None, description="Pattern the record key must match; unset = any key"
    )
    qos: int = Field(default=0, ge=0, le=2)
    retain: bool = False

    @field_validator("kafka_topic")
    @classmethod
    def _kafka_topic_valid(cls, v: str) -> str:
        return check_kafka_topic(v)

    @model_validator(mode="after")
    def _key_and_template_agree(self) -> EgressRule:
        names: list[str] = []
        if self.key is not None:
            names = _check_pattern(self.name, "key", self.key, reserved=("key", "topic"))
        source = "'key'" if self.key is not None else None
        sample = _check_template(self.name, "mqtt", self.mqtt, names, ["key", "topic"], source)
        try:
            validate_topic_name(sample)
        except TopicError as exc:
            raise RuleError(self.name, "mqtt", str(exc)) from None
        return self

    @property
    def needs_key(self) -> bool:
        """True when the key pattern or the template needs the record key."""
        if self.key is not None:
            return True
        return any(f == "key" for _, f, _, _ in string.Formatter().parse(self.mqtt))


@dataclass(frozen=True, slots=True)
class Egress:
    """Where one Kafka record without an ``mqtt.topic`` header is delivered."""

    mqtt_topic: str
    qos: int
    retain: bool
    rule: str


_Compiled = tuple[EgressRule, re.Pattern[str] | None, bool]


class EgressRouter:
    """Derives the MQTT topic of a Kafka record from the first matching egress rule.

    Only for records without an ``mqtt.topic`` header: records that carry one keep it. A rule
    matches when its Kafka topic is the record's and its key pattern (if any) matches the key.
    A rule that needs the key (its template uses ``{key}`` or it has a key pattern) does not
    match a record without a key or with a key that is not UTF-8. The first matching rule
    decides; when its template makes no valid MQTT topic of the record (the key contains '+',
    '#' or U+0000), the answer is None, as it is when no rule matches.
    """

    _CACHE_MAX = 100_000

    def __init__(self, rules: list[EgressRule]) -> None:
        self.rules = rules
        self._by_topic: dict[str, list[_Compiled]] = {}
        for r in rules:
            rx = _compile(r.key, mqtt=False) if r.key is not None else None
            self._by_topic.setdefault(r.kafka_topic, []).append((r, rx, r.needs_key))
        self._cache: dict[tuple[str, bytes | None], Egress | None] = {}

    def route(self, kafka_topic: str, key: bytes | None) -> Egress | None:
        """The MQTT topic (and QoS, retain) for a record of ``kafka_topic`` with ``key``."""
        rules = self._by_topic.get(kafka_topic)
        if rules is None:
            return None
        cache_key = (kafka_topic, key)
        if cache_key in self._cache:
            return self._cache[cache_key]
        result = self._derive(rules, kafka_topic, key)
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[cache_key] = result
        return result

    @staticmethod
    def _derive(rules: list[_Compiled], kafka_topic: str, key: bytes | None) -> Egress | None:
        text: str | None = None
        if key is not None:
            try:
                text = key.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        for rule, rx, needs_key in rules:
            names: dict[str, str] = {}
            if text is None and needs_key:
                continue
            if rx is not None:
                m = rx.match(text or "")
                if m is None:
                    continue
                names = m.groupdict()
            topic = rule.mqtt.format(key=text or "", topic=kafka_topic, **names)
            try:
                validate_topic_name(topic)
            except TopicError:
                return None
            if len(topic.encode()) > 65_535:
                return None
            return Egress(topic, rule.qos, rule.retain, rule.name)
        return None

    def kafka_topics(self) -> list[str]:
        """Every Kafka topic an egress rule reads, in rule order."""
        return list(self._by_topic)


DEMO_ROUTES = [
    RouteRule(
        name="telemetry",
        mqtt="sensors/{device}/telemetry",
        kafka_topic=DEMO_TELEMETRY_TOPIC,
        key="{device}",
    ),
]
