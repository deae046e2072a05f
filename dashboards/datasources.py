"""The two Grafana data sources every panel reads, by the uids provisioning gives them."""

from __future__ import annotations

from typing import Final

from grafana_foundation_sdk.models.dashboard import DataSourceRef

PROMETHEUS_UID: Final = "bayou-prometheus"
PROMETHEUS_TYPE: Final = "prometheus"
MQTT_UID: Final = "bayou-mqtt"
MQTT_TYPE: Final = "grafana-mqtt-datasource"
"""The Grafana MQTT data source plugin's id; 1.1.0 or later subscribes to ``+``/``#`` filters."""


def prometheus() -> DataSourceRef:
    """The Prometheus that scrapes every Bayou process."""
    return DataSourceRef(type_val=PROMETHEUS_TYPE, uid=PROMETHEUS_UID)


def mqtt() -> DataSourceRef:
    """Bayou's own MQTT listener, as the Grafana MQTT data source connects to it."""
    return DataSourceRef(type_val=MQTT_TYPE, uid=MQTT_UID)
