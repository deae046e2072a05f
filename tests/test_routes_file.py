"""Route rules from a file: loading, errors that name file + rule + field, egress derivation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bayou.settings import SettingsError, load_settings
from ingress.routing.rules import DEMO_ROUTES, EgressRouter, EgressRule, Router
from ingress.routing.rules_file import RoutesFile, RoutesFileError, load_routes_file

REPO = Path(__file__).resolve().parents[1]

VALID_TOML = """
default_topic = "plant.unrouted"

[[inbound]]
name = "telemetry"
mqtt = "sensors/{device}/telemetry"
kafka_topic = "bayou.telemetry"
key = "{device}"

[[inbound]]
name = "site-events"
mqtt = "sites/{site}/#"
kafka_topic = "plant.events"
key = "{site}"

[[outbound]]
name = "commands"
kafka_topic = "erp.commands"
mqtt = "devices/{key}/commands"
qos = 1

[[outbound]]
name = "site-broadcast"
kafka_topic = "erp.broadcast"
key = "{site}/{device}"
mqtt = "sites/{site}/devices/{device}/{topic}"
retain = true
"""

VALID_YAML = """
default_topic: plant.unrouted
inbound:
  - name: telemetry
    mqtt: sensors/{device}/telemetry
    kafka_topic: bayou.telemetry
    key: "{device}"
  - name: site-events
    mqtt: "sites/{site}/#"
    kafka_topic: plant.events
    key: "{site}"
outbound:
  - name: commands
    kafka_topic: erp.commands
    mqtt: devices/{key}/commands
    qos: 1
  - name: site-broadcast
    kafka_topic: erp.broadcast
    key: "{site}/{device}"
    mqtt: sites/{site}/devices/{device}/{topic}
    retain: true
"""


def write(tmp_path: Path, text: str, name: str = "routes.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str, name: str = "routes.toml") -> str:
    with pytest.raises(RoutesFileError) as err:
        load_routes_file(write(tmp_path, text, name))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / name}: ")
    return message


def rule(section: str = "inbound", **fields: object) -> str:
    lines = [f"[[{section}]]"]
    lines += [
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in fields.items()
    ]
    return "\n".join(lines) + "\n"


# loading ----------------------------------------------------------------------------------


def test_valid_toml_file_round_trips(tmp_path: Path) -> None:
    loaded = load_routes_file(write(tmp_path, VALID_TOML))
    assert loaded.default_topic == "plant.unrouted"
    assert [r.name for r in loaded.inbound] == ["telemetry", "site-events"]
    assert [r.name for r in loaded.outbound] == ["commands", "site-broadcast"]
    assert (loaded.outbound[0].qos, loaded.outbound[0].retain) == (1, False)
    assert (loaded.outbound[1].qos, loaded.outbound[1].retain) == (0, True)
    router = Router(loaded.inbound, "plant.unrouted")
    r = router.route("sensors/dev-7/telemetry")
    assert (r.kafka_topic, r.key) == ("bayou.telemetry", b"dev-7")
    r = router.route("sites/berlin/line-2/door")
    assert (r.kafka_topic, r.key) == ("plant.events", b"berlin")
    r = router.route("elsewhere/x")
    assert (r.kafka_topic, r.key) == ("plant.unrouted", b"elsewhere/x")


def test_yaml_file_gives_the_same_rules(tmp_path: Path) -> None:
    from_toml = load_routes_file(write(tmp_path, VALID_TOML))
    from_yaml = load_routes_file(write(tmp_path, VALID_YAML, "routes.yaml"))
    assert from_yaml == from_toml


def test_empty_file_has_no_rules(tmp_path: Path) -> None:
    assert load_routes_file(write(tmp_path, "")) == RoutesFile([], [], None)
    assert load_routes_file(write(tmp_path, "", "routes.yml")) == RoutesFile([], [], None)


# errors: file + rule + field ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule_label", "field", "detail"),
    [
        (
            rule(
                name="telemetry", mqtt="sensors/{device}/telemetry", kafka_topic="t", key="{site}"
            ),
            "inbound rule 'telemetry'",
            "key",
            "uses ['site'], but 'mqtt' only names ['device']",
        ),
        (
            rule(name="spaces", mqtt="a/b", kafka_topic="no spaces"),
            "inbound rule 'spaces'",
            "kafka_topic",
            "not a valid Kafka topic name: 'no spaces'",
        ),
        (
            rule(name="hash", mqtt="a/#/b", kafka_topic="t"),
            "inbound rule 'hash'",
            "mqtt",
            "'#' must be a whole last level",
        ),
        (
            rule(name="twice", mqtt="a/{x}/{x}", kafka_topic="t"),
            "inbound rule 'twice'",
            "mqtt",
            "names ['x'] more than once",
        ),
        (
            rule(name="ok", mqtt="a", kafka_topic="t") + rule(mqtt="b", kafka_topic="t"),
            "inbound rule #2",
            "name",
            "is required",
        ),
        (
            rule(name="empty-key", mqtt="a/{d}", kafka_topic="t", key="{}"),
            "inbound rule 'empty-key'",
            "key",
            "has no name",
        ),
        (
            rule("outbound", name="cmd", kafka_topic="c", mqtt="d/{key}", qos=3),
            "outbound rule 'cmd'",
            "qos",
            "less than or equal to 2, got 3",
        ),
        (
            rule("outbound", name="cmd", kafka_topic="c", mqtt="devices/+/commands"),
            "outbound rule 'cmd'",
            "mqtt",
            "wildcards are not allowed",
        ),
        (
            rule("outbound", name="cmd", kafka_topic="c", mqtt="devices/{device}/commands"),
            "outbound rule 'cmd'",
            "mqtt",
            "uses ['device'], but the rule has no 'key' pattern",
        ),
        (
            rule("outbound", name="cmd", kafka_topic="c", key="{site}", mqtt="s/{device}"),
            "outbound rule 'cmd'",
            "mqtt",
            "uses ['device'], but 'key' only names ['site']",
        ),
        (
            rule("outbound", name="cmd", kafka_topic="c", key="{key}/x", mqtt="s/{key}"),
            "outbound rule 'cmd'",
            "key",
            "['key'] is reserved",
        ),
        (
            rule("outbound", name="cmd", mqtt="s/{key}"),
            "outbound rule 'cmd'",
            "kafka_topic",
            "is required",
        ),
    ],
)
def test_error_names_file_rule_and_field(
    tmp_path: Path, text: str, rule_label: str, field: str, detail: str
) -> None:
    message = load_error(tmp_path, text)
    assert f"{rule_label}: field '{field}': " in message
    assert detail in message


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    text = "colour = 1\n" + rule(name="a", mqtt="a", kafka_topic="t", qos=1)
    message = load_error(tmp_path, text)
    assert "unknown top-level key 'colour' (allowed: default_topic, inbound, outbound)" in message
    assert (
        "inbound rule 'a': field 'qos': unknown field (allowed: name, mqtt, kafka_topic, key)"
        in message
    )


def test_duplicate_rule_names_are_errors_across_sections(tmp_path: Path) -> None:
    text = (
        rule(name="a", mqtt="a", kafka_topic="t")
        + rule(name="a", mqtt="b", kafka_topic="t")
        + rule("outbound", name="a", kafka_topic="c", mqtt="x/{key}")
    )
    message = load_error(tmp_path, text)
    assert "inbound rule 'a': field 'name': 'a' is already the name of inbound rule #1" in message
    assert "outbound rule 'a': field 'name': 'a' is already the name of inbound rule #1" in message


def test_every_problem_is_reported_in_one_line(tmp_path: Path) -> None:
    text = (
        'default_topic = "bad topic"\n'
        + rule(name="a", mqtt="a", kafka_topic="no spaces")
        + rule("outbound", name="b", kafka_topic="c", mqtt="#")
    )
    message = load_error(tmp_path, text)
    assert "field 'default_topic': not a valid Kafka topic name: 'bad topic'" in message
    assert "inbound rule 'a': field 'kafka_topic'" in message
    assert "outbound rule 'b': field 'mqtt'" in message
    assert message.count("; ") == 2


def test_section_that_is_not_a_list_of_tables(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'inbound = "sensors/#"\n')
    assert "'inbound' must be an array of tables ([[inbound]]), not a string" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(RoutesFileError, match=f"^{re.escape(str(path))}: no such file$"):
        load_routes_file(path)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    assert "not valid TOML: " in load_error(tmp_path, "[[inbound]]\nname = \n")
    message = load_error(tmp_path, "inbound: [a\n  b: c", "routes.yaml")
    assert "not valid YAML: " in message
    assert "(at line 2, column" in message


def test_unknown_file_type_is_an_error(tmp_path: Path) -> None:
    assert "unknown file type '.json'" in load_error(tmp_path, "{}", "routes.json")


def test_unquoted_yaml_template_gets_a_hint(tmp_path: Path) -> None:
    text = "inbound:\n  - name: t\n    mqtt: s/{device}\n    kafka_topic: t\n    key: {device}\n"
    message = load_error(tmp_path, text, "routes.yaml")
    assert "inbound rule 't': field 'key': Input should be a valid string" in message
    assert 'quote templates: "{device}"' in message


# egress derivation --------------------------------------------------------------------------


def egress(**fields: object) -> EgressRule:
    return EgressRule.model_validate(fields)


def test_egress_derives_topic_from_key_and_kafka_topic() -> None:
    router = EgressRouter(
        [
            egress(name="cmd", kafka_topic="erp.commands", mqtt="devices/{key}/commands", qos=1),
            egress(name="all", kafka_topic="erp.broadcast", mqtt="kafka/{topic}", retain=True),
        ]
    )
    out = router.route("erp.commands", b"dev-7")
    assert out is not None
    assert (out.mqtt_topic, out.qos, out.retain, out.rule) == (
        "devices/dev-7/commands",
        1,
        False,
        "cmd",
    )
    out = router.route("erp.broadcast", None)
    assert out is not None
    assert (out.mqtt_topic, out.qos, out.retain) == ("kafka/erp.broadcast", 0, True)
    assert router.route("other.topic", b"dev-7") is None
    assert router.kafka_topics() == ["erp.commands", "erp.broadcast"]


def test_egress_key_pattern_names_parts_of_the_key_and_first_match_wins() -> None:
    router = EgressRouter(
        [
            egress(name="site", kafka_topic="c", key="{site}/{device}", mqtt="s/{site}/d/{device}"),
            egress(name="device", kafka_topic="c", mqtt="d/{key}"),
            egress(name="keyless", kafka_topic="c", mqtt="broadcast"),
        ]
    )

    def topic(key: bytes | None) -> str | None:
        out = router.route("c", key)
        return out.mqtt_topic if out else None

    assert topic(b"berlin/dev-7") == "s/berlin/d/dev-7"
    assert topic(b"dev-7") == "d/dev-7"  # no '/': the site rule does not match
    assert topic(None) == "broadcast"  # rules that need the key skip keyless records
    assert topic(b"\xff\xfe") == "broadcast"  # a key that is not UTF-8 is no key
    assert topic(b"dev+7") is None  # the matching rule makes no valid MQTT topic name


def test_egress_router_without_rules_derives_nothing() -> None:
    router = EgressRouter([])
    assert router.route("bayou.outbound", b"k") is None
    assert router.kafka_topics() == []


# settings --------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in list(os.environ):
        if var.startswith("BAYOU_"):
            monkeypatch.delenv(var)
    return monkeypatch


def test_settings_use_the_routes_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BAYOU_ROUTES_FILE", str(write(tmp_path, VALID_TOML)))
    s = load_settings()
    inbound, egress_rules, default = s.route_rules()
    assert [r.name for r in inbound] == ["telemetry", "site-events"]
    assert [r.name for r in egress_rules] == ["commands", "site-broadcast"]
    assert default == "plant.unrouted"
    topics = s.all_topics()
    assert len(topics) == len(set(topics))
    for t in ("plant.unrouted", "bayou.telemetry", "plant.events", "erp.commands", "erp.broadcast"):
        assert t in topics
    assert "bayou.messages" not in topics
    cfg = s.ingress_config("127.0.0.1:9092")
    assert (cfg.routes, cfg.egress_routes, cfg.default_topic) == (
        inbound,
        egress_rules,
        "plant.unrouted",
    )


def test_settings_without_a_routes_file_use_the_demo_routes(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().route_rules() == (DEMO_ROUTES, [], "bayou.messages")


def test_bad_routes_file_is_a_settings_error(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, rule(name="t", mqtt="s/{device}", kafka_topic="t", key="{site}"))
    clean_env.setenv("BAYOU_ROUTES_FILE", str(path))
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"BAYOU_ROUTES_FILE={path}: inbound rule 't': field 'key': ")


def test_missing_routes_file_is_a_settings_error(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("BAYOU_ROUTES_FILE", str(tmp_path / "gone.toml"))
    with pytest.raises(SettingsError, match=re.escape("gone.toml: no such file")):
        load_settings()


def test_default_topic_set_twice_must_agree(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BAYOU_ROUTES_FILE", str(write(tmp_path, 'default_topic = "a"\n')))
    clean_env.setenv("BAYOU_DEFAULT_TOPIC", "a")
    assert load_settings().route_rules().default_topic == "a"
    clean_env.setenv("BAYOU_DEFAULT_TOPIC", "b")
    with pytest.raises(SettingsError, match="BAYOU_DEFAULT_TOPIC='b' and default_topic='a'"):
        load_settings()


def test_ingress_command_reports_a_bad_routes_file_before_touching_kafka(tmp_path: Path) -> None:
    path = write(tmp_path, rule(name="telemetry", mqtt="s/{device}/t", kafka_topic="t", key="{x}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAYOU_")}
    env.update(BAYOU_KAFKA_BOOTSTRAP="127.0.0.1:1", BAYOU_ROUTES_FILE=str(path))
    proc = subprocess.run(
        [sys.executable, "-m", "bayou.cli", "ingress"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"bayou: BAYOU_ROUTES_FILE={path}: inbound rule 'telemetry': ")
    assert "field 'key': uses ['x']" in lines[0]


def test_examples_in_docs_load(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "routing.md").read_text()
    blocks = re.findall(r"```(toml|yaml)\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) >= 6
    for i, (lang, text) in enumerate(blocks):
        load_routes_file(write(tmp_path, text, f"example-{i}.{lang}"))
