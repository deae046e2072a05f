"""Route rules: which Kafka topic and key an MQTT publish is written to (DESIGN §3).

A rule's ``mqtt`` pattern is an MQTT topic filter whose single-level placeholders may be
named, e.g. ``sensors/{device}/telemetry``; its ``key`` template may use those names and
``{topic}`` (the whole MQTT topic, the default: it keeps per-topic order).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from pydantic import BaseModel, field_validator, model_validator

from ingress.contract import DEFAULT_TOPIC
from ingress.topics import TopicError, validate_topic_filter

_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class RouteRule(BaseModel):
    """One MQTT topic pattern → Kafka topic + key template."""

    name: str
    mqtt: str
    kafka_topic: str
    key: str = "{topic}"

    @field_validator("kafka_topic")
    @classmethod
    def _kafka_topic_valid(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
            raise ValueError(f"not a valid Kafka topic name: {v!r}")
        return v

    @model_validator(mode="after")
    def _pattern_and_key_agree(self) -> RouteRule:
        names = self.placeholders()
        try:
            validate_topic_filter(self.filter())
        except TopicError as exc:
            raise ValueError(f"route {self.name!r}: field 'mqtt': {exc}") from exc
        used = {f for _, f, _, _ in string.Formatter().parse(self.key) if f}
        unknown = used - set(names) - {"topic"}
        if unknown:
            raise ValueError(
                f"route {self.name!r}: field 'key' uses {sorted(unknown)}, "
                f"but 'mqtt' only names {names or 'nothing'}"
            )
        return self

    def placeholders(self) -> list[str]:
        """Names of the ``{name}`` levels in the pattern, in order."""
        return [m.group(1) for lvl in self.mqtt.split("/") if (m := _PLACEHOLDER.match(lvl))]

    def filter(self) -> str:
        """The pattern as a plain MQTT topic filter (named levels become '+')."""
        return "/".join("+" if _PLACEHOLDER.match(lvl) else lvl for lvl in self.mqtt.split("/"))


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
        self._compiled = [(r, self._compile(r)) for r in rules]
        self._cache: dict[str, Route] = {}

    @staticmethod
    def _compile(rule: RouteRule) -> re.Pattern[str]:
        parts: list[str] = []
        levels = rule.mqtt.split("/")
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
        pattern = "/".join(parts) + tail
        if levels[0] in ("+", "#") or _PLACEHOLDER.match(levels[0]):
            pattern = r"(?!\$)" + pattern  # wildcards never match '$' topics [MQTT-4.7.2-1]
        return re.compile("^" + pattern + "$")

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


DEMO_ROUTES = [
    RouteRule(
        name="telemetry",
        mqtt="sensors/{device}/telemetry",
        kafka_topic="bayou.telemetry",
        key="{device}",
    ),
]
