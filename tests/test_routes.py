"""Route rules: MQTT topic → Kafka topic and key, pure."""

import pytest
from pydantic import ValidationError

from ingress.routing.rules import DEMO_ROUTES, Router, RouteRule


def test_demo_route_keys_telemetry_by_device() -> None:
    r = Router(DEMO_ROUTES).route("sensors/dev-7/telemetry")
    assert (r.kafka_topic, r.key) == ("bayou.telemetry", b"dev-7")


def test_unmatched_publish_goes_to_default_topic_keyed_by_mqtt_topic() -> None:
    r = Router(DEMO_ROUTES).route("sensors/dev-7/other")
    assert (r.kafka_topic, r.key) == ("bayou.messages", b"sensors/dev-7/other")


def test_first_matching_rule_wins_and_hash_matches_parent() -> None:
    rules = [
        RouteRule(name="a", mqtt="plant/{site}/#", kafka_topic="plant", key="{site}"),
        RouteRule(name="b", mqtt="plant/x/y", kafka_topic="never"),
    ]
    router = Router(rules)
    assert router.route("plant/x/y").kafka_topic == "plant"
    assert router.route("plant/x").key == b"x"
    assert router.kafka_topics() == ["bayou.messages", "plant", "never"]


def test_wildcard_rule_does_not_take_dollar_topics() -> None:
    router = Router([RouteRule(name="all", mqtt="{first}/#", kafka_topic="all")])
    assert router.route("$SYS/x").kafka_topic == "bayou.messages"
    assert router.route("a/b").kafka_topic == "all"


def test_key_naming_an_unknown_level_is_rejected_with_rule_and_field() -> None:
    with pytest.raises(ValidationError) as err:
        RouteRule(name="bad", mqtt="sensors/{device}/t", kafka_topic="t", key="{site}")
    assert "route 'bad'" in str(err.value)
    assert "'key'" in str(err.value)


def test_invalid_kafka_topic_is_rejected() -> None:
    with pytest.raises(ValidationError) as err:
        RouteRule(name="bad", mqtt="a/b", kafka_topic="no spaces")
    assert "kafka_topic" in str(err.value)


def test_invalid_mqtt_pattern_is_rejected() -> None:
    with pytest.raises(ValidationError) as err:
        RouteRule(name="bad", mqtt="a/#/b", kafka_topic="t")
    assert "field 'mqtt'" in str(err.value)


def test_pattern_matches_whole_topic_including_newlines() -> None:
    router = Router([RouteRule(name="t", mqtt="s/{device}/t", kafka_topic="t", key="{device}")])
    assert router.route("s/x/t\n").kafka_topic == "bayou.messages"
    hash_router = Router([RouteRule(name="h", mqtt="a/#", kafka_topic="h")])
    assert hash_router.route("a/b\nc").kafka_topic == "h"
