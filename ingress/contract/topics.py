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
