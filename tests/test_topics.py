"""MQTT topic validation and matching (MQTT 3.1.1 §4.7), pure."""

import pytest

from ingress.contract.topics import (
    TopicError,
    matches,
    shared_filter,
    validate_topic_filter,
    validate_topic_name,
)


@pytest.mark.parametrize(
    ("filt", "topic", "expected"),
    [
        ("sensors/#", "sensors/d1/telemetry", True),
        ("sensors/#", "sensors", True),  # '#' matches the parent level too [MQTT-4.7.1-2]
        ("sensors/+/telemetry", "sensors/d1/telemetry", True),
        ("sensors/+/telemetry", "sensors/d1/stats", False),
        ("sensors/+", "sensors/d1/telemetry", False),
        ("+/+", "/finance", True),
        ("#", "a/b/c", True),
        ("#", "$SYS/uptime", False),  # [MQTT-4.7.2-1]
        ("+/uptime", "$SYS/uptime", False),
        ("$SYS/#", "$SYS/uptime", True),
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_mqtt_4_7_matching(filt: str, topic: str, expected: bool) -> None:
    assert matches(filt, topic) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "+a"])
def test_mqtt_4_7_1_invalid_filters_rejected(bad: str) -> None:
    with pytest.raises(TopicError):
        validate_topic_filter(bad)


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "a\x00b"])
def test_mqtt_3_3_2_2_no_wildcards_in_topic_names(bad: str) -> None:
    with pytest.raises(TopicError):
        validate_topic_name(bad)


@pytest.mark.parametrize(
    ("filt", "parsed"),
    [
        ("a/b", None),
        ("$SYS/x", None),
        ("$share/g/a/b", ("g", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share/group-1/+/t", ("group-1", "+/t")),
        ("$share/g//", ("g", "/")),
    ],
)
def test_shared_filter_parses_share_name_and_filter(
    filt: str, parsed: tuple[str, str] | None
) -> None:
    assert shared_filter(filt) == parsed


@pytest.mark.parametrize(
    "filt", ["$share/", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/#/a",
             "$share/g/a#"]
)  # fmt: skip
def test_mqtt_4_8_2_1_and_2_malformed_shared_filters(filt: str) -> None:
    with pytest.raises(TopicError):
        shared_filter(filt)
