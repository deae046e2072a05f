"""Settings: bad values are reported naming the environment variable."""

import pytest

from bayou.settings import SettingsError, load_settings


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAYOU_MQTT_PORT", "not-a-port")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "BAYOU_MQTT_PORT" in str(err.value)
    assert "not-a-port" in str(err.value)


def test_defaults_are_the_documented_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BAYOU_MQTT_PORT", "BAYOU_KAFKA_BOOTSTRAP", "BAYOU_DEMO_THRESHOLD"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert (s.mqtt_host, s.mqtt_port, s.kafka_bootstrap) == ("127.0.0.1", 1883, None)
    assert s.demo_threshold == 30.0
    assert {"bayou.messages", "bayou.outbound", "bayou.deadletter", "bayou.telemetry"} <= set(
        s.all_topics()
    )
