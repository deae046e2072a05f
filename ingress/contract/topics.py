"""MQTT topic names and filters (MQTT 3.1.1 §4.7): validation and matching, pure functions."""

from __future__ import annotations


class TopicError(ValueError):
    """A topic name or filter that MQTT 3.1.1 forbids."""


def validate_topic_name(topic: str) -> None:
    """Raise TopicError unless ``topic`` is a valid name to publish to (no wildcards)."""
    if not topic:
        raise TopicError("topic name is empty")
    if "+" in topic or "#" in topic:
        raise TopicError(f"wildcards are not allowed in a topic name: {topic!r}")
    if "\x00" in topic:
        raise TopicError("topic name contains U+0000")


def validate_topic_filter(filt: str) -> None:
    """Raise TopicError unless ``filt`` is a valid subscription filter."""
    if not filt:
        raise TopicError("topic filter is empty")
    if "\x00" in filt:
        raise TopicError("topic filter contains U+0000")
    levels = filt.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError(f"'#' must be a whole last level: {filt!r}")
        if "+" in level and level != "+":
            raise TopicError(f"'+' must be a whole level: {filt!r}")


def matches(filt: str, topic: str) -> bool:
    """True when topic name ``topic`` matches subscription filter ``filt``.

    Topics starting with '$' are not matched by a filter starting with a wildcard
    [MQTT-4.7.2-1].
    """
    if topic.startswith("$") and filt[:1] in ("+", "#"):
        return False
    f_levels = filt.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


SHARE_PREFIX = "$share/"


def shared_filter(filt: str) -> tuple[str, str] | None:
    """``(share name, topic filter)`` of a shared subscription ``$share/{name}/{filter}``,
    None for any other filter; TopicError for a malformed one [MQTT-4.8.2-1, -2]."""
    if not filt.startswith(SHARE_PREFIX):
        return None
    name, sep, inner = filt[len(SHARE_PREFIX) :].partition("/")
    if not name:
        raise TopicError(f"shared subscription without a share name: {filt!r}")
    if "+" in name or "#" in name:
        raise TopicError(f"a share name may not hold '+' or '#': {filt!r}")
    if not sep or not inner:
        raise TopicError(f"shared subscription without a topic filter: {filt!r}")
    validate_topic_filter(inner)
    return name, inner
